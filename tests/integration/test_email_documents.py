"""Raw e-mail and documents through the real worker (PostgreSQL, Redis, arq, the
OpenAI-compatible server, the parsing children): a MIME message becomes its communication,
its attachments become rows, its documents assets with positioned chunks linked to it;
media documents are read by sniffed type; what cannot be read is recorded, not lost."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from tests.integration.test_pipeline import enqueue_all
from tests.support import documents, mail
from tests.support.harness import (
    db_fetch,
    db_val,
    new_workspace,
    run_worker_burst,
    search_workspace,
)
from worker import client
from worker.core.payloads import PayloadError

PDF_FACT = "The Rotterdam pilot plant reached ninety-one percent yield in week seven."
DOCX_FACT = "Procurement will renegotiate the Valencia solar contract before June."


def message(
    subject: str,
    text: str,
    *,
    html: str | None = None,
    message_id: str,
    references: tuple[str, ...] = (),
    attachments: tuple[tuple[str, str, bytes], ...] = (),
    inline_png: bool = False,
    date: str = "Tue, 01 Dec 2026 09:30:00 +0100",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ana Ruiz <Ana.Ruiz@example.com>"
    msg["To"] = "Ben Cho <ben@example.com>, carla@example.com"
    msg["Cc"] = "dan@example.com"
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = f"<{message_id}>"
    if references:
        msg["In-Reply-To"] = f"<{references[-1]}>"
        msg["References"] = " ".join(f"<{r}>" for r in references)
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
        if inline_png:
            related = msg.get_payload()[1]
            related.add_related(documents.png(), "image", "png", cid="<logo@x>")
    for filename, mime, data in attachments:
        maintype, subtype = mime.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def email_payload(ws: Any, external_id: str, raw: bytes, **kw: Any) -> dict[str, Any]:
    return {
        "kind": "email",
        "workspace_id": str(ws),
        "source": "gmail",
        "external_id": external_id,
        "raw": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        **kw,
    }


def _pdf() -> bytes:
    return documents.pdf(
        ["Cover page: plant report.", "Throughput tables follow.", f"Results. {PDF_FACT}"]
    )


def _docx() -> bytes:
    return documents.docx([("h1", "Contracts"), ("p", DOCX_FACT)])


async def _jobs(dsn: str, ws: Any) -> dict[str, Any]:
    rows = await db_fetch(
        dsn,
        "SELECT payload->>'external_id' AS ext, status::text, last_error, error_field "
        "FROM ops.ingestion_jobs WHERE workspace_id = $1",
        ws,
    )
    return {r["ext"]: r for r in rows}


async def _events(dsn: str, ws: Any, event_type: str) -> list[dict[str, Any]]:
    rows = await db_fetch(
        dsn,
        "SELECT payload FROM ops.events WHERE workspace_id = $1 AND event_type = $2",
        ws,
        event_type,
    )
    return [json.loads(r["payload"]) for r in rows]


async def test_a_raw_thread_with_attachments_is_stored_searchable_and_linked(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    pdf = _pdf()
    first = message(
        "Plant report",
        "Hi Ben,\n\nThe plant report is attached, see page three.\n\nAna",
        html="<p>Hi Ben,</p><p>The plant report is attached, see page three.</p>"
        "<img src='cid:logo@x'><p>Ana</p>",
        inline_png=True,
        message_id="m1@example.com",
        attachments=(
            ("report.pdf", "application/pdf", pdf),
            ("notes.docx", "application/octet-stream", _docx()),
        ),
    )
    reply = message(
        "Re: Plant report",
        "Thanks, attaching it again for Dan.\n\nOn Tue, Dec 1, 2026 at 9:30 AM Ana Ruiz "
        "<ana.ruiz@example.com> wrote:\n> Hi Ben,\n> The plant report is attached.\n",
        message_id="m2@example.com",
        references=("m1@example.com",),
        date="Tue, 01 Dec 2026 11:00:00 +0100",
        attachments=(("report (1).pdf", "application/pdf", pdf),),
    )
    fake_openai.reset()
    await enqueue_all(settings, [email_payload(ws, "m1", first)])
    await run_worker_burst(settings)
    tokens_first = fake_openai.stats()["tokens"]
    await enqueue_all(settings, [email_payload(ws, "m2", reply, thread_key=None)])
    await run_worker_burst(settings)

    jobs = await _jobs(migrated_dsn, ws)
    assert {k: j["status"] for k, j in jobs.items()} == {"m1": "done", "m2": "done"}
    comms = await db_fetch(
        migrated_dsn,
        "SELECT c.external_id, c.subject, c.sender_address, c.sent_at, c.body, t.thread_key "
        "FROM comms.communications c JOIN comms.threads t ON t.id = c.thread_id "
        "WHERE c.workspace_id = $1 ORDER BY c.external_id",
        ws,
    )
    assert [c["subject"] for c in comms] == ["Plant report", "Re: Plant report"]
    assert {c["thread_key"] for c in comms} == {"m1@example.com"}  # one thread
    assert comms[0]["sender_address"] == "ana.ruiz@example.com"
    assert comms[0]["sent_at"].isoformat() == "2026-12-01T08:30:00+00:00"
    assert "> Hi Ben," in comms[1]["body"]  # stored whole
    roles = await db_fetch(
        migrated_dsn,
        "SELECT p.role::text, p.address FROM comms.participants p "
        "JOIN comms.communications c ON c.id = p.communication_id "
        "WHERE c.workspace_id = $1 AND c.external_id = 'm1' ORDER BY 1, 2",
        ws,
    )
    assert {(r["role"], r["address"]) for r in roles} >= {
        ("to", "ben@example.com"),
        ("to", "carla@example.com"),
        ("cc", "dan@example.com"),
    }

    # Attachments: rows for both messages (the inline logo is not one), one asset per file.
    rows = await db_fetch(
        migrated_dsn,
        "SELECT c.external_id, a.filename, a.size_bytes, a.media_asset_id "
        "FROM comms.attachments a JOIN comms.communications c ON c.id = a.communication_id "
        "WHERE a.workspace_id = $1 ORDER BY 1, 2",
        ws,
    )
    assert [(r["external_id"], r["filename"]) for r in rows] == [
        ("m1", "notes.docx"),
        ("m1", "report.pdf"),
        ("m2", "report (1).pdf"),
    ]
    assert rows[1]["size_bytes"] == len(pdf)
    assert rows[1]["media_asset_id"] == rows[2]["media_asset_id"] is not None
    assets = await db_fetch(
        migrated_dsn,
        "SELECT id, kind::text, mime_type, metadata FROM media.assets WHERE workspace_id = $1",
        ws,
    )
    assert len(assets) == 2 and {a["kind"] for a in assets} == {"document"}
    mimes = {a["mime_type"] for a in assets}
    assert mimes == {
        "application/pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    }  # sniffed: notes.docx was declared application/octet-stream
    links = await db_val(
        migrated_dsn,
        "SELECT count(*) FROM media.asset_links WHERE workspace_id = $1 AND asset_id = $2",
        ws,
        rows[1]["media_asset_id"],
    )
    assert links == 2
    pages = await db_fetch(
        migrated_dsn,
        "SELECT content, metadata FROM media.media_chunks WHERE workspace_id = $1 "
        "AND asset_id = $2 ORDER BY chunk_index",
        ws,
        rows[1]["media_asset_id"],
    )
    holding = [json.loads(p["metadata"]) for p in pages if PDF_FACT in p["content"]]
    assert holding and all("3" in json.dumps(m["position"]) for m in holding)

    # The second message re-attached the same PDF: its vectors were reused.
    assert fake_openai.stats()["tokens"] - tokens_first < tokens_first / 2

    hits = await search_workspace(settings, migrated_dsn, ws, PDF_FACT, limit=1)
    assert hits[0]["kind"] == "media" and PDF_FACT in hits[0]["content"]
    assert hits[0]["came_with"] == "Plant report"
    position = hits[0]["position"]  # three short pages make one chunk
    assert position == {"page": 3} or position["pages"][1] == 3
    hits = await search_workspace(settings, migrated_dsn, ws, DOCX_FACT, limit=1)
    assert hits[0]["position"] == {"heading": "Contracts"}

    # Events hold ids and counts, never the subject, addresses or file names.
    dump = json.dumps(await _events(migrated_dsn, ws, "content.stored"))
    for secret in ("Plant report", "ana.ruiz", "report.pdf", PDF_FACT):
        assert secret not in dump


async def test_a_document_attached_to_messages_in_flight_together_is_embedded_once(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    pdf = documents.pdf([f"Section {i}. {PDF_FACT} " * 20 for i in range(1, 6)])
    forwards = [
        message(
            f"Fwd {i}",
            f"See attached, copy {i}.",
            message_id=f"f{i}@x",
            attachments=(("report.pdf", "application/pdf", pdf),),
        )
        for i in range(6)
    ]
    fake_openai.reset()
    await enqueue_all(settings, [email_payload(ws, f"f{i}", raw) for i, raw in enumerate(forwards)])
    await run_worker_burst(settings)
    chunks = await db_fetch(
        migrated_dsn,
        "SELECT token_count FROM media.media_chunks WHERE workspace_id = $1",
        ws,
    )
    document_tokens = sum(c["token_count"] for c in chunks)
    assert (
        document_tokens > 1000
        and await db_val(
            migrated_dsn, "SELECT count(*) FROM media.asset_links WHERE workspace_id = $1", ws
        )
        == 6
    )
    assert fake_openai.stats()["inputs"] == len(chunks) + 6  # the document once, six bodies
    recorded = await _events(migrated_dsn, ws, "content.embedded")
    assert sum(e["tokens"] for e in recorded if "attachments" in e) == document_tokens


async def test_bad_attachments_are_recorded_and_the_message_is_kept(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    raw = message(
        "Scans",
        "Two files that cannot be read, one that can.",
        message_id="bad@example.com",
        attachments=(
            ("locked.pdf", "application/pdf", documents.pdf_encrypted(["secret"], "pw")),
            ("scan.pdf", "application/pdf", documents.pdf_images(2)),
            ("bomb.docx", "application/octet-stream", documents.zip_bomb_docx(8)),
            ("fine.pdf", "application/pdf", documents.pdf(["Readable."])),
        ),
    )
    await enqueue_all(settings, [email_payload(ws, "bad", raw)])
    await run_worker_burst(settings)

    assert (await _jobs(migrated_dsn, ws))["bad"]["status"] == "done"
    rows = await db_fetch(
        migrated_dsn,
        "SELECT filename, media_asset_id FROM comms.attachments WHERE workspace_id = $1 "
        "ORDER BY filename",
        ws,
    )
    assert [(r["filename"], r["media_asset_id"] is not None) for r in rows] == [
        ("bomb.docx", False),
        ("fine.pdf", True),
        ("locked.pdf", False),
        ("scan.pdf", False),
    ]
    warnings = await _events(migrated_dsn, ws, "content.warning")
    reasons = {w["attachment"]: w["reason"] for w in warnings if "attachment" in w}
    assert "encrypted" in reasons[1]
    assert "no text layer" in reasons[2]
    assert "zip bomb" in reasons[3]
    assert all(w["status"] == "skipped" for w in warnings if "attachment" in w)


async def test_invalid_and_unparseable_messages_fail_with_the_field(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    ws = await new_workspace(migrated_dsn)
    settings = settings_factory()
    good = email_payload(ws, "ok", message("Fine", "A fine message.", message_id="ok@x"))
    bad = {**email_payload(ws, "b64", b""), "raw": "not base64 at all!"}
    with pytest.raises(PayloadError, match="raw: is not base64"):
        await enqueue_all(settings, [bad])  # the client refuses it at once
    redis = await client.connect(settings.redis_url)
    try:  # straight to Redis, as a non-Python connector would
        await redis.enqueue_job("ingest", bad, _job_id=f"b64-{ws}", _queue_name=settings.queue_name)
    finally:
        await redis.aclose()
    await enqueue_all(settings, [good])
    await run_worker_burst(settings)
    jobs = await _jobs(migrated_dsn, ws)
    assert jobs["ok"]["status"] == "done"
    assert jobs["b64"]["status"] == "failed" and jobs["b64"]["error_field"] == "raw"

    # A parse that overruns PARSE_TIMEOUT_S is killed and recorded; the worker goes on.
    # (20,000 nested multiparts take ~1 s to cut at the depth cap on the bench machine.)
    slow = settings_factory(parse_timeout_s=0.2)
    deep = email_payload(ws, "slow", mail.nested(20_000))
    await enqueue_all(slow, [deep, email_payload(ws, "after", mail.plain_message("next"))])
    await run_worker_burst(slow)
    job = (await _jobs(migrated_dsn, ws))["slow"]
    assert job["status"] == "failed" and job["error_field"] == "raw"
    assert "PARSE_TIMEOUT_S" in job["last_error"]
    assert (await _jobs(migrated_dsn, ws))["after"]["status"] == "done"


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, tuple[str, bytes]] = {}

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        ctype, body = self.files[self.path]
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def file_server() -> Iterator[type[_Files]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    _Files.files = {}
    _Files.base = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield _Files
    finally:
        server.shutdown()
        server.server_close()


def _media_doc(ws: Any, external_id: str, url: str, kind: str = "document") -> dict[str, Any]:
    return {
        "kind": "media",
        "workspace_id": str(ws),
        "source": "drive",
        "external_id": external_id,
        "asset": {"kind": kind, "title": external_id},
        "content_url": url,
    }


async def test_media_documents_are_read_by_their_bytes(
    settings_factory, migrated_dsn, fake_openai, file_server
) -> None:
    settings = settings_factory(fetch_allow_private=True)
    ws = await new_workspace(migrated_dsn)
    base = file_server.base  # type: ignore[attr-defined]
    file_server.files = {
        # a PDF served as text/plain under a .txt name: read as the PDF it is
        "/notes.txt": ("text/plain", _pdf()),
        "/deck.pptx": (
            "application/octet-stream",
            documents.pptx([("Q3 plan", ["Hire two engineers"], None)]),
        ),
        "/scan.pdf": ("application/pdf", documents.pdf_images(1)),
        "/many.pdf": ("application/pdf", documents.pdf_many_pages(30)),
    }
    payloads = [
        _media_doc(ws, "notes", f"{base}/notes.txt", kind="video"),
        _media_doc(ws, "deck", f"{base}/deck.pptx"),
        _media_doc(ws, "scan", f"{base}/scan.pdf"),
        _media_doc(ws, "many", f"{base}/many.pdf"),
    ]
    capped = settings_factory(fetch_allow_private=True, document_max_pages=10)
    await enqueue_all(capped, payloads)
    await run_worker_burst(capped)

    jobs = await _jobs(migrated_dsn, ws)
    assert {k: j["status"] for k, j in jobs.items()} == {
        "notes": "done",
        "deck": "done",
        "scan": "skipped",
        "many": "done",
    }
    skipped = await _events(migrated_dsn, ws, "job.skipped")
    assert any("no text layer" in json.dumps(e) for e in skipped)
    partial = await _events(migrated_dsn, ws, "content.warning")
    assert any(e.get("status") == "partial" and "10" in e["reason"] for e in partial)
    assets = {
        r["external_id"]: r
        for r in await db_fetch(
            migrated_dsn,
            "SELECT external_id, mime_type, metadata FROM media.assets WHERE workspace_id = $1",
            ws,
        )
    }
    assert assets["notes"]["mime_type"] is None or "pdf" in json.dumps(assets["notes"]["metadata"])
    assert json.loads(assets["many"]["metadata"])["document"]["status"] == "partial"
    assert "scan" not in assets
    hits = await search_workspace(settings, migrated_dsn, ws, PDF_FACT, limit=1)
    assert PDF_FACT in hits[0]["content"] and hits[0]["came_with"] is None
    slides = await db_fetch(
        migrated_dsn,
        "SELECT c.metadata FROM media.media_chunks c JOIN media.assets a ON a.id = c.asset_id "
        "WHERE a.workspace_id = $1 AND a.external_id = 'deck'",
        ws,
    )
    assert [json.loads(s["metadata"])["position"] for s in slides] == [{"slide": 1}]
