"""Reply threads through the real pipeline: each message embeds only what it says new
(``worker.text.quotes.split_reply``), stores its whole body, and a fact stated once is
found in the message that stated it."""

from __future__ import annotations

from typing import Any

from tests.integration.test_pipeline import enqueue_all
from tests.support.harness import (
    communication,
    db_fetch,
    new_workspace,
    run_worker_burst,
    search_workspace,
)
from worker.text.tokens import count_tokens

FACT = "The Lisbon warehouse opens on the ninth of March with forty staff."
NEW = [
    f"Hi all,\n\n{FACT} Ana will run it and the lease is signed.\n\nBest,\nMaya",
    "Great news. Can we get the hiring plan for the first quarter by Friday?\n\nSam",
    "Yes, I will send the hiring plan on Thursday with the budget.\n\nMaya",
    "Thanks. Please loop in finance for the equipment order.\n\nSam\n-- \nSam Patel | COO",
    "Finance is in the loop; the order goes out next week.\n\nSent from my iPhone",
]


def _thread(ws: Any) -> list[dict[str, Any]]:
    """Five messages, each quoting the whole thread before it, Gmail style."""
    messages: list[dict[str, Any]] = []
    history = ""
    for i, new in enumerate(NEW):
        body = new
        if history:
            quoted = "\n".join(f"> {line}" if line else ">" for line in history.splitlines())
            body = f"{new}\n\nOn Mon, 3 Nov 2026 at 09:{10 + i:02d}, Someone <x@acme.io> wrote:\n{quoted}"
        subject = "Lisbon warehouse" if i == 0 else "Re: Lisbon warehouse"
        messages.append(communication(ws, f"m{i}", body, subject=subject, thread_key="lisbon"))
        history = body
    return messages


async def test_a_thread_embeds_what_each_message_says_new(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    thread = _thread(ws)
    fake_openai.reset()
    await enqueue_all(settings, thread)
    await run_worker_burst(settings)

    whole = sum(count_tokens(m["body"]) + count_tokens(m["subject"]) for m in thread)
    sent = fake_openai.stats()["tokens"]
    assert sent <= 0.4 * whole, (sent, whole)  # >= 60 % fewer on a thread of five
    rows = await db_fetch(
        migrated_dsn,
        "SELECT external_id, body FROM comms.communications WHERE workspace_id=$1",
        ws,
    )
    assert {r["external_id"]: r["body"] for r in rows} == {
        m["external_id"]: m["body"] for m in thread
    }
    quoted_fact = await db_fetch(
        migrated_dsn,
        "SELECT count(*) FROM comms.communications WHERE workspace_id=$1"
        " AND body_tsv @@ plainto_tsquery('english', 'Lisbon warehouse ninth March')",
        ws,
    )
    assert quoted_fact[0][0] == len(thread)  # full-text search still sees the whole bodies

    # the embeddings rank the message that said it first (replies embed only what they
    # add; hybrid's full-text list also finds the replies that quote it)
    hits = await search_workspace(settings, migrated_dsn, ws, FACT, mode="vector")
    assert hits[0]["kind"] == "communication"
    assert hits[0]["content"].startswith("Lisbon warehouse\n"), hits[0]["content"][:80]
