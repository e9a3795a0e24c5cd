"""Hostile documents and mail through a real worker process (issue 18, item 5).

One run of one ``arq`` worker process (``tests.support.worker_proc``) against a
PostgreSQL, a Redis and the OpenAI-compatible server of this module's own, with its
parsing children (pebble, forkserver, PARSE_TIMEOUT_S, PARSE_MEMORY_MB) as configured by
default. Sent together:

* a zip bomb in a DOCX attachment (next to an encrypted, a cut and a fine PDF) and as a
  media document;
* a PDF of 10,000 pages (read up to DOCUMENT_MAX_PAGES, 1000: partial);
* an encrypted PDF; a PDF cut at half and at 90 %;
* a 200 MB document by ``content_url``, generated lazily by a local server, chunked and
  with a Content-Length: skipped at DOCUMENT_MAX_BYTES without being downloaded;
* MIME nested 50 and 20,000 levels deep (cut at MIME_MAX_DEPTH: partial, stored);
* a charset that lies (utf-8 declared, windows-1252 bytes) and an unknown one;
* a ~20 MB ``body_html`` of nested tags (over PARSE_INLINE_HTML_CHARS: the parsing child);
* normal items, which must all be ``done`` with the right rows.

Checked: every item's ledger status and reason / warning events (with no content in any
event), nothing retried, the worker process never exited or restarted; and its RSS,
sampled every 50 ms with psutil (with its kernel high-water mark), against the issue's
250 MB target for the main process (measured 208-226 MB, idle 133). The peaks of the
worker and of its children are printed (``-s``); wall time is not asserted (speed
belongs in bench/).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import psutil
import pytest

from tests.acceptance.conftest import (
    Workers,
    assert_exactly_once,
    wait_until_settled,
    worker_env,
)
from tests.support import documents, mail
from tests.support.harness import communication, media, new_workspace, transcript
from tests.support.openai_server import OpenAIServer
from worker import client
from worker.core.settings import Settings
from worker.db.migrate import Migrator
from worker.servers.embedded import EmbeddedPostgres, EmbeddedRedis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

#: The issue's target for the worker's main process.
MAIN_RSS_LIMIT_MB = 250
MIB = 1024 * 1024
#: In every hostile item's text, subject or file name: never in an event.
MARK = "Zanzibar4417"
DOCUMENT_CAP = Settings.model_fields["document_max_bytes"].default
HUGE = 200 * MIB
HUGE_PATHS = ("/huge-chunked.pdf", "/huge-declared.pdf")
PDF_FACT = f"The {MARK} audit found the Lisbon warehouse lease renews in March."
DOCX_FACT = f"Procurement will renegotiate the {MARK} Valencia solar contract before June."
MAIL_FACT = f"The {MARK} board meets on Thursday to approve the hiring plan."


# --- a local content server (the 200 MB body is generated as it is sent) -----------


class _Content(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    files: dict[str, tuple[str, bytes]] = {}
    sent: dict[str, int] = defaultdict(int)  # body bytes handed to the socket, per path
    ended: dict[str, threading.Event] = defaultdict(threading.Event)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path.startswith("/huge"):
            self._huge(declared=self.path == "/huge-declared.pdf")
            return
        ctype, body = self.files.get(self.path, ("text/plain", b""))
        self.send_response(200 if self.path in self.files else 404)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _huge(self, *, declared: bool) -> None:
        """HUGE bytes of a "PDF", one reused 1 MiB block at a time (never held whole):
        with a Content-Length, or chunked (the size known only by reading it)."""
        block = bytearray(b"0" * MIB)
        block[:9] = b"%PDF-1.7\n"
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/pdf")
        if declared:
            self.send_header("Content-Length", str(HUGE))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for _ in range(HUGE // MIB):
                frame = bytes(block) if declared else b"%x\r\n%s\r\n" % (MIB, bytes(block))
                self.wfile.write(frame)
                self.sent[self.path] += MIB
                block[:9] = b"000000000"
            if not declared:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the worker hung up: what it refused is not sent
        finally:
            self.ended[self.path].set()


# --- RSS of the worker and of its children ------------------------------------------


def _vm_hwm_mb(pid: int) -> float:
    """The process's own peak RSS (the kernel's high-water mark: also between samples)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssWatch:
    """Samples the worker (main process) and each of its descendants every ``every`` s.

    Children by role: the forkserver and resource tracker (the worker's children) and the
    parsing processes (the forkserver's children, recycled and restarted by pebble)."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.root = psutil.Process(pid)
        self.every = every
        self.main_mb = 0.0
        self.main_hwm_mb = 0.0
        self.samples = 0
        self.children: dict[int, tuple[str, float]] = {}  # pid -> (role, peak RSS MB)
        self.children_sum_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _role(self, p: psutil.Process) -> str:
        if p.ppid() != self.root.pid:
            return "parse child"
        return "resource tracker" if "resource_tracker" in " ".join(p.cmdline()) else "forkserver"

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.main_mb = max(self.main_mb, self.root.memory_info().rss / MIB)
                self.main_hwm_mb = max(self.main_hwm_mb, _vm_hwm_mb(self.root.pid))
                kids = self.root.children(recursive=True)
            except (psutil.Error, OSError):
                return
            self.samples += 1
            total = 0.0
            for p in kids:
                try:
                    rss = max(p.memory_info().rss / MIB, _vm_hwm_mb(p.pid))
                    role = self.children.get(p.pid, (None, 0.0))[0] or self._role(p)
                except (psutil.Error, OSError):
                    continue
                total += rss
                self.children[p.pid] = (role, max(rss, self.children.get(p.pid, ("", 0.0))[1]))
            self.children_sum_mb = max(self.children_sum_mb, total)
            self._stop.wait(self.every)

    def report(self) -> dict[str, Any]:
        roles: dict[str, list[float]] = defaultdict(list)
        for role, peak in self.children.values():
            roles[role].append(peak)
        return {
            "samples": self.samples,
            "main_peak_rss_mb": round(self.main_mb, 1),
            "main_vm_hwm_mb": round(self.main_hwm_mb, 1),
            "children": {
                role: {"processes": len(v), "peak_rss_mb": round(max(v), 1)}
                for role, v in sorted(roles.items())
            },
            "children_sum_peak_mb": round(self.children_sum_mb, 1),
        }


# --- payloads --------------------------------------------------------------------------


def email(ws: uuid.UUID, external_id: str, raw: bytes) -> dict[str, Any]:
    return {
        "kind": "email",
        "workspace_id": str(ws),
        "source": "imap",
        "external_id": external_id,
        "raw": base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


def document(ws: uuid.UUID, external_id: str, url: str) -> dict[str, Any]:
    return {
        "kind": "media",
        "workspace_id": str(ws),
        "source": "drive",
        "external_id": external_id,
        "asset": {"kind": "document", "title": external_id},
        "content_url": url,
    }


def html_bomb(chars: int = 19_500_000) -> str:
    """~``chars`` characters of HTML: a paragraph, then ~630,000 levels of nested tags
    around one word (no browser engine builds that tree in reasonable time)."""
    head = f"<p>Board memo: the {MARK} Oslo office closes in May.</p>"
    opening, closing = "<div><span><b>", "</b></span></div>"
    levels = (chars - len(head)) // (len(opening) + len(closing))
    return head + opening * levels + "deep" + closing * levels


class Fixtures:
    """The hostile files, each generated once (tens of milliseconds to ~1 s each)."""

    def __init__(self) -> None:
        self.bomb = documents.zip_bomb_docx(64)
        self.pages = documents.pdf_many_pages(10_000, text=f"Tiny page {MARK}")
        self.locked = documents.pdf_encrypted([PDF_FACT], "pw")
        whole = documents.pdf([f"Page {i}. {PDF_FACT} " * 12 for i in range(20)])
        self.cut_half = whole[: len(whole) // 2]
        self.cut_most = whole[: len(whole) * 9 // 10]
        self.fine_pdf = documents.pdf(["Cover.", PDF_FACT])
        self.fine_docx = documents.docx([("h1", "Contracts"), ("p", DOCX_FACT)])


def hostile_items(
    ws: uuid.UUID, fx: Fixtures, base: str
) -> tuple[list[dict[str, Any]], dict[str, tuple[str, bytes]]]:
    """The items of the hostile workspace and the files the content server serves."""
    files = {
        "/bomb.docx": ("application/octet-stream", fx.bomb),
        "/10k.pdf": ("application/pdf", fx.pages),
        "/locked.pdf": ("application/pdf", fx.locked),
        "/cut-half.pdf": ("application/pdf", fx.cut_half),
        "/cut-90.pdf": ("application/pdf", fx.cut_most),
        "/fine.docx": ("application/octet-stream", fx.fine_docx),
    }
    cp1252 = f"Grüße aus Köln – the {MARK} café budget is €1200, “final”.".encode("cp1252")
    attachments = [
        (f"{MARK}-bomb.docx", "application/octet-stream", fx.bomb),
        (f"{MARK}-locked.pdf", "application/pdf", fx.locked),
        (f"{MARK}-cut.pdf", "application/pdf", fx.cut_half),
        (f"{MARK}-fine.pdf", "application/pdf", fx.fine_pdf),
    ]
    nested_text = MARK + " text at level {level}."
    items = [
        email(
            ws,
            "mail-bomb",
            mail.with_attachments(
                mail.plain_message(f"Files attached. {MAIL_FACT}\n", subject=f"{MARK} files"),
                attachments,
            ),
        ),
        document(ws, "doc-bomb", f"{base}/bomb.docx"),
        document(ws, "doc-10k-pages", f"{base}/10k.pdf"),
        document(ws, "doc-encrypted", f"{base}/locked.pdf"),
        document(ws, "doc-cut-half", f"{base}/cut-half.pdf"),
        document(ws, "doc-cut-90", f"{base}/cut-90.pdf"),
        document(ws, "doc-200mb-chunked", f"{base}/huge-chunked.pdf"),
        document(ws, "doc-200mb-declared", f"{base}/huge-declared.pdf"),
        email(ws, "mail-nested-50", mail.nested(50, nested_text, subject=f"{MARK} deep")),
        email(ws, "mail-nested-20000", mail.nested(20_000, nested_text, subject=f"{MARK} deep")),
        email(ws, "mail-charset-lies", mail.raw_message(cp1252, subject=f"{MARK} lies")),
        email(
            ws,
            "mail-charset-unknown",
            mail.raw_message(
                cp1252, content_type="text/plain; charset=x-klingon-42", subject=f"{MARK} k"
            ),
        ),
        {
            **{k: v for k, v in communication(ws, "html-20mb", "").items() if k != "body"},
            "subject": f"{MARK} newsletter",
            "body_html": html_bomb(),
        },
        # normal items among them
        email(
            ws,
            "mail-normal",
            mail.with_attachments(
                mail.plain_message(f"Report attached. {MAIL_FACT}\n", subject=f"{MARK} report"),
                [(f"{MARK}-report.pdf", "application/pdf", fx.fine_pdf)],
            ),
        ),
        document(ws, "doc-normal", f"{base}/fine.docx"),
    ]
    return items, files


def normal_items(ws: uuid.UUID) -> list[dict[str, Any]]:
    """Everyday items in a workspace of their own (checked by ``assert_exactly_once``)."""
    long_text = "The renewal forecast moves billing to usage tiers next quarter. " * 120
    return [
        communication(ws, "n-comm-1", "Lunch at noon? The pricing review moved to Friday."),
        communication(ws, "n-comm-2", long_text, thread_key="t2"),
        transcript(
            ws,
            "n-call-1",
            [("Ann", 0, 4000, "Welcome, let us review the roadmap."), ("Bo", 4000, 9000, "OK.")],
        ),
        media(ws, "n-video-1", [(0, 3000, "Onboarding walkthrough."), (3000, 9000, long_text)]),
        communication(ws, "n-comm-3", "Vendor audit notes are in the shared folder."),
    ]


# --- reading the outcome ---------------------------------------------------------------


async def outcomes(conn: asyncpg.Connection, ws: uuid.UUID) -> dict[str, dict[str, Any]]:
    """Per external id: the ledger row and its events (type, payload), in order."""
    rows = await conn.fetch(
        "SELECT id, external_id, status::text, attempts, last_error, error_field, result "
        "FROM ops.ingestion_jobs WHERE workspace_id = $1",
        ws,
    )
    events = await conn.fetch(
        "SELECT aggregate_id, event_type, payload FROM ops.events WHERE workspace_id = $1 "
        "ORDER BY aggregate_id, version",
        ws,
    )
    by_job: dict[uuid.UUID, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for e in events:
        by_job[e["aggregate_id"]].append((e["event_type"], json.loads(e["payload"])))
    return {r["external_id"]: {**dict(r), "events": by_job[r["id"]]} for r in rows}


def warnings_of(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in p.items() if k in ("attachment", "type", "status", "reason", "message")}
        for t, p in outcome["events"]
        if t == "content.warning"
    ]


def skip_reason(outcome: dict[str, Any]) -> str:
    [payload] = [p for t, p in outcome["events"] if t == "job.skipped"]
    return str(payload["result"]["reason"])


async def assert_hostile_outcomes(
    conn: asyncpg.Connection, ws: uuid.UUID, got: dict[str, dict[str, Any]], html: str
) -> dict[str, str]:
    """Every item's recorded outcome; returns a one-line summary per item."""
    status = {ext: o["status"] for ext, o in got.items()}
    assert status == {
        "mail-bomb": "done",
        "doc-bomb": "skipped",
        "doc-10k-pages": "done",
        "doc-encrypted": "skipped",
        "doc-cut-half": "done",
        "doc-cut-90": "done",
        "doc-200mb-chunked": "skipped",
        "doc-200mb-declared": "skipped",
        "mail-nested-50": "done",
        "mail-nested-20000": "done",
        "mail-charset-lies": "done",
        "mail-charset-unknown": "done",
        "html-20mb": "done",
        "mail-normal": "done",
        "doc-normal": "done",
    }, status
    # nothing was retried: every outcome is the first attempt's
    assert {ext: o["attempts"] for ext, o in got.items() if o["attempts"] != 1} == {}

    summary: dict[str, str] = {}

    # -- the zip bomb (and friends) as attachments: the message is stored, each recorded
    w = warnings_of(got["mail-bomb"])
    by_index = {x["attachment"]: x for x in w if "attachment" in x}
    assert sorted(by_index) == [1, 2, 3] and len(w) == 3, w
    assert by_index[1]["status"] == "skipped" and "zip bomb" in by_index[1]["reason"]
    assert (by_index[2]["status"], by_index[2]["reason"]) == ("skipped", "encrypted")
    assert by_index[3]["status"] == "partial"
    assert "damaged pdf (cut short)" in by_index[3]["reason"]
    attached = await conn.fetch(
        "SELECT a.filename, a.size_bytes, a.media_asset_id FROM comms.attachments a "
        "JOIN comms.communications c ON c.id = a.communication_id "
        "WHERE c.workspace_id = $1 AND c.external_id = 'mail-bomb' ORDER BY a.filename",
        ws,
    )
    assert [(r["filename"], r["media_asset_id"] is not None) for r in attached] == [
        (f"{MARK}-bomb.docx", False),
        (f"{MARK}-cut.pdf", True),
        (f"{MARK}-fine.pdf", True),
        (f"{MARK}-locked.pdf", False),
    ]
    body = await conn.fetchval(
        "SELECT body FROM comms.communications WHERE workspace_id=$1 AND external_id=$2",
        ws,
        "mail-bomb",
    )
    assert MAIL_FACT in body
    summary["zip bomb (attachment)"] = (
        f"message done; attachment 1 skipped: {by_index[1]['reason']}; "
        f"encrypted and cut PDFs next to it: {by_index[2]['reason']!r}, {by_index[3]['reason']!r}"
    )

    # -- media documents
    reason = skip_reason(got["doc-bomb"])
    assert reason.startswith("docx document: zip bomb"), reason
    summary["zip bomb (media document)"] = f"skipped: {reason}"
    reason = skip_reason(got["doc-encrypted"])
    assert reason == "pdf document: encrypted", reason
    summary["encrypted PDF"] = f"skipped: {reason}"
    assets = {
        r["external_id"]: r
        for r in await conn.fetch(
            "SELECT id, external_id, metadata FROM media.assets WHERE workspace_id = $1", ws
        )
    }
    assert "doc-bomb" not in assets and "doc-encrypted" not in assets

    pages_warning = warnings_of(got["doc-10k-pages"])
    assert pages_warning == [
        {
            "type": "pdf",
            "status": "partial",
            "reason": "read 1000 of 10000 pages (DOCUMENT_MAX_PAGES)",
        }
    ], pages_warning
    info = json.loads(assets["doc-10k-pages"]["metadata"])["document"]
    assert (info["status"], info["pages"]) == ("partial", 10_000), info
    positions = [
        json.loads(r["metadata"])["position"]
        for r in await conn.fetch(
            "SELECT metadata FROM media.media_chunks WHERE asset_id = $1 ORDER BY chunk_index",
            assets["doc-10k-pages"]["id"],
        )
    ]
    last = positions[-1].get("page") or positions[-1]["pages"][1]
    assert positions and last == 1000, positions[-1]
    summary["PDF of 10,000 pages"] = (
        f"done, partial: {pages_warning[0]['reason']} ({len(positions)} chunks, last page 1000)"
    )

    for ext, label in (("doc-cut-half", "PDF cut at 50 %"), ("doc-cut-90", "PDF cut at 90 %")):
        [warning] = warnings_of(got[ext])
        assert warning["status"] == "partial", warning
        assert warning["reason"].startswith("damaged pdf (cut short): trailer rebuilt"), warning
        chunks = await conn.fetch(
            "SELECT content FROM media.media_chunks WHERE asset_id = $1", assets[ext]["id"]
        )
        assert chunks and PDF_FACT in chunks[0]["content"]
        summary[label] = f"done, partial: {warning['reason']} ({len(chunks)} chunks)"

    for ext, tail in (
        ("doc-200mb-chunked", f"exceeds {DOCUMENT_CAP} bytes"),
        ("doc-200mb-declared", f"exceeds {DOCUMENT_CAP} bytes (Content-Length {HUGE})"),
    ):
        reason = skip_reason(got[ext])
        assert reason == f"document: over DOCUMENT_MAX_BYTES: content_url {tail}", reason
        assert got[ext]["events"][-1][0] == "job.skipped"
        assert ext not in assets

    # -- MIME nesting: cut at the depth cap, the text above it stored
    for ext in ("mail-nested-50", "mail-nested-20000"):
        assert warnings_of(got[ext]) == [
            {"message": "MIME_MAX_DEPTH (20): 1 parts nested deeper left out"}
        ], warnings_of(got[ext])
        body = await conn.fetchval(
            "SELECT body FROM comms.communications WHERE workspace_id=$1 AND external_id=$2",
            ws,
            ext,
        )
        assert body.startswith(f"{MARK} text at level 0.\n\n{MARK} text at level 1."), body[:100]
        assert "level 19." in body and "level 20." not in body and "innermost" not in body
        depth = ext.rsplit("-", 1)[1]
        summary[f"MIME nested {depth} levels"] = (
            f"done, partial: {warnings_of(got[ext])[0]['message']} "
            f"({body.count('text at level')} levels of text stored)"
        )

    # -- lying and unknown charsets: readable text and a warning
    want_text = f"Grüße aus Köln – the {MARK} café budget is €1200, “final”."
    for ext, note in (
        # the event's copy of the warning: quoted parts of it masked (docs/events.md)
        ("mail-charset-lies", "part 1: declared charset '…' did not decode; used windows-1252"),
        ("mail-charset-unknown", "part 1: unknown charset '…'; used windows-1252"),
    ):
        assert warnings_of(got[ext]) == [{"message": note}], warnings_of(got[ext])
        body = await conn.fetchval(
            "SELECT body FROM comms.communications WHERE workspace_id=$1 AND external_id=$2",
            ws,
            ext,
        )
        assert body == want_text, body
        summary[ext] = f"done, text readable; content.warning: {note}"

    # -- 20 MB of nested tags: stored as received, its visible text embedded
    row = await conn.fetchrow(
        "SELECT length(body) AS n, md5(body) AS h, chunk_count, embedding IS NOT NULL AS v "
        "FROM comms.communications WHERE workspace_id = $1 AND external_id = 'html-20mb'",
        ws,
    )
    assert row["n"] == len(html) and row["h"] == hashlib.md5(html.encode()).hexdigest()
    assert row["chunk_count"] >= 1 and row["v"]
    assert warnings_of(got["html-20mb"]) == []
    summary["HTML body of nested tags"] = (
        f"done ({len(html):,} chars stored as received, {row['chunk_count']} chunk embedded)"
    )

    # -- the normal items among them
    assert warnings_of(got["mail-normal"]) == [] and warnings_of(got["doc-normal"]) == []
    fact_chunks = await conn.fetch(
        "SELECT a.external_id, c.content, a.metadata FROM media.media_chunks c "
        "JOIN media.assets a ON a.id = c.asset_id WHERE a.workspace_id = $1 "
        "AND (c.content LIKE '%' || $2 || '%' OR c.content LIKE '%' || $3 || '%')",
        ws,
        PDF_FACT,
        DOCX_FACT,
    )
    found = {(r["external_id"], DOCX_FACT in r["content"]) for r in fact_chunks}
    assert ("doc-normal", True) in found, found
    normal_pdf = await conn.fetchval(
        "SELECT count(*) FROM comms.attachments a JOIN comms.communications c "
        "ON c.id = a.communication_id WHERE c.workspace_id = $1 AND c.external_id = "
        "'mail-normal' AND a.media_asset_id IS NOT NULL",
        ws,
    )
    assert normal_pdf == 1
    return summary


def assert_no_content_in_events(got: dict[str, dict[str, Any]]) -> None:
    """Events hold ids, counts, types and cap names: no text, subject, address or file
    name of any item (and no error message quotes one)."""
    dump = json.dumps([o["events"] for o in got.values()], ensure_ascii=False)
    dump += json.dumps([o["last_error"] for o in got.values()])
    for secret in (MARK, "alice@example.com", "bob@example.com", "Köln", "Oslo", "Lisbon"):
        assert secret not in dump, secret


# --- the run ---------------------------------------------------------------------------


@dataclass
class Run:
    """What one run of the worker left: its database, its workspaces, its items, what the
    content server sent, and the worker process's RSS."""

    dsn: str
    ws_hostile: uuid.UUID
    ws_normal: uuid.UUID
    hostile: list[dict[str, Any]]
    normal: list[dict[str, Any]]
    sent: dict[str, int]
    rss: dict[str, Any]
    exited: bool  # the worker process had exited (crashed) before the test stopped it
    processes: int  # worker processes started (one: never restarted)
    logs: str


async def _enqueue(
    redis: Any, pool: asyncpg.Pool, settings: Settings, items: list[dict[str, Any]]
) -> None:
    for payload in items:
        await client.enqueue(redis, payload, db=pool, settings=settings)


@pytest.fixture(scope="module")
async def run(
    own_pg: EmbeddedPostgres,
    own_redis: EmbeddedRedis,
    api: OpenAIServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Run]:
    """Everything sent at once to one worker process; RSS sampled throughout."""
    dsn = own_pg.dsn(f"hostile_{uuid.uuid4().hex[:8]}")
    conn = await asyncpg.connect(own_pg.dsn())
    try:
        await conn.execute(f'CREATE DATABASE "{dsn.rsplit("/", 1)[1]}"')
    finally:
        await conn.close()
    await Migrator(dsn).up()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Content)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"

    api.reset()
    api.configure(latency_ms=20, tpm_limit=None, rpm_limit=None)
    queue = f"hostile:{uuid.uuid4().hex[:8]}"
    ws_hostile = await new_workspace(dsn, "hostile")
    ws_normal = await new_workspace(dsn, "normal")
    hostile, _Content.files = hostile_items(ws_hostile, Fixtures(), base)
    normal = normal_items(ws_normal)
    env = worker_env(
        dsn,
        own_redis.url,
        api,
        queue,
        fetch_allow_private="true",
        # The acceptance default (6 s) is for kill tests; these jobs wait for the one
        # parsing child in turn. Every cap stays at its default.
        job_timeout_s=120,
    )
    workers = Workers(env, tmp_path_factory.mktemp("hostile-worker"))
    settings = Settings(queue_name=queue, database_url=dsn, redis_url=own_redis.url)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    redis = await client.connect(own_redis.url)
    try:
        [proc] = workers.start(1)
        with RssWatch(proc.pid) as watch:
            # A warm-up item: the worker is up and idle before the hostile ones arrive.
            await _enqueue(redis, pool, settings, normal[:1])
            await wait_until_settled(dsn, 1, within=60, workers=workers)
            baseline = psutil.Process(proc.pid).memory_info().rss / MIB
            started = time.monotonic()
            await _enqueue(redis, pool, settings, [*hostile, *normal[1:]])
            await wait_until_settled(dsn, len(hostile) + len(normal), within=180, workers=workers)
            elapsed = time.monotonic() - started
            await asyncio.sleep(0.2)
        rss = {"main_idle_rss_mb": round(baseline, 1), **watch.report()}
        exited = proc.poll() is not None
        for path in HUGE_PATHS:
            _Content.ended[path].wait(10)
        print(f"\n{len(hostile) + len(normal)} items in {elapsed:.1f} s (not asserted)")
        print("worker RSS:", json.dumps(rss, indent=2))
        yield Run(
            dsn,
            ws_hostile,
            ws_normal,
            hostile,
            normal,
            {path: _Content.sent[path] for path in HUGE_PATHS},
            rss,
            exited,
            len(workers.procs),
            workers.logs(),
        )
    finally:
        workers.stop_all()
        with contextlib.suppress(Exception):
            await redis.aclose()
        await pool.close()
        httpd.shutdown()
        httpd.server_close()


async def test_every_hostile_item_is_recorded_and_nothing_else_harmed(run: Run) -> None:
    # the one worker process ran it all: never exited, never restarted, nothing raised
    assert run.processes == 1 and not run.exited, run.logs[-3000:]
    assert "Traceback" not in run.logs, run.logs[-4000:]
    # the 200 MB bodies: refused at DOCUMENT_MAX_BYTES, never downloaded whole
    assert all(_Content.ended[path].is_set() for path in HUGE_PATHS), "still sending"
    assert run.sent["/huge-chunked.pdf"] <= DOCUMENT_CAP + 16 * MIB, run.sent  # + socket buffers
    assert run.sent["/huge-declared.pdf"] <= 16 * MIB, run.sent  # refused on its header

    conn = await asyncpg.connect(run.dsn)
    try:
        got = await outcomes(conn, run.ws_hostile)
        html = next(h["body_html"] for h in run.hostile if h["external_id"] == "html-20mb")
        summary = await assert_hostile_outcomes(conn, run.ws_hostile, got, html)
    finally:
        await conn.close()
    for ext, path in (
        ("doc-200mb-chunked", "/huge-chunked.pdf"),
        ("doc-200mb-declared", "/huge-declared.pdf"),
    ):
        summary[ext] = (
            f"skipped: {skip_reason(got[ext])} "
            f"(server sent {run.sent[path] / MIB:.0f} MiB of {HUGE // MIB})"
        )
    assert_no_content_in_events(got)
    # nothing else harmed: the everyday items, exactly once, with the right rows
    await assert_exactly_once(run.dsn, run.ws_normal, run.normal)
    print("\nhostile content through a worker process:")
    for case, outcome in summary.items():
        print(f"  {case}: {outcome}")


def test_worker_main_process_peak_rss_within_target(run: Run) -> None:
    """The issue's target for the worker's main process (its children apart): 208-226 MB
    measured. What got it there from 271-331 MB (memray): the content hash streamed, not
    dumped whole; a large parse input sent through a file, not pickled down the pipe; a
    large body written as a plain parameter, not an array element; a document fetched no
    further than DOCUMENT_MAX_BYTES; tiktoken's pickling-only copy of its ranks dropped
    (idle 147 -> 133 MB); glibc's mmap threshold fixed (MALLOC_MMAP_THRESHOLD_BYTES); a
    payload over INLINE_PAYLOAD_MAX_BYTES read from its ledger row, not through Redis."""
    assert run.rss["samples"] > 10
    assert run.rss["main_peak_rss_mb"] <= MAIN_RSS_LIMIT_MB, run.rss
    assert run.rss["main_vm_hwm_mb"] <= MAIN_RSS_LIMIT_MB, run.rss
