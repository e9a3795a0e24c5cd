"""Large inline content on the paths that keep the worker's memory bounded: parse inputs
sent to the parsing child through a file (``worker.ingest.parsing``), large bodies written
as plain parameters (``worker.db.store``), the allocator's threshold. Real child
processes, Redis, PostgreSQL and the OpenAI-compatible server."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_page_jobs import _enqueue
from tests.support import documents
from tests.support.harness import communication, db_fetch, new_workspace, run_worker_burst
from worker.core.allocator import set_mmap_threshold
from worker.core.settings import Settings
from worker.db.store import LARGE_BODY_CHARS
from worker.ingest import parsing
from worker.ingest.parsing import ParseError, Parser


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory the worker spills parse inputs to, for this test alone."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _spilled(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith("cos-worker-parse-")]


async def test_large_parse_inputs_reach_the_child_through_a_file_that_is_removed(
    own_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parsing, "SPILL_BYTES", 100_000)  # the PDF compresses well
    html = "<p>The Lisbon office opens in March.</p>" + "<div><b>x</b></div>" * 120_000
    assert len(html) > parsing.SPILL_BYTES
    pdf = documents.pdf([f"Page {i}: the escrow holds 4.2 million. " * 40 for i in range(400)])
    assert len(pdf) > parsing.SPILL_BYTES, len(pdf)
    parser = Parser(Settings())
    try:
        text = await parser.html(html)
        assert text.startswith("The Lisbon office opens in March.")
        document = await parser.document(pdf)
        assert document.type == "pdf" and document.status == "ok", document
        assert "escrow holds 4.2 million" in document.sections[399].text
        assert _spilled(own_tmp) == []
    finally:
        await parser.aclose()


async def test_a_spilled_parse_killed_at_its_timeout_leaves_no_file(own_tmp: Path) -> None:
    # ~630,000 levels of nested tags: no HTML parser is done in 50 ms
    html = "<div><span><b>" * 400_000 + "deep" + "</b></span></div>" * 400_000
    parser = Parser(Settings(parse_timeout_s=0.05))
    try:
        with pytest.raises(ParseError, match="PARSE_TIMEOUT_S"):
            await parser.html(html)
        assert _spilled(own_tmp) == []
    finally:
        await parser.aclose()


async def test_large_bodies_are_stored_whole_on_the_group_and_the_item_paths(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    """Bodies over LARGE_BODY_CHARS leave the set-based upsert empty and are written by a
    statement of their own: every byte must still land, in a page's group write (the
    messages' vectors come back in one response) and in a lone item's."""
    settings = settings_factory(enqueue_job_bytes=64 * 1024 * 1024)
    ws = await new_workspace(migrated_dsn)

    def big(i: int) -> str:
        filler = f"<div data-i='{i}'>é</div>" * (LARGE_BODY_CHARS // 20)
        return f"<p>Message {i}: the audit closes on Friday.</p>{filler}"

    page = [
        {
            **{k: v for k, v in communication(ws, f"big-{i}", "").items() if k != "body"},
            "body_html": big(i),
        }
        for i in range(2)
    ] + [communication(ws, "small", "A short note about the audit.")]
    jobs = await _enqueue(settings, migrated_dsn, page)
    assert len(jobs) == 1  # one page job: the items are embedded and written together
    lone = {
        **{k: v for k, v in communication(ws, "big-lone", "").items() if k != "body"},
        "body_html": big(9),
    }
    await _enqueue(settings, migrated_dsn, [lone])
    await run_worker_burst(settings)

    rows = await db_fetch(
        migrated_dsn,
        "SELECT c.external_id, length(c.body) AS n, md5(c.body) AS h, j.status::text AS status "
        "FROM comms.communications c JOIN ops.ingestion_jobs j ON j.id = c.ingestion_job_id "
        "WHERE c.workspace_id = $1",
        ws,
    )
    want = {p["external_id"]: p.get("body_html") or p["body"] for p in [*page, lone]}
    got = {r["external_id"]: (r["n"], r["h"], r["status"]) for r in rows}
    assert got == {
        ext: (len(body), hashlib.md5(body.encode()).hexdigest(), "done")
        for ext, body in want.items()
    }
    assert all(len(want[f"big-{i}"]) > LARGE_BODY_CHARS for i in range(2))


def test_the_allocator_threshold_is_set_on_glibc_and_left_alone_at_zero() -> None:
    assert set_mmap_threshold(0) is False
    assert set_mmap_threshold(Settings().malloc_mmap_threshold_bytes) is True


async def test_a_large_payload_travels_by_reference_to_its_ledger_row(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    """Over INLINE_PAYLOAD_MAX_BYTES the Redis job names the ledger row; the worker reads
    the payload from there. A hand-made job naming no such row is recorded as invalid."""
    from worker import client
    from worker.db.pool import create_pool
    from worker.queue import keys, serialization

    settings = settings_factory(inline_payload_max_bytes=100_000)
    ws = await new_workspace(migrated_dsn)
    body = "The audit closes on Friday. " * 10_000  # 280,000 characters
    small = communication(ws, "small", "A short note.")
    large = communication(ws, "large", body)
    db = await create_pool(settings, migrated_dsn, min_size=1, max_size=2)
    redis = await client.connect(settings.redis_url)
    try:
        ids = await client.enqueue_many(redis, [small], db=db, settings=settings)
        ids += await client.enqueue_many(redis, [large], db=db, settings=settings)
        jobs = {i: await redis.get(keys.JOB_KEY_PREFIX + i) for i in ids}
        args = {i: serialization.loads(raw)["a"][0] for i, raw in jobs.items()}
        assert args[ids[1]] == {keys.LEDGER_PAYLOAD: ids[1]} and len(jobs[ids[1]]) < 1000
        assert args[ids[0]]["body"] == "A short note."  # small ones travel whole
        ghost = "00000000-0000-4000-8000-00000000beef"
        await redis.enqueue_job(
            keys.INGEST,
            {keys.LEDGER_PAYLOAD: ghost},
            _job_id="ghost",
            _queue_name=settings.queue_name,
        )
    finally:
        await redis.aclose()
        await db.close()
    await run_worker_burst(settings)
    rows = await db_fetch(
        migrated_dsn,
        "SELECT external_id, body FROM comms.communications WHERE workspace_id = $1",
        ws,
    )
    assert {r["external_id"]: r["body"] for r in rows} == {"small": "A short note.", "large": body}
    failed = await db_fetch(
        migrated_dsn,
        "SELECT error_field, last_error FROM ops.ingestion_jobs WHERE arq_job_id = 'ghost'",
    )
    assert [(r["error_field"], r["last_error"]) for r in failed] == [
        ("ledger_payload", "names no ledger row that holds a payload")
    ]


async def test_an_erasure_sweeps_a_queued_job_that_names_its_ledger_row(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    """A by-reference job names no workspace: the erasure knows it by its scope's job ids."""
    from worker import client
    from worker.db.erase import Scope
    from worker.db.pool import create_pool
    from worker.erasure import erase

    settings = settings_factory(inline_payload_max_bytes=10_000)
    gone, kept = await new_workspace(migrated_dsn), await new_workspace(migrated_dsn)
    body = "The board pack for Thursday. " * 1_000
    db = await create_pool(settings, migrated_dsn, min_size=1, max_size=2)
    redis = await client.connect(settings.redis_url)
    try:
        for ws in (gone, kept):
            await client.enqueue(redis, communication(ws, "pack", body), db=db, settings=settings)
        assert await redis.zcard(settings.queue_name) == 2
        report = await erase(settings, migrated_dsn, settings.redis_url, Scope(gone))
        assert report.complete and report.redis.jobs == 1
        [left] = await redis.zrange(settings.queue_name, 0, -1)
    finally:
        await redis.aclose()
        await db.close()
    await run_worker_burst(settings)
    assert (
        await db_fetch(
            migrated_dsn,
            "SELECT external_id FROM comms.communications WHERE workspace_id = $1",
            gone,
        )
        == []
    )
    [row] = await db_fetch(
        migrated_dsn,
        "SELECT id::text, body FROM comms.communications WHERE workspace_id = $1",
        kept,
    )
    assert row["body"] == body and left.decode() != ""


async def test_the_reconciler_sends_a_large_payload_by_reference_too(
    settings_factory: Any, migrated_dsn: str, fake_openai: Any
) -> None:
    """Redis lost a large item's job: the reconciler re-sends it as the client did, naming
    the ledger row, and the worker ingests it from there."""
    from worker import client
    from worker.db.pool import create_pool
    from worker.queue import keys, serialization
    from worker.queue.reconcile import reconcile

    settings = settings_factory(inline_payload_max_bytes=10_000)
    ws = await new_workspace(migrated_dsn)
    body = "The term sheet moves to a 20% option pool. " * 500
    db = await create_pool(settings, migrated_dsn, min_size=1, max_size=2)
    redis = await client.connect(settings.redis_url)
    try:
        jid = await client.enqueue(redis, communication(ws, "lost", body), db=db, settings=settings)
        await redis.delete(settings.queue_name, keys.JOB_KEY_PREFIX + jid)  # Redis lost it
        counts = await reconcile(settings, db, redis, grace_s=0)
        assert counts["requeued"] >= 1, counts  # (the shared database may hold others)
        raw = await redis.get(keys.JOB_KEY_PREFIX + jid)
        assert serialization.loads(raw)["a"][0] == {keys.LEDGER_PAYLOAD: jid}
    finally:
        await redis.aclose()
        await db.close()
    await run_worker_burst(settings)
    [row] = await db_fetch(
        migrated_dsn, "SELECT body FROM comms.communications WHERE workspace_id = $1", ws
    )
    assert row["body"] == body
