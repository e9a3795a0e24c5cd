"""Fetch a payload's ``content_url`` safely: bounded in time and size, SSRF-guarded.

* **Address policy.** The host is resolved with ``getaddrinfo`` and *every* address must
  pass :func:`address_refusal` (one bad record refuses the URL, so an attacker cannot mix
  a public and a private record). Cloud metadata endpoints (169.254.169.254, fd00:ec2::254,
  ...) are refused **always**, even with ``fetch_allow_private``; loopback, private,
  link-local, multicast, reserved, unspecified and other non-global ranges are refused
  unless ``fetch_allow_private``. IPv6 forms that embed an IPv4 address (IPv4-mapped,
  IPv4-compatible, 6to4, Teredo, NAT64) are judged by the embedded address.
* **DNS pinning.** The request goes to the checked IP literal, not the hostname: the URL's
  host is replaced by the IP, the ``Host`` header keeps the original name, and for HTTPS
  the ``sni_hostname`` request extension makes TLS send SNI and verify the certificate for
  the original name. A second, different DNS answer (rebinding) is never used. Refusal
  happens before any connection is opened.
* **Redirects** are followed by hand (at most :data:`MAX_REDIRECTS`), each hop re-checked.
* **Limits.** ``fetch_timeout_s`` bounds the whole operation (DNS, every hop, the body);
  ``fetch_max_bytes`` bounds the decoded body and aborts the stream as soon as exceeded.
* Our own client ignores proxy environment variables (``trust_env=False``): a proxy would
  resolve the name itself and defeat the pinning.
"""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import socket
from collections import deque
from collections.abc import Iterator

import httpx

from worker.core.settings import Settings

MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
#: Instance-metadata services: credentials live there; never reachable through us.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchError(Exception):
    """``content_url`` could not be fetched. ``transient`` errors (timeouts, connection
    failures, 5xx, 429) may succeed on retry; the others (refusals, 4xx, size) will not."""

    def __init__(
        self,
        reason: str,
        *,
        field: str = "content_url",
        transient: bool = False,
        too_large: bool = False,
    ):
        self.field = field
        self.reason = reason
        self.transient = transient
        self.too_large = too_large  # the body is over the byte cap the fetch was given
        super().__init__(f"{field}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.reason, self.field, self.transient, self.too_large))


def _rebuild(reason: str, field: str, transient: bool, too_large: bool = False) -> FetchError:
    return FetchError(reason, field=field, transient=transient, too_large=too_large)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip))
    return None


def address_refusal(address: str | IPAddress, *, allow_private: bool) -> str | None:
    """Why connecting to ``address`` is refused, or ``None`` when it is allowed."""
    try:
        ip: IPAddress = ipaddress.ip_address(str(address).split("%", 1)[0])
    except ValueError:
        return f"refused: not an IP address ({address})"
    original, shown = ip, str(ip)
    if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_ipv4(ip)) is not None:
        ip, shown = v4, f"{v4} via {ip}"  # the IPv6 wrapper is judged by what it carries
    if ip in METADATA_ADDRESSES or original in METADATA_ADDRESSES:
        return f"refused: resolves to a cloud metadata address ({shown})"
    if allow_private:
        return None
    for label, flag in (
        ("an unspecified", ip.is_unspecified),
        ("a loopback", ip.is_loopback),
        ("a link-local", ip.is_link_local),
        ("a multicast", ip.is_multicast),
        ("a reserved", ip.is_reserved),
        ("a private", ip.is_private),
        ("a non-public", not ip.is_global),
    ):
        if flag:
            return f"refused: resolves to {label} address ({shown})"
    return None


async def resolve(host: str, port: int) -> list[str]:
    """All addresses of ``host`` (an IP literal resolves to itself without DNS)."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise FetchError(f"cannot resolve host {host!r} ({exc})", transient=True) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise FetchError(f"cannot resolve host {host!r}", transient=True)
    return addresses


async def _pinned_request(url: httpx.URL, allow_private: bool) -> httpx.Request:
    """A GET for ``url`` aimed at its checked IP, or :class:`FetchError` before connecting."""
    if url.scheme not in ("http", "https") or not url.host:
        raise FetchError("refused: only http(s) URLs with a host can be fetched")
    port = url.port or (443 if url.scheme == "https" else 80)
    host = url.raw_host.decode("ascii")
    addresses = await resolve(host, port)
    for address in addresses:
        if (reason := address_refusal(address, allow_private=allow_private)) is not None:
            raise FetchError(reason)
    host_header = url.netloc.decode("ascii").rsplit("@", 1)[-1]
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return httpx.Request(
        "GET",
        url.copy_with(host=addresses[0]),
        headers={"Host": host_header, "Accept-Encoding": "gzip, deflate", "Accept": "*/*"},
        extensions=extensions,
    )


def _codec(charset: str | None) -> str:
    try:
        codec = codecs.lookup(charset or "utf-8").name
    except LookupError:
        codec = "utf-8"
    return "utf-8-sig" if codec == "utf-8" else codec  # utf-8-sig drops a leading BOM


class FetchedText:
    """A fetched body, kept as the byte pieces it arrived in (never joined unless asked)
    and decoded piece by piece on demand: a large transcript is held once and released
    piece by piece as it is parsed; a document or a raw message is read as bytes."""

    def __init__(
        self,
        parts: deque[bytes],
        nbytes: int,
        media_type: str | None = None,
        charset: str | None = None,
    ) -> None:
        self.parts = parts
        self.nbytes = nbytes
        self.media_type = media_type  # the response's Content-Type, lower-cased, no parameters
        self.codec = _codec(charset)  # the response's charset, else UTF-8

    def _decoder(self) -> codecs.IncrementalDecoder:
        return codecs.getincrementaldecoder(self.codec)(errors="replace")

    def head_bytes(self, size: int) -> bytes:
        """The first ``size`` bytes (at most)."""
        out = bytearray()
        for part in self.parts:
            if len(out) >= size:
                break
            out += part[: size - len(out)]
        return bytes(out)

    def head(self, chars: int) -> str:
        """The first ``chars`` characters (at most)."""
        decoder, out, size = self._decoder(), [], 0
        for part in self.parts:
            if size >= chars:
                break
            text = decoder.decode(part)
            out.append(text)
            size += len(text)
        return "".join(out)[:chars]

    def data(self) -> bytes:
        """The whole body as bytes (consumes the pieces)."""
        data = b"".join(self.parts)
        self.parts.clear()
        return data

    def text(self) -> str:
        """The whole body as one string (consumes the pieces)."""
        return "".join(self._decoded())

    def lines(self) -> Iterator[str]:
        """Lines (without the newline), lazily; each piece is dropped once split."""
        rest = ""
        for text in self._decoded():
            lines = (rest + text).split("\n")
            rest = lines.pop()
            del text
            yield from lines
        if rest:
            yield rest

    def _decoded(self) -> Iterator[str]:
        decoder = self._decoder()
        while self.parts:
            if text := decoder.decode(self.parts.popleft()):
                yield text
        if text := decoder.decode(b"", final=True):
            yield text


async def _read(response: httpx.Response, max_bytes: int) -> FetchedText:
    declared = response.headers.get("content-length")
    plain = not response.headers.get("content-encoding")
    if plain and declared and declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"exceeds {max_bytes} bytes (Content-Length {declared})", too_large=True)
    parts: deque[bytes] = deque()
    total = 0
    async for part in response.aiter_bytes():
        total += len(part)
        if total > max_bytes:
            raise FetchError(f"exceeds {max_bytes} bytes", too_large=True)
        parts.append(part)
    declared_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return FetchedText(parts, total, declared_type or None, response.charset_encoding)


async def _fetch(
    url: str, settings: Settings, client: httpx.AsyncClient, max_bytes: int
) -> FetchedText:
    try:
        current = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise FetchError(f"is not a valid URL ({exc})") from None
    for _ in range(MAX_REDIRECTS + 1):
        request = await _pinned_request(current, settings.fetch_allow_private)
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if response.status_code in _REDIRECTS and "location" in response.headers:
                try:
                    current = current.join(response.headers["location"])
                except (httpx.InvalidURL, ValueError) as exc:
                    raise FetchError(f"invalid redirect location ({exc})") from None
                continue
            if not 200 <= response.status_code < 300:
                transient = response.status_code >= 500 or response.status_code in (408, 429)
                raise FetchError(f"HTTP {response.status_code}", transient=transient)
            return await _read(response, max_bytes)
        finally:
            await response.aclose()
    raise FetchError(f"too many redirects (more than {MAX_REDIRECTS})")


async def fetch_text(
    url: str, settings: Settings, *, client: httpx.AsyncClient | None = None
) -> str:
    """GET ``url`` and return its body as text (charset from the response, else UTF-8;
    undecodable bytes become U+FFFD). Raises :class:`FetchError` and nothing else."""
    return (await fetch_parts(url, settings, client=client)).text()


async def fetch_parts(
    url: str,
    settings: Settings,
    *,
    client: httpx.AsyncClient | None = None,
    max_bytes: int | None = None,
) -> FetchedText:
    """Like :func:`fetch_text`, but the body stays in the pieces it arrived in; at most
    ``max_bytes`` (default ``fetch_max_bytes``) are read."""
    timeout = settings.fetch_timeout_s
    limit = max_bytes if max_bytes is not None else settings.fetch_max_bytes
    try:
        async with asyncio.timeout(timeout):
            if client is not None:
                return await _fetch(url, settings, client, limit)
            async with httpx.AsyncClient(trust_env=False, timeout=timeout) as own:
                return await _fetch(url, settings, own, limit)
    except FetchError:
        raise
    except TimeoutError:
        raise FetchError(f"timed out after {timeout:g}s", transient=True) from None
    except httpx.TimeoutException:
        raise FetchError(f"timed out after {timeout:g}s", transient=True) from None
    except (httpx.HTTPError, OSError) as exc:
        raise FetchError(f"request failed ({type(exc).__name__}: {exc})", transient=True) from None
    except (UnicodeError, ValueError) as exc:
        raise FetchError(f"could not be fetched ({type(exc).__name__}: {exc})") from None
