"""HTML communications through the real pipeline (PostgreSQL, Redis, arq, the
OpenAI-compatible server): what is embedded is the visible text, what is stored is the
body as received, and search finds a sentence that was only inside the HTML."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bench.html_mail import newsletter
from tests.integration.test_pipeline import enqueue_all
from tests.support.harness import (
    communication,
    db_fetch,
    new_workspace,
    run_worker_burst,
    search_workspace,
)
from worker.text.html import html_to_text
from worker.text.tokens import count_tokens

FACT = "The Lisbon warehouse will open on the ninth of March with forty staff."


def _html_with_fact() -> str:
    return newsletter(3).replace(
        "<h2>Quarterly update 1", f"<p style='color:#333'>{FACT}</p><h2>Quarterly update 1"
    )


class _Html(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        body = _html_with_fact().encode()
        ctype = "text/html; charset=utf-8" if self.path == "/html" else "text/plain"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def html_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_html_newsletter_embeds_its_visible_text_and_stores_the_html(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    body = _html_with_fact()
    visible = html_to_text(body)
    fake_openai.reset()
    payloads: list[dict[str, Any]] = [
        communication(ws, "news", body, subject="Quarterly newsletter"),  # detected
        communication(ws, "plain-1", "Can we move the board meeting to Thursday?"),
        communication(ws, "plain-2", "Lunch on Friday? The usual place.", subject="lunch"),
    ]
    await enqueue_all(settings, payloads)
    await run_worker_burst(settings)

    # Embedded: the subject and the visible text, not 14k tokens of CSS and tables.
    sent = fake_openai.stats()["tokens"]
    assert count_tokens(body) > 10_000
    plain_tokens = sum(count_tokens(p["body"]) + count_tokens(p["subject"]) for p in payloads[1:])
    assert sent < 2 * (count_tokens(visible) + 10) + plain_tokens + 20, sent
    rows = await db_fetch(
        migrated_dsn,
        "SELECT external_id, body, content_hash FROM comms.communications"
        " WHERE workspace_id=$1 ORDER BY external_id",
        ws,
    )
    stored = {r["external_id"]: r["body"] for r in rows}
    assert stored["news"] == body  # stored as received, byte for byte
    events = await db_fetch(
        migrated_dsn,
        "SELECT e.payload FROM ops.events e JOIN ops.ingestion_jobs j ON j.id = e.aggregate_id"
        " WHERE j.workspace_id=$1 AND e.event_type='content.pulled'",
        ws,
    )
    assert any('"html"' in str(e[0]) for e in events)

    hits = await search_workspace(settings, migrated_dsn, ws, FACT)
    assert hits[0]["kind"] == "communication"
    assert hits[0]["content"].startswith("Quarterly newsletter\n")


async def test_body_html_and_fetched_text_html_are_converted(
    settings_factory, migrated_dsn, fake_openai, html_server
) -> None:
    settings = settings_factory(fetch_allow_private=True)
    ws = await new_workspace(migrated_dsn)
    body = _html_with_fact()
    by_field = {**communication(ws, "inline", ""), "body": None, "body_html": body}
    by_header = {**communication(ws, "fetched", ""), "body": None}
    by_header["content_url"] = f"{html_server}/html"
    said_plain = {**by_header, "external_id": "plain", "content_type": "text/plain"}
    said_html = {**by_header, "external_id": "said", "content_url": f"{html_server}/plain"}
    said_html["content_type"] = "text/html"
    await enqueue_all(settings, [by_field, by_header, said_plain, said_html])
    await run_worker_burst(settings)

    rows = await db_fetch(
        migrated_dsn,
        "SELECT external_id, body FROM comms.communications WHERE workspace_id=$1",
        ws,
    )
    assert {r["external_id"]: r["body"] for r in rows} == dict.fromkeys(
        ["inline", "fetched", "plain", "said"], body
    )
    # Three converted, one chunked as it came (the payload said text/plain).
    jobs = await db_fetch(
        migrated_dsn,
        "SELECT external_id, (result->>'tokens')::int FROM ops.ingestion_jobs WHERE workspace_id=$1",
        ws,
    )
    tokens = {j[0]: j[1] for j in jobs}
    converted = count_tokens(html_to_text(body))
    assert all(converted <= tokens[k] < converted + 20 for k in ("inline", "fetched", "said"))
    assert tokens["plain"] > count_tokens(body)
