"""Fleet scenarios (issue 20): one account limit spent by 1, 2 and 4 worker processes
(figure 4b), and live items' latency while another workspace backfills (figure 8).

``python -m bench.run --only fleet`` / ``--only fairness``; see bench/README.md.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench import corpus as corpus_mod
from worker.client import connect, enqueue, enqueue_many
from worker.core.payloads import job_id, parse_payload
from worker.core.settings import Settings

LIVE_WS = uuid.UUID("00000000-0000-4000-8000-00000000f1ee")
BACKFILL_WS = uuid.UUID("00000000-0000-4000-8000-0000000bac0f")


async def bench_fleet(
    env: Any, payloads: list[dict[str, Any]], runs: int, tpm: int | None
) -> dict[str, Any]:
    """Figure 4 at 1, 2 and 4 workers, each told the account's limit."""
    from bench.run import bench_ratelimited

    return {
        str(n): await bench_ratelimited(env, payloads, runs, tpm, n_workers=n) for n in (1, 2, 4)
    }


_PHASES = """
SELECT event_type, extract(epoch FROM min(recorded_at)) AS at
FROM ops.events WHERE aggregate_id = $1 GROUP BY event_type
"""


async def _probe(
    conn: asyncpg.Connection,
    redis: Any,
    settings: Settings,
    message: dict[str, Any],
    phases: list[dict[str, float]] | None = None,
) -> float:
    """Enqueue one message as a connector's push would; ms until its ledger row is done.
    ``phases``: gets ms from enqueue to each of the job's events (where the time went)."""
    jid = uuid.UUID(job_id(parse_payload(message)))
    t0, wall = time.perf_counter(), time.time()
    await enqueue(redis, message, settings=settings)
    while await conn.fetchval("SELECT status FROM ops.ingestion_jobs WHERE id=$1", jid) != "done":
        if time.perf_counter() - t0 > 120:
            raise TimeoutError("a live probe was not committed in 120 s")
        await asyncio.sleep(0.002)
    took = (time.perf_counter() - t0) * 1000
    if phases is not None:
        rows = await conn.fetch(_PHASES, jid)
        phases.append({r["event_type"]: round((float(r["at"]) - wall) * 1000) for r in rows})
    return took


async def _done(conn: asyncpg.Connection, ws: uuid.UUID) -> int:
    sql = "SELECT count(*) FROM ops.ingestion_jobs WHERE workspace_id=$1 AND status='done'"
    return int(await conn.fetchval(sql, ws))


def _live(n: int, tag: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {**m, "external_id": f"{tag}-{i}", "sent_at": now}
        for i, m in enumerate(corpus_mod.short_messages(LIVE_WS, n, seed=hash(tag) % 1000))
    ]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def bench_fairness(
    env: Any,
    backfill: int,
    probes: int,
    latency_ms: float,
    gap_s: float = 0.25,
    live_lane: bool = False,
) -> dict[str, Any]:
    """Live e-mails' enqueue-to-committed latency on an idle worker, then while another
    workspace's ``backfill``-item backfill runs on the same worker (figure 8); with
    ``live_lane``, a live-lane worker (``cos-worker live-lane``) runs beside it."""
    from bench.run import log, start_workers, stop_workers, worker_settings

    dsn = await env.fresh_db()
    queue = f"bench:{uuid.uuid4().hex[:8]}"
    env.control(latency_ms=latency_ms, tpm_limit=None)
    procs = start_workers(env, worker_settings(env, dsn, queue), 1, "fairness")
    if live_lane:
        lane = worker_settings(env, dsn, queue, worker_lane="live")
        procs += start_workers(env, lane, 1, "fairness-live")
    conn = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    redis = await connect(env.redis.url)
    settings = Settings(redis_url=env.redis.url, queue_name=queue)
    try:
        for ws, name in ((LIVE_WS, "live"), (BACKFILL_WS, "backfill")):
            await conn.execute(
                "INSERT INTO core.workspaces (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                ws,
                name,
            )
        idle = []
        for m in _live(probes + 3, "idle"):
            idle.append(await _probe(conn, redis, settings, m))
            await asyncio.sleep(gap_s)
        idle = idle[3:]  # the first few warm up connections and the tokenizer
        old = corpus_mod.short_messages(BACKFILL_WS, backfill, seed=5)
        t0 = time.perf_counter()
        await enqueue_many(redis, old, db=pool, settings=settings)
        enqueued_s = time.perf_counter() - t0
        started = min(1000, backfill // 10)
        while await _done(conn, BACKFILL_WS) < started:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.1)  # the backfill is under way
        busy: list[float] = []
        phases: list[dict[str, float]] = []
        for m in _live(probes, "busy"):
            busy.append(await _probe(conn, redis, settings, m, phases))
            await asyncio.sleep(gap_s)
        backfill_done = await _done(conn, BACKFILL_WS)
        # The embedder's own time for the probes' one-input requests (the stand-in computes
        # on the cores the backfill uses; OpenAI would not make them wait for ours).
        requests = env.server_stats()["requests"]
        single = [r["compute_ms"] for r in requests if r.get("inputs") == 1 and "compute_ms" in r]
    finally:
        await redis.aclose()
        await pool.close()
        await conn.close()
        worker_stats = stop_workers(procs)
        env.control(latency_ms=0)
        await env.drop_db(dsn)
    r = {
        "live_lane": live_lane,
        "backfill_items": backfill,
        "backfill_enqueue_s": enqueued_s,
        "backfill_done_after_probes": int(backfill_done),
        "embedder_latency_ms": latency_ms,
        "idle_p50_ms": statistics.median(idle),
        "idle_p95_ms": _p(idle, 0.95),
        "busy_p50_ms": statistics.median(busy),
        "busy_p95_ms": _p(busy, 0.95),
        "idle_samples_ms": idle,
        "busy_samples_ms": busy,
        "busy_phases_ms": phases,  # ms from enqueue to each of the probe's events
        # server-side ms (beyond its injected latency) of one-input requests, idle then busy
        "single_input_server_ms": single,
        # how late the worker's loop woke a 50 ms sleeper over the whole scenario
        "loop_lag": worker_stats[0].get("loop_lag") if worker_stats else None,
        "gc": worker_stats[0].get("gc") if worker_stats else None,
    }
    r["p50_ratio"] = r["busy_p50_ms"] / r["idle_p50_ms"]
    log(
        f"fairness{' (live lane)' if live_lane else ''}: live p50 {r['idle_p50_ms']:.0f} ms idle, {r['busy_p50_ms']:.0f} ms during "
        f"a {backfill}-item backfill (x{r['p50_ratio']:.2f}; p95 {r['busy_p95_ms']:.0f} ms); "
        f"{backfill_done} backfill items done by the last probe"
    )
    return r


def plot_fleet(results: dict[str, Any], path: Any) -> None:
    """Figure 4b: accepted tokens per (sliding) minute against the limit, per worker count."""
    fleet = results.get("fleet")
    if not fleet:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    limit = None
    for n, v in fleet.items():
        run = v["runs"][0]
        limit = run["tpm_limit"]
        xs = [t for t, _ in run["tpm_series"]]
        ys = [tokens / limit for _, tokens in run["tpm_series"]]
        ax.plot(xs, ys, label=f"{n} worker(s): steady {100 * run['tpm_fraction_steady']:.1f} %")
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--", label="account limit")
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("accepted tokens, last 60 s / limit")
    ax.set_title(f"One account limit ({limit:,} TPM), workers sharing one budget")
    ax.set_ylim(0, 1.15)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
