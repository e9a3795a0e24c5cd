"""``cos-worker demo``: the whole path on embedded defaults, in one command.

Starts (or reuses) the embedded PostgreSQL and Redis, migrates, enqueues the bundled
sample corpus (an email thread, a chat message, a meeting transcript, a product demo
video transcript) plus one insight, runs an in-process arq worker until the queue
drains, then prints what was written and answers a semantic search.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.table import Table

from worker.core.settings import Settings
from worker.db.inspect import embedded_tokens, workspace_counts
from worker.db.migrate import Migrator
from worker.db.pool import connect, create_pool
from worker.db.search import describe_place, search, snippet
from worker.db.seed import seed_insight, seed_workspace
from worker.queue import client, keys
from worker.queue.app import run_bursts
from worker.servers.services import Services

SAMPLE = Path(__file__).parent / "sample" / "corpus.jsonl"
DEMO_WORKSPACE = UUID("5a3f0000-0000-4000-8000-000000000001")
DEMO_WORKSPACE_NAME = "Acme (demo)"
DEMO_QUESTION = "what option pool did we propose to Northwind?"
#: Answered only by the PDF attached to the HTML reply msg-004.eml.
DEMO_DOCUMENT_QUESTION = "when do drag-along rights apply to a sale of the company?"
DEMO_INSIGHT = (
    "decision",
    "Series A negotiation: push for a 7% post-money option pool",
    "Northwind offered a $48M pre-money valuation with a 10% pre-money pool refresh; "
    "the team agreed to counter with 7% post-money and accept one board seat.",
)


async def _drain(settings: Settings, services: Services, redis_url: str) -> None:
    """Run in-process arq workers until the queue is empty."""
    await run_bursts(
        settings.model_copy(update={"redis_url": redis_url}),
        {"settings": settings, "services": services},
    )


def load_corpus() -> list[dict[str, Any]]:
    """The sample payloads; a raw e-mail's ``raw_file`` (an ``.eml`` beside the corpus, kept
    readable there) is sent as base64 ``raw``, as a connector would."""
    items = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    for item in items:
        if (name := item.pop("raw_file", None)) is not None:
            item["raw"] = base64.b64encode((SAMPLE.parent / name).read_bytes()).decode()
    return items


async def run_demo(settings: Settings, console: Console | None = None) -> dict[str, Any]:
    """Run the demo; returns the figures it printed (the tests read them)."""
    console = console or Console()
    started = time.perf_counter()
    services = Services(settings)
    try:
        dsn = await services.ensure_database()
        redis_url = await services.ensure_redis()
        applied = await Migrator(dsn, settings.migrations_dir).up()
        console.print(f"[bold]database[/] ready ({len(applied)} migrations applied now)")
        conn = await connect(settings, dsn)
        try:
            await seed_workspace(conn, DEMO_WORKSPACE, DEMO_WORKSPACE_NAME)
            await seed_insight(conn, DEMO_WORKSPACE, *DEMO_INSIGHT)
            tokens_before = await embedded_tokens(conn, DEMO_WORKSPACE)
        finally:
            await conn.close()
        pool = await create_pool(settings, dsn, min_size=1, max_size=2)
        redis = await client.connect(redis_url)
        corpus = load_corpus()
        for payload in corpus:
            await client.enqueue(redis, payload, db=pool, settings=settings)
        console.print(f"[bold]enqueued[/] {len(corpus)} items from {SAMPLE.name}")
        ingest_started = time.perf_counter()
        await _drain(settings, services, redis_url)
        # Contacts exist once ingestion is done: embed their profiles (and the insight).
        await redis.enqueue_job(keys.EMBED_PENDING, _queue_name=settings.queue_name)
        await _drain(settings, services, redis_url)
        ingest_s = time.perf_counter() - ingest_started
        counts = await workspace_counts(pool, DEMO_WORKSPACE)
        counts["tokens embedded (this run)"] = (
            await embedded_tokens(pool, DEMO_WORKSPACE) - tokens_before
        )
        await redis.aclose()
        table = Table(title=f"written in workspace {DEMO_WORKSPACE}")
        table.add_column("what")
        table.add_column("rows", justify="right")
        for name, value in counts.items():
            table.add_row(name, str(value))
        console.print(table)
        hits = await search(settings, pool, DEMO_WORKSPACE, DEMO_QUESTION, limit=3)
        document_hits = await search(settings, pool, DEMO_WORKSPACE, DEMO_DOCUMENT_QUESTION, 1)
        await pool.close()
        for question, found in ((DEMO_QUESTION, hits), (DEMO_DOCUMENT_QUESTION, document_hits)):
            console.print(f"[bold]search[/] {question!r}")
            for hit in found:
                where = describe_place(hit)
                console.print(
                    f"  {hit['distance']:.3f}  ({hit['kind']}{where}) "
                    f"{snippet(hit['content'], question)!r}",
                    markup=False,
                )
        total_s = time.perf_counter() - started
        console.print(f"ingest {ingest_s:.2f}s, total {total_s:.2f}s")
        return {
            "counts": counts,
            "hits": hits,
            "document_hits": document_hits,
            "ingest_s": ingest_s,
            "total_s": total_s,
        }
    finally:
        await services.close()
