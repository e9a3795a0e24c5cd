"""Hostile input through the real pipeline: real PostgreSQL, the real pool and batcher.

* hypothesis over every payload kind (random JSON, wrong types, missing fields, huge
  strings, NUL bytes, lone surrogates, invalid UTF-8 bytes, deep metadata, inverted
  time ranges): ``Pipeline.run`` never raises; every rejection is in the ledger and the
  events with its field and reason; accepted input round-trips (stored text equals the
  cleaned input: NULs stripped, lone surrogates and invalid bytes become U+FFFD);
* a 10 MB body; malformed VTT/SRT served over ``content_url``;
* ``content_url`` SSRF: loopback, private, link-local and metadata addresses refused,
  also through redirects and DNS names; size cap and timeout enforced;
* secrets: a known API key and message body never reach any log output;
* tenancy: a job for workspace A never writes or references workspace B's rows, and
  the database refuses a chunk that points at another workspace's transcript.

The pipeline runs on an event loop in a thread of its own (hypothesis drives plain
functions), on the session's PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.acceptance.conftest import expected_chunks
from tests.support.harness import communication, make_settings, media, transcript
from tests.support.openai_server import OpenAIServer
from worker.core.field_checks import clean_text
from worker.core.log import configure_logging
from worker.core.payloads import PayloadError, parse_payload
from worker.db import store
from worker.ingest import fetch as fetch_module
from worker.ingest.delivery import Delivery
from worker.queue.runtime import Runtime
from worker.text.chunking import Chunk

pytestmark = pytest.mark.slow


class LoopThread:
    """An event loop in a daemon thread; ``run(coro)`` blocks for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 120) -> Any:
        fut: Future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# --- a local content server ----------------------------------------------------------

BODIES: dict[str, tuple[int, bytes, dict[str, str]]] = {
    "/ok.vtt": (200, b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n<v Ann>hello there\n", {}),
    "/bad.vtt": (
        200,
        b"WEBVTT\n\n00:00:09.000 --> 00:00:02.000\nbackwards\n\nzz --> \n\x00\xff",
        {},
    ),
    "/bad.srt": (200, b"1\n00:00:01,000 --> garbage\nhi\n\n2\n\n-->\n\n", {}),
    "/huge": (200, b"x" * 300_000, {}),
    "/to-loopback": (302, b"", {"Location": "http://127.0.0.1:9/secret"}),
    "/to-localhost": (302, b"", {"Location": "http://localhost:9/secret"}),
    "/to-metadata": (302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"}),
}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"s")
                    self.wfile.flush()
                    time.sleep(0.01)
            except OSError:
                pass
            return
        status, body, headers = BODIES.get(self.path, (404, b"nope", {}))
        self.send_response(status)
        for k, v in {"Content-Type": "text/plain", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def content_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- the pipeline under test ---------------------------------------------------------


class Env:
    def __init__(self, dsn: str, **overrides: Any) -> None:
        self.dsn = dsn
        self.loop = LoopThread()
        base = {
            "embedding_provider": "local",
            "fetch_timeout_s": 2.0,
            "fetch_max_bytes": 200_000,
            "job_max_tries": 1,
            **overrides,
        }
        self.settings = make_settings(dsn, "redis://127.0.0.1:1/0", "http://127.0.0.1:1", **base)
        self.rt: Runtime = self.loop.run(Runtime.open(self.settings))
        self.ws: uuid.UUID = self.loop.run(self._workspace())

    async def _workspace(self) -> uuid.UUID:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval(
                "INSERT INTO core.workspaces (name) VALUES ('hostile') RETURNING id"
            )
        finally:
            await conn.close()

    def run(self, raw: Any) -> dict[str, Any]:
        delivery = Delivery(arq_job_id=f"h-{uuid.uuid4().hex}")
        return self.loop.run(self.rt.pipeline.run(raw, delivery))

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def go() -> list[asyncpg.Record]:
            async with self.rt.pool.acquire() as conn:
                return await conn.fetch(sql, *args)

        return self.loop.run(go())

    def close(self) -> None:
        self.loop.run(self.rt.close())
        self.loop.close()


@pytest.fixture(scope="module")
def env(migrated_dsn: str) -> Iterator[Env]:
    e = Env(migrated_dsn, fetch_allow_private=True)
    try:
        yield e
    finally:
        e.close()


def assert_recorded(env: Env, result: dict[str, Any]) -> None:
    """Every outcome is in the ledger; a rejection has a field, a reason and an event."""
    assert result["status"] in ("done", "failed", "noop", "skipped"), result
    jid = uuid.UUID(result["job_id"])
    [row] = env.fetch(
        "SELECT status::text, last_error, error_field FROM ops.ingestion_jobs WHERE id = $1", jid
    )
    if result["status"] == "failed":
        assert row["status"] == "failed" and row["last_error"] and row["error_field"], dict(row)
        assert result.get("field") and result.get("reason")
        events = [
            r[0]
            for r in env.fetch(
                "SELECT event_type FROM ops.events WHERE aggregate_id = $1 ORDER BY version", jid
            )
        ]
        assert events[-1] == "job.failed", events
    else:
        assert row["status"] in ("done", "skipped"), dict(row)


def assert_round_trip(env: Env, raw: Any) -> None:
    """Stored text equals the cleaned input, chunk for chunk."""
    model = parse_payload(raw)
    want: list[Chunk] = expected_chunks(model, env.settings)
    if model.kind == "communication":
        [row] = env.fetch(
            "SELECT body, subject FROM comms.communications WHERE workspace_id=$1 "
            "AND source=$2 AND external_id=$3",
            model.workspace_id,
            model.source,
            model.external_id,
        )
        assert row["body"] == model.body and row["subject"] == model.subject
        return
    src, chunks, fk = (
        ("meetings.transcripts", "meetings.transcript_chunks", "transcript_id")
        if model.kind == "transcript"
        else ("media.assets", "media.media_chunks", "asset_id")
    )
    rows = env.fetch(
        f"SELECT c.content FROM {chunks} c JOIN {src} s ON s.id = c.{fk} WHERE s.workspace_id=$1 "
        "AND s.source=$2 AND s.external_id=$3 ORDER BY c.chunk_index",
        model.workspace_id,
        model.source,
        model.external_id,
    )
    assert [r[0] for r in rows] == [c.text for c in want]


# --- strategies ----------------------------------------------------------------------

NASTY = st.sampled_from(
    [
        "\x00",
        "\ud800",
        "\udfff",
        "\ufeff",
        "\u202e",
        "é",
        "\n",
        "\x1b[31m",
        "😀",
        "\\u0000",
        "<script>",
        "'; DROP TABLE x; --",
    ]
)
TEXT = st.lists(st.one_of(st.text(max_size=40), NASTY), max_size=8).map("".join)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
    max_leaves=12,
)


def deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"d": value}
    return value


@st.composite
def hostile_payloads(draw: st.DrawFn, ws: str) -> Any:
    wsid = uuid.UUID(ws)
    ext = "h-" + uuid.uuid4().hex[:12]
    kind = draw(st.sampled_from(["communication", "transcript", "media"]))
    a, b = draw(st.integers(-5000, 50_000)), draw(st.integers(-5000, 50_000))
    text = draw(TEXT)
    if kind == "communication":
        base = communication(wsid, ext, text or "x", subject=draw(TEXT))
    elif kind == "transcript":
        base = transcript(wsid, ext, [("Ann", a, b, text or "x"), ("Bo", 0, 10, draw(TEXT))])
    else:
        base = media(wsid, ext, [(a, b, text or "x")])
    mutation = draw(
        st.sampled_from(
            [
                "none",
                "drop",
                "retype",
                "extra",
                "meta",
                "deepmeta",
                "huge",
                "inverted_meeting",
                "raw",
            ]
        )
    )
    if mutation == "drop":
        base.pop(draw(st.sampled_from(sorted(base))), None)
    elif mutation == "retype":
        base[draw(st.sampled_from(sorted(base)))] = draw(JSON)
    elif mutation == "extra":
        base[draw(TEXT) or "x"] = draw(JSON)
    elif mutation == "meta":
        base["metadata"] = draw(st.dictionaries(TEXT, JSON, max_size=5))
    elif mutation == "deepmeta":
        base["metadata"] = deep(draw(st.sampled_from([3, 15, 17, 200, 5000])))
    elif mutation == "huge":
        field = "body" if kind == "communication" else "segments"
        big = draw(st.sampled_from(["a", "\x00", "é "])) * draw(st.sampled_from([70_000, 300_000]))
        base[field] = big if field == "body" else [{"start_ms": 0, "end_ms": 1, "text": big}]
    elif mutation == "inverted_meeting":
        base["meeting"] = {"starts_at": "2026-01-02T00:00:00Z", "ends_at": "2026-01-01T00:00:00Z"}
    if mutation == "raw" or draw(st.booleans()):
        # As bytes off Redis: JSON escapes for NUL/lone surrogates, maybe invalid UTF-8.
        data = json.dumps(base).encode()
        if draw(st.booleans()):
            data = data.replace(b"x", b"\xff\xfe", 1)
        if mutation == "raw":
            data = draw(
                st.sampled_from(
                    [
                        data,
                        data[: len(data) // 2],
                        b"[]",
                        b"null",
                        b"\xff",
                        b'{"kind": "media"}',
                        b"{" * 5000,
                    ]
                )
            )
        return data
    return base


@given(data=st.data())
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
def test_hostile_payloads_never_crash_and_are_recorded(env: Env, data: st.DataObject) -> None:
    raw = data.draw(hostile_payloads(str(env.ws)))
    result = env.run(raw)
    assert_recorded(env, result)
    if result["status"] == "done":
        assert_round_trip(env, raw)


def test_invalid_payload_with_nul_and_surrogates_is_recorded(env: Env) -> None:
    """A rejected payload is stored for diagnosis even when it holds what PostgreSQL
    text/jsonb cannot: NUL, lone surrogates, NaN, absurd nesting."""
    raw = {
        "kind": "communication",
        "workspace_id": str(env.ws),
        "source": "g\x00\ud800",
        "external_id": "e\x00",
        "channel": "pigeon\x00",
        "body": "b\x00",
        "metadata": deep(300),
        "score": float("nan"),
    }
    result = env.run(raw)
    assert result["status"] == "failed"
    assert_recorded(env, result)
    [row] = env.fetch(
        "SELECT source, payload FROM ops.ingestion_jobs WHERE id = $1", uuid.UUID(result["job_id"])
    )
    assert row["source"] == "g\ufffd" and "\\u0000" not in row["payload"]


def test_cleaning_is_what_is_stored(env: Env) -> None:
    """NULs stripped, lone surrogates and invalid UTF-8 replaced, in every string."""
    body = "a\x00b \ud800 c"
    raw = json.dumps(communication(env.ws, "clean-1", body, subject="s\x00\udfff")).encode()
    raw = raw.replace(b"a\\u0000b", b"a\\u0000b\xff")  # plus an invalid UTF-8 byte
    result = env.run(raw)
    assert result["status"] == "done", result
    [row] = env.fetch(
        "SELECT body, subject FROM comms.communications WHERE workspace_id=$1 "
        "AND external_id='clean-1'",
        env.ws,
    )
    assert row["body"] == "ab\ufffd \ufffd c" and row["subject"] == "s\ufffd"
    assert row["body"] == clean_text(parse_payload(raw).body or "")


def test_ten_megabyte_body(env: Env) -> None:
    body = ("The quarterly plan moves billing to usage tiers. " * 210_000)[:10_000_000]
    payload = communication(env.ws, "big-1", body)
    started = time.monotonic()
    result = env.run(payload)
    assert result["status"] == "done", result
    [row] = env.fetch(
        "SELECT length(body), chunk_count, embedding IS NOT NULL FROM "
        "comms.communications WHERE workspace_id=$1 AND external_id='big-1'",
        env.ws,
    )
    assert row[0] == len(body) and row[1] > 1000 and row[2]
    assert time.monotonic() - started < 120
    # over the inline cap: refused with the field, not stored
    too_big = communication(env.ws, "big-2", "x" * 20_000_001)
    result = env.run(too_big)
    assert result["status"] == "failed" and result["field"] == "body"
    assert_recorded(env, result)


@pytest.mark.parametrize("path", ["/ok.vtt", "/bad.vtt", "/bad.srt", "/huge", "/slow", "/gone"])
def test_content_url_transcripts(env: Env, content_server: str, path: str) -> None:
    payload = transcript(env.ws, f"url{path}", [])
    payload.pop("segments")
    payload["content_url"] = content_server + path
    result = env.run(payload)
    assert_recorded(env, result)
    if path == "/ok.vtt":
        assert result["status"] == "done"
        rows = env.fetch(
            "SELECT c.content, c.speaker FROM meetings.transcript_chunks c JOIN "
            "meetings.transcripts t ON t.id = c.transcript_id WHERE t.workspace_id=$1 "
            "AND t.external_id=$2",
            env.ws,
            f"url{path}",
        )
        assert rows and "hello there" in rows[0]["content"]
    elif path in ("/huge", "/slow", "/gone"):
        assert result["status"] == "failed" and result["field"] == "content_url", result
        reason = {"/huge": "exceeds", "/slow": "timed out", "/gone": "HTTP 404"}[path]
        assert reason in result["reason"], result


@pytest.fixture(scope="module")
def strict_env(migrated_dsn: str) -> Iterator[Env]:
    e = Env(migrated_dsn, fetch_allow_private=False)
    try:
        yield e
    finally:
        e.close()


PUBLIC_IP = "93.184.216.34"  # any global address; the transport below sends it to loopback


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch, content_server: str) -> None:
    """`public.test` resolves to a global address whose traffic lands on the local content
    server (so its redirects can be tried with private addresses refused); `internal.test`
    resolves to a private one. Real names (`localhost`) use the real resolver."""
    port = int(content_server.rsplit(":", 1)[1])
    real_resolve = fetch_module.resolve

    async def resolve(host: str, p: int) -> list[str]:
        return {
            "public.test": [PUBLIC_IP],
            "internal.test": ["10.9.8.7"],
            "mixed.test": [PUBLIC_IP, "127.0.0.1"],
        }.get(host) or await real_resolve(host, p)

    class ToLoopback(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            assert request.url.host == PUBLIC_IP, f"a request reached {request.url.host}"
            request.url = request.url.copy_with(host="127.0.0.1", port=port)
            return await super().handle_async_request(request)

    real_client = httpx.AsyncClient

    def client(**kw: Any) -> httpx.AsyncClient:
        return real_client(**{**kw, "transport": ToLoopback()})

    monkeypatch.setattr(fetch_module, "resolve", resolve)
    monkeypatch.setattr(fetch_module.httpx, "AsyncClient", client)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:{port}/ok.vtt", "loopback"),
        ("http://localhost:{port}/ok.vtt", "loopback"),
        ("http://[::1]:{port}/ok.vtt", "loopback"),
        ("http://10.0.0.8/x", "private"),
        ("http://192.168.1.1/x", "private"),
        ("http://169.254.1.1/x", "link-local"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::ffff:127.0.0.1]/x", "loopback"),
        ("http://internal.test/x", "private"),
        ("http://mixed.test/x", "loopback"),
        ("http://public.test/to-loopback", "loopback"),
        ("http://public.test/to-localhost", "loopback"),
        ("http://public.test/to-metadata", "metadata"),
    ],
)
def test_content_url_ssrf_refused(
    strict_env: Env, fake_dns: None, content_server: str, url: str, why: str
) -> None:
    port = content_server.rsplit(":", 1)[1]
    payload = media(strict_env.ws, f"ssrf-{uuid.uuid4().hex[:8]}", [(0, 1, "x")])
    payload.pop("segments")
    payload["content_url"] = url.format(port=port)
    result = strict_env.run(payload)
    assert result["status"] == "failed" and result["field"] == "content_url", result
    assert "refused" in result["reason"] and why in result["reason"], result
    assert_recorded(strict_env, result)


def test_content_url_public_host_is_fetched(strict_env: Env, fake_dns: None) -> None:
    """The control: the same path through a public address is fetched and stored."""
    payload = transcript(strict_env.ws, "public-ok", [])
    payload.pop("segments")
    payload["content_url"] = "http://public.test/ok.vtt"
    assert strict_env.run(payload)["status"] == "done"


def test_no_secrets_in_logs(
    migrated_dsn: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A known API key and message body, a failing API, a retried job and an invalid
    one: neither string appears in any log output (structlog, stdlib, arq)."""
    key = "sk-SECRETKEY-" + uuid.uuid4().hex
    body = "BODY-SECRET-" + uuid.uuid4().hex
    with OpenAIServer() as api:
        s = make_settings(
            migrated_dsn,
            "redis://127.0.0.1:1/0",
            api.base_url,
            openai_api_key=key,
            embed_max_retries=1,
            job_max_tries=2,
            log_level="DEBUG",
        )
        root = logging.getLogger()
        saved = (root.handlers[:], root.level)
        configure_logging(s)
        root.setLevel(logging.DEBUG)
        loop = LoopThread()
        rt: Runtime = loop.run(Runtime.open(s))
        try:
            ws = loop.run(_workspace(migrated_dsn))
            api.push_faults(
                {"status": 500},
                {"status": 401},
                {"malformed": True},
                {"status": 400},
                {"status": 500},
                {"status": 500},
            )
            runs = [
                communication(ws, "s1", body),  # API faults: retried, then failed
                {"body": body, **communication(ws, "s2", body, channel="pigeon")},  # invalid
                {"body": body, "kind": "communication"},  # invalid, no workspace
                communication(ws, "s3", body + " again"),
            ]
            outcomes = []
            for raw in runs:
                try:
                    outcomes.append(loop.run(rt.pipeline.run(raw, Delivery(arq_job_id="s"))))
                except Exception as exc:  # RetryLater is a normal outcome here
                    outcomes.append({"status": type(exc).__name__})
                    logging.getLogger("test").exception("job raised")
        finally:
            loop.run(rt.close())
            loop.close()
            # configure_logging bound both loggers to this test's captured stderr
            structlog.reset_defaults()
            root.handlers[:], root.level = saved[0], saved[1]
        assert {o["status"] for o in outcomes} & {"failed", "RetryLater"}, outcomes
    captured = capfd.readouterr()
    text = captured.out + captured.err + caplog.text
    assert text.strip(), "nothing was logged: the scan would prove nothing"
    assert key not in text and key[3:] not in text, "API key in the logs"
    assert body not in text, "message body in the logs"
    # arq's job-start line: the filter keeps the payload out
    record = logging.LogRecord(
        "arq.worker",
        logging.INFO,
        __file__,
        1,
        "%6.2fs → %s(%s)%s",
        (0.1, "id:ingest", f"{{'body': '{body}'}}", ""),
        None,
    )
    for f in logging.getLogger("arq.worker").filters:
        f.filter(record)
    assert body not in record.getMessage()


async def _workspace(dsn: str, name: str = "t") -> uuid.UUID:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "INSERT INTO core.workspaces (name) VALUES ($1) RETURNING id", name
        )
    finally:
        await conn.close()


def test_tenancy(env: Env) -> None:
    """A job for A never touches B: same addresses give A its own contacts; the database
    refuses a chunk of A that points at B's transcript."""
    a = env.loop.run(_workspace(env.dsn, "A"))
    b = env.loop.run(_workspace(env.dsn, "B"))
    turns = [("Ann", 0, 1000, "shared people, separate tenants")]
    assert env.run(transcript(b, "tb", turns))["status"] == "done"
    b_contacts = {
        r[0]: r[1]
        for r in env.fetch("SELECT primary_address, id FROM core.contacts WHERE workspace_id=$1", b)
    }
    assert env.run(transcript(a, "ta", turns))["status"] == "done"
    a_contacts = {
        r[0]: r[1]
        for r in env.fetch("SELECT primary_address, id FROM core.contacts WHERE workspace_id=$1", a)
    }
    assert set(a_contacts) == set(b_contacts) == {"ann@example.com"}
    assert not set(a_contacts.values()) & set(b_contacts.values())
    refs = env.fetch(
        "SELECT p.contact_id FROM meetings.participants p JOIN meetings.meetings m "
        "ON m.id = p.meeting_id WHERE m.workspace_id=$1",
        a,
    )
    assert {r[0] for r in refs} == set(a_contacts.values())

    [tb] = env.fetch("SELECT id, meeting_id FROM meetings.transcripts WHERE workspace_id=$1", b)
    chunk = Chunk(
        index=99,
        text="intruder",
        token_count=1,
        content_hash="h",
        start_ms=0,
        end_ms=1,
        speaker=None,
        speakers=(),
    )
    vec = np.zeros(env.settings.embedding_dimensions, dtype=np.float32)
    vec[0] = 1

    async def attach() -> None:
        async with env.rt.pool.acquire() as conn:
            await store.copy_chunks(
                conn,
                "transcript",
                [
                    (
                        a,
                        tb["id"],
                        tb["meeting_id"],
                        chunk.index,
                        None,
                        [],
                        0,
                        1,
                        chunk.text,
                        "h",
                        1,
                        vec,
                        "m",
                    )
                ],
            )

    with pytest.raises(asyncpg.ForeignKeyViolationError):
        env.loop.run(attach())
    assert not env.fetch("SELECT 1 FROM meetings.transcript_chunks WHERE content='intruder'")


def test_payload_errors_name_the_field() -> None:
    """The parse layer, which every rejection above goes through, never raises anything
    but PayloadError (a sanity check for the property test's oracle)."""
    for raw in (b"\xff", b"{" * 10_000, "[]", {"kind": "media", "asset": {"kind": "x"}}):
        with pytest.raises(PayloadError) as info:
            parse_payload(raw)
        assert info.value.field and info.value.reason
