"""The event store holds identifiers and counts, never personal content (docs/events.md).

``ops.events`` is append-only: whatever an event holds can never be erased. So items full
of distinctive personal data (subject, sender/recipient names and addresses, Gmail-style
Message-IDs as external ids, an attachment's file name, a transcript's speakers, a
document's title, a bad payload whose values are distinctive, a ``content_url`` whose path
carries a token, a job sent straight to Redis under a Message-ID as its arq id) go through
the real worker, with retries and re-sends; then every event of the workspace is read as
text and none of the distinctive strings may appear in it, nor in the worker's log lines
(ours and arq's: a log is beyond any erasure's reach too). The ledger row (erasable) keeps
the detail: the test checks it does, so the scan is not vacuous.
"""

from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from tests.support import documents
from tests.support.harness import (
    communication,
    db_fetch,
    media,
    mutate,
    new_workspace,
    run_worker_burst,
    transcript,
)
from worker import client
from worker.db.ledger.contract import EVENT_KEYS, METADATA_KEYS
from worker.db.pool import create_pool

SUBJECT = "Zephyrine Wobblecraft Severance 7731"
SENDER_NAME = "Quillon Zylberstein"
SENDER = "q.zylberstein@hollowmarsh.example"
RECIPIENT_NAME = "Rosalind Vantablack"
RECIPIENT = "r.vantablack@fernmoor.example"
MSGID = "CAF123.zq4711@mail.gmail.com"
ATTACHMENT = "zylberstein-salary-review.pdf"
TOKEN = "tok-zq8841secret"
DOC_TITLE = "Vantablack appraisal dossier"
BAD_ADDRESS = "not-an-address zq-badsender@quagmire.example"
BAD_TYPE = "text/zq-quirkmime"

#: Strings that must not appear in any event (case-insensitive). Parts too: the local
#: part of an address, the domain, a Message-ID's id part.
DISTINCTIVE = [
    SUBJECT,
    "Wobblecraft",
    SENDER_NAME,
    "Zylberstein",
    SENDER,
    "hollowmarsh",
    RECIPIENT_NAME,
    "Vantablack",
    RECIPIENT,
    "fernmoor",
    MSGID,
    "zq4711",
    "mail.gmail.com",
    ATTACHMENT,
    TOKEN,
    "payroll-zq",
    DOC_TITLE,
    "zq-badsender",
    "quagmire",
    "zq-quirkmime",
    "zq-unresolvable",
]


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, tuple[str, bytes]] = {}

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path not in self.files:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        ctype, body = self.files[self.path]
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def file_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    _Files.files = {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw_email(message_id: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"{SENDER_NAME} <{SENDER}>"
    msg["To"] = f"{RECIPIENT_NAME} <{RECIPIENT}>"
    msg["Subject"] = SUBJECT
    msg["Date"] = "Tue, 01 Dec 2026 09:30:00 +0100"
    msg["Message-ID"] = f"<{message_id}>"
    msg.set_content(f"Dear {RECIPIENT_NAME},\n\nthe review is attached.\n\n{SENDER_NAME}\n")
    pdf = documents.pdf([f"Salary review of {RECIPIENT_NAME}.", "Numbers follow."])
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=ATTACHMENT)
    return msg.as_bytes()


def personal_items(ws: Any, base: str) -> dict[str, list[dict[str, Any]]]:
    """Every kind of item, full of the distinctive strings."""
    people = {
        "sender": {"name": SENDER_NAME, "address": SENDER},
        "recipients": [{"name": RECIPIENT_NAME, "address": RECIPIENT, "role": "to"}],
    }
    comms = [
        communication(
            ws,
            f"<CAF{i}.zq4711@mail.gmail.com>",
            f"Hi {RECIPIENT_NAME}, about {SUBJECT} ({i}).",
            subject=SUBJECT,
            thread_key=f"<{MSGID}>",
            **people,
        )
        for i in range(13)
    ]
    email = {
        "kind": "email",
        "workspace_id": str(ws),
        "source": "gmail",
        "external_id": f"<{MSGID}>",
        "raw": base64.urlsafe_b64encode(raw_email(MSGID)).decode().rstrip("="),
    }
    call = transcript(
        ws,
        f"<meet.{MSGID}>",
        [
            (SENDER_NAME, 0, 4000, f"Welcome {RECIPIENT_NAME}, this is {SUBJECT}."),
            (RECIPIENT_NAME, 4000, 9000, "Thanks, the severance terms look fine."),
        ],
        meeting={"title": SUBJECT},
        participants=[
            {"name": SENDER_NAME, "address": SENDER},
            {"name": RECIPIENT_NAME, "address": RECIPIENT},
        ],
    )
    video = media(
        ws,
        f"loom-{TOKEN}",
        [(0, 4000, f"{SENDER_NAME} explains {SUBJECT}.")],
        asset={"kind": "video", "title": DOC_TITLE, "uri": f"{base}/v/{TOKEN}"},
    )
    document = {
        "kind": "media",
        "workspace_id": str(ws),
        "source": "drive",
        "external_id": f"drive:{RECIPIENT}:{ATTACHMENT}",
        "asset": {"kind": "document", "title": DOC_TITLE},
        "content_url": f"{base}/payroll-zq/{TOKEN}/{ATTACHMENT}",
    }
    fetch_failures = [
        # 404 (not retried), connection refused and an unresolvable host (retried)
        mutate(comms[0], external_id=f"<gone.{MSGID}>", content_url=f"{base}/x/{TOKEN}?u={SENDER}"),
        mutate(
            comms[0],
            external_id=f"<refused.{MSGID}>",
            content_url=f"http://127.0.0.1:{_closed_port()}/payroll-zq/{TOKEN}",
        ),
        mutate(
            comms[0],
            external_id=f"<dns.{MSGID}>",
            content_url=f"http://zq-unresolvable-{TOKEN}.invalid/{ATTACHMENT}",
        ),
    ]
    for p in fetch_failures:
        p.pop("body")
    bad = [
        # invalid payloads straight to Redis (the worker rejects and records them)
        mutate(comms[0], external_id=f"<bad1.{MSGID}>", content_type=BAD_TYPE),
        mutate(
            comms[0],
            external_id=f"<bad2.{MSGID}>",
            sender={"name": SENDER_NAME, "address": [BAD_ADDRESS]},
        ),
        mutate(
            comms[0],
            external_id=f"<bad3.{MSGID}>",
            sender={"name": SENDER_NAME, "address": SENDER, RECIPIENT: BAD_ADDRESS},
        ),
        mutate(comms[0], kind=f"zq-{SENDER}", external_id=f"<bad4.{MSGID}>"),
        mutate(comms[0], external_id=f"<bad5.{MSGID}>", sent_at=f"{SUBJECT} {SENDER}"),
    ]
    return {
        "comms": comms,
        "others": [email, call, video, document, *fetch_failures],
        "bad": bad,
    }


async def events_of(dsn: str, ws: Any) -> list[dict[str, Any]]:
    rows = await db_fetch(
        dsn,
        "SELECT event_type, payload::text AS payload, metadata::text AS metadata, "
        "idempotency_key FROM ops.events WHERE workspace_id = $1 ORDER BY id",
        ws,
    )
    return [dict(r) for r in rows]


def leaks(events: list[dict[str, Any]], strings: list[str]) -> list[tuple[str, str]]:
    """(distinctive string, event as text) for every string an event holds."""
    found = []
    for e in events:
        text = json.dumps(e).lower()
        for s in strings:
            if s.lower() in text or json.dumps(s)[1:-1].lower() in text:
                found.append((s, f"{e['event_type']}: {e['payload']} {e['metadata']}"))
    return found


async def test_events_hold_no_personal_content(
    settings_factory, migrated_dsn, file_server, capfd
) -> None:
    settings = settings_factory(job_max_tries=2, fetch_timeout_s=5.0)
    ws = await new_workspace(migrated_dsn)
    _Files.files = {
        f"/payroll-zq/{TOKEN}/{ATTACHMENT}": (
            "application/pdf",
            documents.pdf([f"{DOC_TITLE}: {RECIPIENT_NAME} is rated outstanding."]),
        )
    }
    items = personal_items(ws, file_server)
    pool = await create_pool(settings, migrated_dsn, min_size=1, max_size=2)
    redis = await client.connect(settings.redis_url)
    try:
        ids = await client.enqueue_many(
            redis, [*items["comms"], *items["others"]], db=pool, settings=settings
        )
        assert all(isinstance(i, str) for i in ids), ids
        for p in items["bad"]:
            await redis.enqueue_job("ingest", p, _queue_name=settings.queue_name)
        # a connector in another language using the Message-ID as its arq job id
        direct = mutate(items["comms"][0], external_id=f"<direct.{MSGID}>")
        await redis.enqueue_job(
            "ingest", direct, _job_id=f"<direct.{MSGID}>", _queue_name=settings.queue_name
        )
        await run_worker_burst(settings)
        # re-sends: the same page again (no-ops), one message changed (a new job)
        again = await client.enqueue_many(redis, items["comms"], db=pool, settings=settings)
        assert again == ids[: len(items["comms"])]
        changed = mutate(items["comms"][1], body=f"Updated for {RECIPIENT_NAME}: {SUBJECT}.")
        await client.enqueue(redis, changed, db=pool, settings=settings)
        await run_worker_burst(settings)
    finally:
        await redis.aclose()
        await pool.close()

    ledger = {
        r["external_id"]: r
        for r in await db_fetch(
            migrated_dsn,
            "SELECT external_id, status::text, attempts, last_error, error_field "
            "FROM ops.ingestion_jobs WHERE workspace_id = $1",
            ws,
        )
    }
    # The items went where they should (the scan below is about real outcomes) ...
    assert ledger[f"<{MSGID}>"]["status"] == "done"
    assert ledger["<CAF1.zq4711@mail.gmail.com>"]["status"] == "done"
    assert ledger[f"drive:{RECIPIENT}:{ATTACHMENT}"]["status"] == "done"
    assert ledger[f"<gone.{MSGID}>"]["status"] == "failed"
    assert ledger[f"<dns.{MSGID}>"]["status"] == "failed"
    assert ledger[f"<dns.{MSGID}>"]["attempts"] == 2  # retried
    assert ledger[f"<refused.{MSGID}>"]["status"] == "failed"
    assert ledger[f"<direct.{MSGID}>"]["status"] == "done"
    rejected = [
        r for r in ledger.values() if r["error_field"] and "bad" in (r["external_id"] or "")
    ]
    assert len(rejected) >= 4, ledger
    # ... and the ledger (erasable) keeps the detail: an error quoting the input, the id.
    assert "zq-unresolvable" in ledger[f"<dns.{MSGID}>"]["last_error"]
    attachments = await db_fetch(
        migrated_dsn, "SELECT filename FROM comms.attachments WHERE workspace_id = $1", ws
    )
    assert [a["filename"] for a in attachments] == [ATTACHMENT]

    # The worker's logs (ours and arq's, JSON lines on stdout/stderr) hold none of it either.
    out = capfd.readouterr()
    logged = out.out + out.err
    assert "job.done" in logged  # the logs were captured
    assert [d for d in DISTINCTIVE if d in logged] == [], [
        line for line in logged.splitlines() if any(d in line for d in DISTINCTIVE)
    ][:5]

    events = await events_of(migrated_dsn, ws)
    types = {e["event_type"] for e in events}
    assert {"job.received", "job.failed", "job.retrying", "job.noop", "content.stored"} <= types
    assert leaks(events, DISTINCTIVE) == []

    # Every event holds only the keys docs/events.md lists for its type.
    for e in events:
        payload, metadata = json.loads(e["payload"]), json.loads(e["metadata"])
        assert set(payload) <= EVENT_KEYS[e["event_type"]], e
        assert set(metadata) <= METADATA_KEYS, e
