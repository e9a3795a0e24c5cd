"""Page jobs (``jobs.ingest_page``): the items a connector's page creates in the ledger
travel as one arq job, with the real arq Worker, Redis, PostgreSQL and the
OpenAI-compatible server."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_enqueue_many import queued_items
from tests.support.harness import (
    communication,
    db_fetch,
    new_workspace,
    run_worker_burst,
)
from worker import client
from worker.core.payloads import job_id, parse_payload
from worker.db.pool import create_pool
from worker.queue import reconcile


async def _enqueue(settings: Any, dsn: str, payloads: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Through the ledger (the production path); returns the queued jobs and their items."""
    pool = await create_pool(settings, dsn, min_size=1, max_size=2)
    redis = await client.connect(settings.redis_url)
    try:
        await client.enqueue_many(redis, payloads, db=pool, settings=settings)
        return await queued_items(redis, settings.queue_name)
    finally:
        await redis.aclose()
        await pool.close()


async def _rows(dsn: str, ws: Any) -> dict[str, Any]:
    rows = await db_fetch(
        dsn,
        "SELECT id::text, status::text, attempts, arq_job_id FROM "
        "ops.ingestion_jobs WHERE workspace_id = $1",
        ws,
    )
    return {r["id"]: (r["status"], r["attempts"], r["arq_job_id"]) for r in rows}


async def test_a_pages_items_make_one_request_even_when_the_queue_is_empty(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    """The page job is the only job, so the queue probe sees no backlog; its items start
    together but reach the batcher one by one. They still share one request: a page job
    is bulk load (``EmbeddingBatcher.note_bulk``), not 1 ms of linger."""
    settings = settings_factory(embed_batch_linger_ms=1)
    ws = await new_workspace(migrated_dsn)
    mails = [communication(ws, f"p-{i}", f"Page message {i} about the roadmap.") for i in range(40)]
    jobs = await _enqueue(settings, migrated_dsn, mails)
    [(page_id, items)] = jobs.items()
    assert page_id.startswith("page:") and len(items) == 40
    await run_worker_burst(settings)
    rows = await _rows(migrated_dsn, ws)
    assert {r[:2] for r in rows.values()} == {("done", 1)} and len(rows) == 40
    assert {r[2] for r in rows.values()} == {page_id}
    assert fake_openai.stats()["count"] == 1


@pytest.mark.parametrize("handoff_rows", [0, 8192])
async def test_a_page_item_that_fails_transiently_is_retried_as_a_job_of_its_own(
    settings_factory, migrated_dsn, fake_openai, handoff_rows
) -> None:
    """arq never sees an item fail: each retry is a new job ``<item job id>~2``, which the
    item's ledger row names (the reconciler looks for that one), handed off or not."""
    settings = settings_factory(
        embed_max_retries=0, job_max_tries=3, retry_base_delay_s=0.05, handoff_max_rows=handoff_rows
    )
    ws = await new_workspace(migrated_dsn)
    mails = [communication(ws, f"r-{i}", f"Retry message {i} after a 500.") for i in range(3)]
    jobs = await _enqueue(settings, migrated_dsn, mails)
    assert len(jobs) == 1
    fake_openai.push_faults({"status": 500})
    await run_worker_burst(settings)
    rows = await _rows(migrated_dsn, ws)
    assert rows == {jid: ("done", 2, f"{jid}~2") for jid in rows}
    assert fake_openai.stats()["statuses"]["500"] == 1


async def test_the_reconciler_sends_the_items_of_a_lost_page_back_alone(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    """Redis lost the page job: each item is re-enqueued under its own job id (several
    items under the page's id would be refused but one), then ingested."""
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    mails = [communication(ws, f"l-{i}", f"Lost message {i}.") for i in range(4)]
    [(page_id, items)] = (await _enqueue(settings, migrated_dsn, mails)).items()
    pool = await create_pool(settings, migrated_dsn, min_size=1, max_size=2)
    redis = await client.connect(settings.redis_url)
    try:
        # Redis lost the page job (restarted without its data, say)
        await redis.delete(f"arq:job:{page_id}")
        await redis.zrem(settings.queue_name, page_id)
        # (the database is shared with other tests: their leftovers may be re-sent too)
        counts = await reconcile.reconcile(settings, pool, redis, grace_s=0)
        assert counts["requeued"] >= 4
        queued = await queued_items(redis, settings.queue_name)
        assert all(queued.get(jid) == [jid] for jid in items)
    finally:
        await redis.aclose()
        await pool.close()
    await run_worker_burst(settings)
    rows = await _rows(migrated_dsn, ws)
    assert rows == {jid: ("done", 1, jid) for jid in items}


async def test_a_page_job_ends_at_its_byte_cap_and_a_larger_item_travels_alone(
    settings_factory, migrated_dsn
) -> None:
    settings = settings_factory(enqueue_job_bytes=2000)
    ws = await new_workspace(migrated_dsn)
    small = [communication(ws, f"s-{i}", f"Short message {i}.") for i in range(3)]
    big = communication(ws, "big", "A long message. " * 200)
    jobs = await _enqueue(settings, migrated_dsn, [small[0], big, small[1], small[2]])
    ids = {p["external_id"]: job_id(parse_payload(p)) for p in [*small, big]}
    pages = [items for arq_id, items in jobs.items() if arq_id.startswith("page:")]
    singles = {arq_id: items for arq_id, items in jobs.items() if not arq_id.startswith("page:")}
    assert pages == [[ids["s-1"], ids["s-2"]]]
    assert singles == {ids["s-0"]: [ids["s-0"]], ids["big"]: [ids["big"]]}


async def test_invalid_items_of_a_hand_made_page_are_recorded_each_under_its_own_id(
    settings_factory, migrated_dsn
) -> None:
    """The client validates before it sends a page; a page made by hand (or by an older
    client) can still carry bad items: each is recorded as a failed job of its own, with
    the field and reason, and the good item is ingested. A page without items is
    recorded too."""
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    good = communication(ws, "ok-1", "A good message in a hand-made page.")
    bad = [{**communication(ws, f"bad-{i}", "x"), "channel": "pigeon"} for i in range(2)]
    redis = await client.connect(settings.redis_url)
    try:
        await redis.enqueue_job(
            "ingest_page",
            {"items": [*bad, good]},
            _job_id="page:hand",
            _queue_name=settings.queue_name,
        )
        await redis.enqueue_job(
            "ingest_page", {"items": []}, _job_id="page:empty", _queue_name=settings.queue_name
        )
    finally:
        await redis.aclose()
    await run_worker_burst(settings)
    rows = await db_fetch(
        migrated_dsn,
        "SELECT external_id, status::text AS status, "
        "error_field FROM ops.ingestion_jobs WHERE workspace_id = $1 "
        "OR (workspace_id IS NULL AND error_field = 'items')",
        ws,
    )
    got = sorted((r["external_id"] or "", r["status"], r["error_field"] or "") for r in rows)
    assert got == [
        ("", "failed", "items"),
        ("bad-0", "failed", "channel"),
        ("bad-1", "failed", "channel"),
        ("ok-1", "done", ""),
    ]


async def test_a_pages_items_look_up_reusable_vectors_in_one_statement(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    """Messages whose text this workspace already embedded (the same subject and body under
    another id: a forward, a copy in another folder) reuse its vector; the items of a page
    look theirs up together, and only new text reaches the embedder."""
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    first = [communication(ws, f"orig-{i}", f"Original message {i} on pricing.") for i in range(6)]
    await _enqueue(settings, migrated_dsn, first)
    await run_worker_burst(settings)
    inputs_before = fake_openai.stats()["inputs"]
    copies = [{**m, "external_id": f"copy-{i}"} for i, m in enumerate(first)]
    fresh = communication(ws, "fresh", "A message nobody embedded before.")
    await _enqueue(settings, migrated_dsn, [*copies, fresh])
    worker = await run_worker_burst(settings)
    lookups = worker.ctx["runtime"].pipeline.embedder._lookups.stats
    assert lookups.groups == 1 and lookups.largest == 7
    assert fake_openai.stats()["inputs"] == inputs_before + 1  # only the fresh message
    vectors = await db_fetch(
        migrated_dsn,
        "SELECT external_id, embedding FROM comms.communications WHERE workspace_id = $1",
        ws,
    )
    by_id = {r["external_id"]: r["embedding"].to_numpy() for r in vectors}
    for i in range(6):
        assert (by_id[f"copy-{i}"] == by_id[f"orig-{i}"]).all()


async def test_a_failed_page_item_sent_again_runs_again(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    """Items that failed inside their page job (a permanent error on the first try: their
    content_url answered 404) still name the page job; sent again once the content is
    there, each runs as a job of its own (the page is over)."""
    import http.server
    import threading

    state = {"ready": False}

    class Content(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = f"The note behind {self.path}.".encode()
            self.send_response(200 if state["ready"] else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Content)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        settings = settings_factory(fetch_allow_private=True)
        ws = await new_workspace(migrated_dsn)
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        mails = [
            {
                **{k: v for k, v in communication(ws, f"f-{i}", "").items() if k != "body"},
                "content_url": f"{base}/note-{i}.txt",
            }
            for i in range(2)
        ]
        jobs = await _enqueue(settings, migrated_dsn, mails)
        [(page_id, _)] = jobs.items()
        await run_worker_burst(settings)
        rows = await _rows(migrated_dsn, ws)
        assert {(r[0], r[2]) for r in rows.values()} == {("failed", page_id)}, rows
        state["ready"] = True
        again = await _enqueue(settings, migrated_dsn, mails)
        assert sorted(again) == sorted(rows), again  # each alone, under its own job id
        await run_worker_burst(settings)
        assert {r[0] for r in (await _rows(migrated_dsn, ws)).values()} == {"done"}
    finally:
        httpd.shutdown()
        httpd.server_close()
