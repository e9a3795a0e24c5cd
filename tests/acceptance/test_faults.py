"""Fault injection with real processes and real servers: nothing lost, nothing duplicated.

Every scenario runs real worker processes (``tests.support.worker_proc``: arq's Worker
with ``worker_options``) against a PostgreSQL and a Redis of this module's own (so they
can be restarted and flushed), and the OpenAI-compatible HTTP server with latency and
faults. Inputs go through ``worker.client.enqueue`` (ledger first, then Redis). The end
state is checked by ``assert_exactly_once``: rows, chunk texts, vectors, ledger
statuses, gap-free event versions, one ``content.stored`` per stored job, and the
ledger equal to the projection of its events.

``COS_SOAK_S`` lengthens the soak (default 60 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
import uuid
from typing import Any

import asyncpg
import pytest

from tests.acceptance.conftest import (
    Workers,
    assert_exactly_once,
    ledger_counts,
    wait_until_settled,
    worker_env,
)
from tests.support.harness import communication, media, new_workspace, transcript
from worker import client
from worker.core.payloads import job_id, parse_payload
from worker.core.settings import Settings
from worker.queue import keys

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WORDS = [
    "budget",
    "roadmap",
    "billing",
    "tax",
    "legal",
    "hiring",
    "launch",
    "churn",
    "pricing",
    "invoice",
    "vendor",
    "audit",
    "renewal",
    "security",
    "onboarding",
    "forecast",
    "quota",
]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


def make_items(ws: uuid.UUID, n: int, tag: str, seed: int = 0) -> list[dict[str, Any]]:
    """A mix of kinds; some long enough for several chunks."""
    rng = random.Random(f"{tag}:{seed}")
    out: list[dict[str, Any]] = []
    for i in range(n):
        ext = f"{tag}-{i}"
        if i % 3 == 0:
            turns = [
                (rng.choice(["Ann", "Bo", "Cy"]), k * 3000, k * 3000 + 2500, sentence(rng, 12))
                for k in range(rng.randint(2, 6))
            ]
            out.append(transcript(ws, ext, turns))
        elif i % 3 == 1:
            segs = [(k * 4000, k * 4000 + 3500, sentence(rng, 10)) for k in range(3)]
            if i % 2:
                segs.append((12000, 20000, sentence(rng, 700)))  # ~2 chunks more
            out.append(media(ws, ext, segs))
        else:
            out.append(
                communication(
                    ws, ext, sentence(rng, rng.choice([8, 30])), thread_key=f"{tag}-t{i % 4}"
                )
            )
    return out


class Driver:
    """The test's side: enqueue through the client (ledger first), trigger reconciles."""

    def __init__(self, dsn: str, redis_url: str, queue: str) -> None:
        self.dsn, self.redis_url = dsn, redis_url
        self.settings = Settings(queue_name=queue, database_url=dsn, redis_url=redis_url)
        self.pool: asyncpg.Pool | None = None
        self.redis: Any = None

    async def __aenter__(self) -> Driver:
        self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        self.redis = await client.connect(self.redis_url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.close(), 5)

    async def enqueue(self, payload: dict[str, Any], *, tries: int = 40) -> str:
        """What a careful connector does: retry while PostgreSQL or Redis is away."""
        for attempt in range(tries):
            try:
                return await client.enqueue(
                    self.redis, payload, db=self.pool, settings=self.settings
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                if attempt == tries - 1:
                    raise
                await asyncio.sleep(0.25)
        raise AssertionError("unreachable")

    async def enqueue_raw(self, payload: dict[str, Any], arq_id: str) -> bool:
        """Straight to Redis (a connector in another language), under ``arq_id``."""
        job = await self.redis.enqueue_job(
            keys.INGEST, payload, _job_id=arq_id, _queue_name=self.settings.queue_name
        )
        return job is not None

    async def trigger_reconcile(self) -> None:
        """Run a reconciler pass inside a worker, as its cron would (best effort)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.redis.enqueue_job(keys.RECONCILE, _queue_name=self.settings.queue_name), 3
            )


def _queue() -> str:
    return f"faults:{uuid.uuid4().hex[:8]}"


async def _wait_for(
    predicate: Any, within: float, what: str, supervised: Workers | None = None
) -> None:
    """Poll ``predicate``; with ``supervised``, restart exited workers meanwhile, as a
    process manager would, and put their log tail in the failure."""
    deadline = time.monotonic() + within
    restarted = 0
    while time.monotonic() < deadline:
        if await predicate():
            return
        if supervised is not None:
            restarted += supervised.supervise()
        await asyncio.sleep(0.05)
    logs = (
        ""
        if supervised is None
        else (f" ({restarted} worker restarts); worker logs:\n{supervised.logs()[-4000:]}")
    )
    raise AssertionError(f"timed out waiting for {what}{logs}")


async def test_sigkill_mid_batch_and_four_workers_with_duplicates(
    fresh_db, own_redis, api, workers_factory
) -> None:
    """(1) SIGKILL mid-batch, then (5) four workers with every payload enqueued twice."""
    api.reset()
    api.configure(latency_ms=300, tpm_limit=None, rpm_limit=None)
    queue = _queue()
    ws = await new_workspace(fresh_db)
    items = make_items(ws, 48, "kill")
    # Each delivery of a job counts an attempt: the kill, the re-delivery, the duplicates
    # under random arq ids and a run cut at the short job timeout on a loaded machine add
    # up. This test is about exactly-once, not dead-lettering (test_poison_* is): give
    # the items room so that a slow machine cannot turn one into a dead letter.
    workers = workers_factory(worker_env(fresh_db, own_redis.url, api, queue, job_max_tries=20))
    async with Driver(fresh_db, own_redis.url, queue) as d:
        [victim] = workers.start(1)
        for p in items:
            await d.enqueue(p)

        async def running() -> bool:
            return (await ledger_counts(fresh_db)).get("running", 0) >= 3

        await _wait_for(running, 30, "the first worker to be mid-batch")
        workers.sigkill(victim)
        orphans = {
            r[0]
            for r in await d.pool.fetch(
                "SELECT id FROM ops.ingestion_jobs WHERE status = 'running'"
            )
        }
        assert orphans, "the kill hit no in-flight job"

        workers.start(4)
        # every payload a second time: the client's deterministic id (arq refuses it while
        # it knows the job; the ledger makes a later one a no-op) ...
        for p in items:
            await d.enqueue(p)
        # ... and half of them a third time under a random arq id, which arq cannot
        # de-duplicate: two deliveries of one job run concurrently on different workers.
        for p in items[::2]:
            assert await d.enqueue_raw(p, f"dup-{uuid.uuid4().hex}")

        # The killed worker's jobs keep their arq in-progress keys: the reconciler (its
        # cron, triggered here) releases them once they are older than any live run.
        async def tick() -> None:
            await d.trigger_reconcile()

        await wait_until_settled(fresh_db, len(items), within=90, on_tick=tick, workers=workers)
        await asyncio.sleep(1.0)  # let stragglers (the duplicates) finish as no-ops
        await wait_until_settled(fresh_db, len(items), within=30, workers=workers)
        rows = await d.pool.fetch(
            "SELECT id, attempts FROM ops.ingestion_jobs WHERE id = ANY($1::uuid[])",
            list(orphans),
        )
        assert all(r["attempts"] >= 2 for r in rows), "killed jobs were not run again"
    workers.stop_all()
    await assert_exactly_once(fresh_db, ws, items)


async def test_redis_restart_and_flush_are_recovered_from_the_ledger(
    fresh_db, own_redis, api, workers_factory
) -> None:
    """(2) Redis restarted mid-run (AOF keeps the queue), then flushed mid-run: the
    reconciler re-enqueues every lost job from the ledger."""
    api.reset()
    api.configure(latency_ms=500, tpm_limit=None, rpm_limit=None)
    queue = _queue()
    ws = await new_workspace(fresh_db)
    items = make_items(ws, 60, "redis")
    # Few jobs in flight (3 slots, at most 2 handed-off rows per worker), so that most
    # are still in Redis when it is flushed; handed-off jobs lose their markers too.
    workers = workers_factory(
        worker_env(fresh_db, own_redis.url, api, queue, worker_concurrency=3, handoff_max_rows=2)
    )
    async with Driver(fresh_db, own_redis.url, queue) as d:
        for p in items:
            await d.enqueue(p)
        workers.start(2)

        async def some_done() -> bool:
            return (await ledger_counts(fresh_db)).get("done", 0) >= 3

        await _wait_for(some_done, 30, "first jobs done")
        own_redis.stop()
        await asyncio.sleep(1.0)
        own_redis.start()

        async def more_done() -> bool:
            return (await ledger_counts(fresh_db)).get("done", 0) >= 15

        # arq's poll loop may die on the outage (see Workers.supervise): supervised.
        await _wait_for(more_done, 30, "progress after the Redis restart", workers)
        workers.supervise()
        await d.redis.flushall()
        lost = await ledger_counts(fresh_db)
        assert lost.get("queued", 0) + lost.get("running", 0) > 0, lost

        async def tick() -> None:
            workers.supervise()
            await d.trigger_reconcile()

        await wait_until_settled(fresh_db, len(items), within=90, on_tick=tick, workers=workers)
        requeued = await d.pool.fetchval(
            "SELECT count(*) FROM ops.events WHERE event_type = 'job.requeued'"
        )
        assert requeued > 0
    workers.stop_all()
    await assert_exactly_once(fresh_db, ws, items)


async def test_postgres_restart_mid_run(fresh_db, own_pg, own_redis, api, workers_factory) -> None:
    """(3) PostgreSQL restarted mid-run: in-flight items retry, nothing half-written, the
    workers' pools reconnect (new work after the restart is processed too)."""
    api.reset()
    api.configure(latency_ms=300, tpm_limit=None, rpm_limit=None)
    queue = _queue()
    ws = await new_workspace(fresh_db)
    items = make_items(ws, 45, "pg")
    workers = workers_factory(worker_env(fresh_db, own_redis.url, api, queue, worker_concurrency=4))
    async with Driver(fresh_db, own_redis.url, queue) as d:
        for p in items:
            await d.enqueue(p)
        workers.start(2)

        async def busy() -> bool:
            c = await ledger_counts(fresh_db)
            return c.get("done", 0) >= 3 and c.get("running", 0) >= 2

        await _wait_for(busy, 30, "jobs in flight")
        await asyncio.to_thread(own_pg.restart)
        await d.pool.expire_connections()
        later = make_items(ws, 6, "pg-after", seed=1)
        for p in later:
            await d.enqueue(p)

        async def tick() -> None:
            await d.trigger_reconcile()

        await wait_until_settled(
            fresh_db, len(items) + len(later), within=90, on_tick=tick, workers=workers
        )
        assert len(workers.alive()) == 2, "a worker died with the PostgreSQL restart"
    workers.stop_all()
    await assert_exactly_once(fresh_db, ws, items + later)


async def test_embedding_api_faults(fresh_db, own_redis, api, workers_factory) -> None:
    """(4) 429 bursts with Retry-After, 500s, timeouts, malformed JSON are retried; wrong
    vector count and wrong dimension are never stored and dead-letter with the reason."""
    api.reset()
    api.configure(latency_ms=20, timeout_sleep_s=3.0, tpm_limit=None, rpm_limit=None)
    queue = _queue()
    ws = await new_workspace(fresh_db)
    items = make_items(ws, 24, "api")
    api.push_faults(
        *[{"status": 429, "retry_after": 0.3}] * 4,
        {"status": 500},
        {"status": 503},
        {"timeout": True},
        {"malformed": True},
        {"status": 429, "retry_after": 0.2},
        {"timeout": True},
        {"malformed": True},
        {"status": 502},
    )
    # Retry-After waits, timeouts and backoff add up: give a job more time than elsewhere
    # (a job arq times out stays "running" in the ledger until the reconciler runs).
    workers = workers_factory(worker_env(fresh_db, own_redis.url, api, queue, job_timeout_s=20))
    async with Driver(fresh_db, own_redis.url, queue) as d:
        for p in items:
            await d.enqueue(p)
        workers.start(2)

        async def tick() -> None:
            await d.trigger_reconcile()

        await wait_until_settled(fresh_db, len(items), within=90, on_tick=tick, workers=workers)
        statuses = api.stats()["statuses"]
        for code in ("429", "500", "503", "0"):
            assert statuses.get(code), (code, statuses)
    workers.stop_all()
    await assert_exactly_once(fresh_db, ws, items)

    # Persistent wrong count / wrong dimension: dead-lettered after the configured tries.
    for fault, word in (("wrong_dim", "dimension"), ("wrong_count", "embeddings, got")):
        api.reset()
        api.push_faults(*[{fault: True}] * 60)
        queue = _queue()
        bad = make_items(ws, 3, f"bad-{fault}")
        strict = workers_factory(
            worker_env(fresh_db, own_redis.url, api, queue, job_max_tries=2, embed_max_retries=1)
        )
        async with Driver(fresh_db, own_redis.url, queue) as d:
            for p in bad:
                await d.enqueue(p)
            strict.start(1)
            ids = [uuid.UUID(job_id(parse_payload(p))) for p in bad]

            async def dead(ids: list[uuid.UUID] = ids) -> bool:
                n = await d.pool.fetchval(
                    "SELECT count(*) FROM ops.ingestion_jobs WHERE "
                    "id = ANY($1::uuid[]) AND status = 'failed'",
                    ids,
                )
                return n == len(ids)

            await _wait_for(dead, 60, f"{fault} jobs to dead-letter")
            rows = await d.pool.fetch(
                "SELECT last_error, attempts FROM ops.ingestion_jobs WHERE id = ANY($1::uuid[])",
                ids,
            )
            assert all(word in r["last_error"].lower() and r["attempts"] == 2 for r in rows), [
                dict(r) for r in rows
            ]
            failed_events = await d.pool.fetchval(
                "SELECT count(*) FROM ops.events WHERE aggregate_id = ANY($1::uuid[]) "
                "AND event_type = 'job.failed'",
                ids,
            )
            assert failed_events == len(ids)
            for p in bad:
                table = {
                    "communication": "comms.communications",
                    "transcript": "meetings.transcripts",
                    "media": "media.assets",
                }[p["kind"]]
                n = await d.pool.fetchval(
                    f"SELECT count(*) FROM {table} WHERE workspace_id=$1 AND external_id=$2",
                    ws,
                    p["external_id"],
                )
                assert n == 0, "a wrong response was stored"
        strict.stop_all()
    api.reset()


async def test_soak_with_mixed_faults(fresh_db, own_pg, own_redis, api, workers_factory) -> None:
    """(6) A bounded soak: a stream of new, repeated and changed items while workers are
    SIGKILLed, Redis restarts and is flushed, PostgreSQL restarts and the API misbehaves.
    The final state equals the one computed from the inputs."""
    soak_s = float(os.environ.get("COS_SOAK_S", "60"))
    api.reset()
    api.configure(latency_ms=150, timeout_sleep_s=3.0, tpm_limit=None, rpm_limit=None)
    queue = _queue()
    ws = await new_workspace(fresh_db)
    rng = random.Random(6)
    workers = workers_factory(worker_env(fresh_db, own_redis.url, api, queue, worker_concurrency=6))
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    superseded: list[dict[str, Any]] = []
    chaos = itertools.cycle(["kill", "api", "redis_restart", "flush", "pg_restart", "kill"])
    done_chaos: list[str] = []
    async with Driver(fresh_db, own_redis.url, queue) as d:
        workers.start(3)
        started = time.monotonic()
        next_chaos = started + 6
        restarted = 0
        next_reconcile = started + 3
        batch = 0
        while time.monotonic() - started < soak_s:
            batch += 1
            for p in make_items(ws, 6, f"soak{batch}", seed=batch):
                latest[(p["kind"], p["external_id"])] = p
                await d.enqueue(p)
            # re-send an old item unchanged, and change another one (a new version)
            if len(latest) > 12:
                key = rng.choice(sorted(latest))
                await d.enqueue(latest[key])
                key = rng.choice(sorted(latest))
                old = latest[key]
                if old["kind"] == "communication":
                    new = {**old, "body": old["body"] + f" (edit {batch})"}
                else:
                    segs = [dict(s) for s in old["segments"]]
                    segs[0]["text"] += f" (edit {batch})"
                    new = {**old, "segments": segs}
                superseded.append(old)
                latest[key] = new
                await d.enqueue(new)
            now = time.monotonic()
            if now >= next_chaos:
                action = next(chaos)
                done_chaos.append(action)
                if action == "kill" and workers.alive():
                    victim = rng.choice(workers.alive())
                    workers.sigkill(victim)
                    victim._seen = 1  # type: ignore[attr-defined]
                    workers.start(1)
                elif action == "api":
                    api.push_faults(
                        {"status": 429, "retry_after": 0.3},
                        {"status": 500},
                        {"timeout": True},
                        {"malformed": True},
                        {"status": 429, "retry_after": 0.1},
                    )
                elif action == "redis_restart":
                    own_redis.stop()
                    await asyncio.sleep(0.5)
                    own_redis.start()
                elif action == "flush":
                    await d.redis.flushall()
                elif action == "pg_restart":
                    await asyncio.to_thread(own_pg.restart)
                    await d.pool.expire_connections()
                next_chaos = time.monotonic() + max(4.0, soak_s / 12)
            if now >= next_reconcile:
                restarted += workers.supervise()
                await d.trigger_reconcile()
                next_reconcile = now + 3
            await asyncio.sleep(0.4)

        async def tick() -> None:
            workers.supervise()
            await d.trigger_reconcile()

        final = list(latest.values())
        jobs = {job_id(parse_payload(p)) for p in final + superseded}
        await wait_until_settled(fresh_db, len(jobs), within=120, on_tick=tick, workers=workers)
    workers.stop_all()
    assert {"kill", "api", "redis_restart", "flush", "pg_restart"} <= set(done_chaos), done_chaos
    # superseded versions that equal a final one (re-sent unchanged) are the same job
    final_ids = {job_id(parse_payload(p)) for p in final}
    older = [p for p in superseded if job_id(parse_payload(p)) not in final_ids]
    await assert_exactly_once(fresh_db, ws, final, older)
