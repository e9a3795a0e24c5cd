"""fetch_text against a real HTTP server on 127.0.0.1 (no traffic leaves loopback).

Refusal tests use a transport that fails the test if any request reaches it, proving the
SSRF guard decides before a connection is opened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from worker.core.settings import Settings
from worker.ingest.fetch import FetchError, address_refusal, fetch_text


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        path = self.path
        if path == "/hello":
            self._send(200, "héllo wörld".encode())
        elif path == "/latin1":
            self._send(200, "café".encode("latin-1"), "text/plain; charset=iso-8859-1")
        elif path == "/badutf8":
            self._send(200, b"ok \xff\xfe end", "text/plain")
        elif path == "/big-declared":
            self._send(200, b"x" * 5000)
        elif path == "/big-stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(2000):  # up to ~2 MB unless the client hangs up
                    chunk = b"y" * 1024
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.server.sent += len(chunk)  # type: ignore[attr-defined]
                    time.sleep(0.0005)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):  # trickles: every read is quick, the whole is not
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
        elif path == "/missing":
            self._send(404, b"nope")
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/hello")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/to-metadata":
            self.send_response(301)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(500, b"?")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False  # type: ignore[attr-defined]
    httpd.sent = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"fetch_allow_private": True, "fetch_timeout_s": 5.0}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


class _LoopbackOnly(httpx.AsyncHTTPTransport):
    """Records every request; fails if one is aimed at anything but 127.0.0.1."""

    def __init__(self) -> None:
        super().__init__()
        self.hosts: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        assert request.url.host == "127.0.0.1", f"traffic to {request.url.host}"
        return await super().handle_async_request(request)


class _NoTraffic(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"a request was sent to {request.url}")


async def test_happy_path_utf8(server: str) -> None:
    assert await fetch_text(f"{server}/hello", _settings()) == "héllo wörld"


async def test_charset_from_response(server: str) -> None:
    assert await fetch_text(f"{server}/latin1", _settings()) == "café"


async def test_invalid_utf8_is_replaced(server: str) -> None:
    assert await fetch_text(f"{server}/badutf8", _settings()) == "ok \ufffd\ufffd end"


async def test_http_404(server: str) -> None:
    with pytest.raises(FetchError) as info:
        await fetch_text(f"{server}/missing", _settings())
    assert info.value.reason == "HTTP 404"
    assert info.value.field == "content_url"
    assert not info.value.transient


async def test_declared_size_over_cap(server: str) -> None:
    with pytest.raises(FetchError, match="exceeds 1000 bytes"):
        await fetch_text(f"{server}/big-declared", _settings(fetch_max_bytes=1000))


async def test_streamed_size_cap_aborts_early(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        await fetch_text(f"{server}/big-stream", _settings(fetch_max_bytes=64 * 1024))
    assert info.value.reason == "exceeds 65536 bytes"
    assert time.monotonic() - started < 1.0  # the whole body would take > 1 s to send


async def test_overall_timeout_with_trickling_server(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        await fetch_text(f"{server}/slow", _settings(fetch_timeout_s=0.4))
    assert info.value.reason == "timed out after 0.4s"
    assert info.value.transient
    assert time.monotonic() - started < 2.0


async def test_redirect_followed_and_rechecked(server: str) -> None:
    transport = _LoopbackOnly()
    async with httpx.AsyncClient(transport=transport) as client:
        assert await fetch_text(f"{server}/redirect", _settings(), client=client) == "héllo wörld"
    assert transport.hosts == ["127.0.0.1", "127.0.0.1"]


async def test_redirect_loop_is_bounded(server: str) -> None:
    with pytest.raises(FetchError, match="too many redirects"):
        await fetch_text(f"{server}/loop", _settings())


async def test_redirect_to_metadata_refused_even_when_private_allowed(server: str) -> None:
    transport = _LoopbackOnly()
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(FetchError, match="metadata address"):
            await fetch_text(f"{server}/to-metadata", _settings(), client=client)
    assert transport.hosts == ["127.0.0.1"]  # the metadata hop was never sent


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:9/x", "loopback"),
        ("http://localhost:9/x", "loopback"),
        ("http://[::1]:9/x", "loopback"),
        ("http://10.1.2.3/x", "private"),
        ("http://192.168.0.1/x", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::ffff:10.0.0.1]/x", "private"),
        ("http://0.0.0.0/x", "unspecified"),
    ],
)
async def test_default_settings_refuse_before_connecting(url: str, kind: str) -> None:
    settings = Settings(fetch_timeout_s=5.0)
    assert settings.fetch_allow_private is False
    async with httpx.AsyncClient(transport=_NoTraffic()) as client:
        with pytest.raises(FetchError) as info:
            await fetch_text(url, settings, client=client)
    assert info.value.reason.startswith("refused: resolves to")
    assert kind in info.value.reason
    assert not info.value.transient


async def test_default_settings_refuse_real_local_server(server: str) -> None:
    with pytest.raises(FetchError, match=r"refused: resolves to a loopback address \(127.0.0.1\)"):
        await fetch_text(f"{server}/hello", Settings())


async def test_non_http_scheme_refused() -> None:
    with pytest.raises(FetchError, match="only http"):
        await fetch_text("file:///etc/passwd", _settings())


@pytest.mark.parametrize(
    ("address", "allow_private", "refused"),
    [
        ("8.8.8.8", False, None),
        ("2606:4700:4700::1111", False, None),
        ("127.0.0.1", False, "loopback"),
        ("127.0.0.1", True, None),
        ("10.0.0.1", False, "private"),
        ("172.16.5.4", False, "private"),
        ("100.64.0.1", False, "non-public"),
        ("169.254.1.1", False, "link-local"),
        ("224.0.0.1", False, "multicast"),
        ("240.0.0.1", False, "reserved"),
        ("::", False, "unspecified"),
        ("fe80::1%eth0", False, "link-local"),
        ("fc00::1", False, "private"),
        ("::ffff:127.0.0.1", False, "loopback"),
        ("::ffff:8.8.8.8", False, None),
        ("2002:0a00:0001::", False, "private"),  # 6to4 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", True, "metadata"),  # NAT64 of 169.254.169.254
        ("169.254.169.254", True, "metadata"),
        ("::ffff:169.254.169.254", True, "metadata"),
        ("fd00:ec2::254", True, "metadata"),
        ("not-an-ip", True, "not an IP"),
    ],
)
def test_address_refusal(address: str, allow_private: bool, refused: str | None) -> None:
    reason = address_refusal(address, allow_private=allow_private)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason and reason.startswith("refused: ")
