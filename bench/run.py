"""The ingestion benchmark: one command, seven figures.

    python -m bench.run --size small|medium|large [--only NAME ...] [--runs N]

NAME is one of: throughput (figures 1-3: end-to-end vs the ceiling, requests vs
minimum, re-ingest), ratelimited (4), memory (5), latency (6), scaleout (7); and by
name: memory-backfill (5b: one worker's peak RSS over the whole corpus), fleet,
fairness.

It starts its own servers in a temp dir: embedded PostgreSQL 18 + pgvector (fsync ON,
synchronous_commit ON: the shipped defaults), redis-server, and the OpenAI-compatible
embeddings server from tests/support as a subprocess (counting tokens with cl100k, as
OpenAI does). Workers are separate processes running the real arq Worker built from
``worker.queue.app.worker_options``. Each figure is the median over ``--runs`` runs; every run
gets a fresh database cloned from a migrated template. Results: bench/results/latest.json,
bench/results/throughput.png and bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import io
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench import corpus as corpus_mod
from worker import client
from worker.core.settings import REPO_ROOT
from worker.db.migrate import Migrator
from worker.servers.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WS = uuid.UUID("00000000-0000-4000-8000-0000000000b1")
MAX_INPUTS, MAX_REQUEST_TOKENS = 2048, 300_000  # OpenAI per-request limits
# Tables the ingest writes (FK order), copied for the ceiling. ops.* bookkeeping excluded.
CONTENT_TABLES = [
    "core.contacts",
    "comms.threads",
    "comms.communications",
    "comms.participants",
    "meetings.meetings",
    "meetings.participants",
    "meetings.transcripts",
    "meetings.transcript_chunks",
    "media.assets",
    "media.media_chunks",
]
VECTOR_ROWS_SQL = """
SELECT (SELECT count(*) FROM comms.communications WHERE embedding IS NOT NULL)
     + (SELECT count(*) FROM meetings.transcript_chunks)
     + (SELECT count(*) FROM media.media_chunks)
"""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- servers
@dataclass
class Env:
    root: Path
    pg: EmbeddedPostgres
    redis: EmbeddedRedis
    openai_url: str
    openai_proc: subprocess.Popen[bytes]
    template: str = "bench_tpl"
    n_db: int = 0

    @classmethod
    def start(cls, keep: bool = False) -> Env:
        root = Path(tempfile.mkdtemp(prefix="cos-bench-"))
        log(f"servers in {root} (PostgreSQL fsync=on, synchronous_commit=on)")
        env_fsync = os.environ.pop("COS_PG_FSYNC_OFF", None)
        if env_fsync:
            log("note: COS_PG_FSYNC_OFF was set; ignored - the benchmark runs with fsync on")
        pg = EmbeddedPostgres(root / "pg", extra_conf={"fsync": "on"}).start()
        redis = EmbeddedRedis(root / "redis").start()
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.openai_server",
                "--port",
                str(port),
                "--tokenizer",
                "cl100k",
                "--procs",
                "2",
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # "listening on ..."
        return cls(root, pg, redis, f"http://127.0.0.1:{port}", proc)

    async def _migrate_template(self) -> None:
        conn = await asyncpg.connect(self.pg.dsn())
        await conn.execute(f'CREATE DATABASE "{self.template}"')
        await conn.close()
        await Migrator(self.pg.dsn(self.template), REPO_ROOT / "migrations").up()

    async def fresh_db(self) -> str:
        self.n_db += 1
        name = f"b{self.n_db}_{uuid.uuid4().hex[:6]}"
        conn = await asyncpg.connect(self.pg.dsn())
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        await conn.close()
        dsn = self.pg.dsn(name)
        conn = await asyncpg.connect(dsn)
        await conn.execute("INSERT INTO core.workspaces (id, name) VALUES ($1, 'bench')", WS)
        await conn.close()
        return dsn

    async def drop_db(self, dsn: str) -> None:
        conn = await asyncpg.connect(self.pg.dsn())
        await conn.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
        await conn.close()

    def control(self, **cfg: Any) -> None:
        req = urllib.request.Request(
            self.openai_url + "/_control",
            json.dumps(cfg).encode(),
            {"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=10).read()

    def server_stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.openai_url + "/_stats", timeout=30) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def stop(self, keep: bool = False) -> None:
        self.openai_proc.terminate()
        self.openai_proc.wait(10)
        self.redis.stop()
        self.pg.stop(mode="fast")
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------- workers
@dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    ready: Path
    stats: Path

    def result(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.stats.read_text())
            return data
        except (OSError, ValueError):
            return {}


def worker_settings(env: Env, dsn: str, queue: str, **overrides: Any) -> dict[str, Any]:
    return {
        "database_url": dsn,
        "redis_url": env.redis.url,
        "openai_base_url": env.openai_url + "/v1",
        "openai_api_key": "sk-bench-not-a-real-key-1234567890",
        "embedding_provider": "openai",
        "queue_name": queue,
        "log_format": "json",
        "fetch_allow_private": True,
        # The local server has no limit unless a scenario sets one: give the worker an
        # OpenAI tier-5 budget (10M TPM, 10k RPM for text-embedding-3-small) so its own
        # limiter does not stand in for the embedder.
        "embed_tokens_per_minute": 10_000_000,
        "embed_requests_per_minute": 10_000,
        **overrides,
    }


def start_workers(env: Env, settings: dict[str, Any], n: int, tag: str) -> list[WorkerProc]:
    procs = []
    for i in range(n):
        d = env.root / "workers" / f"{tag}-{i}-{uuid.uuid4().hex[:4]}"
        d.mkdir(parents=True)
        out = open(d / "worker.log", "wb")  # noqa: SIM115 - lives as long as the process
        # BENCH_MEMRAY=DIR: every worker under memray (``memray tree DIR/TAG-I.bin``: the
        # allocations alive at its high-water mark, by call stack).
        memray = os.environ.get("BENCH_MEMRAY")
        wrap = (
            ["-m", "memray", "run", "-q", "-f", "-o", str(Path(memray) / f"{tag}-{i}.bin")]
            if memray
            else []
        )
        if memray:
            Path(memray).mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [
                sys.executable,
                *wrap,
                "-m",
                "bench.worker_proc",
                json.dumps(settings, default=str),
                str(d / "ready"),
                str(d / "stats.json"),
            ],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        procs.append(WorkerProc(proc, d / "ready", d / "stats.json"))
        if os.environ.get("BENCH_PYSPY"):  # profile every worker: collapsed stacks per process
            prof = Path(os.environ["BENCH_PYSPY"]) / f"{tag}-{i}.txt"
            prof.parent.mkdir(parents=True, exist_ok=True)
            subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "100",
                    "--nonblocking",
                    "-o",
                    str(prof),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
    deadline = time.monotonic() + 120
    while not all(p.ready.exists() for p in procs):
        if any(p.proc.poll() is not None for p in procs) or time.monotonic() > deadline:
            stop_workers(procs)
            raise RuntimeError(f"worker did not start; see {env.root}/workers")
        time.sleep(0.05)
    return procs


def stop_workers(procs: list[WorkerProc]) -> list[dict[str, Any]]:
    for p in procs:
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.proc.wait(60)
        except subprocess.TimeoutExpired:
            p.proc.kill()
    return [p.result() for p in procs]


# ----------------------------------------------------------------------------- scenarios
PRODUCERS = 8
PAGE_ITEMS = 50  # a connector pushes what one page of its source API returned


@dataclass
class Producer:
    """A connector's clients (Redis, and the ledger's pool for the production path), opened
    before the clock starts: a connector holds its connections, as the ceiling's COPY
    connection is open before its clock starts. Opening them inside the timed window
    added ~30-50 ms (4 pool connections, each with its codec lookups) to figure 1."""

    redis: Any
    pool: Any
    settings: Any

    @classmethod
    async def open(cls, env: Env, queue: str, dsn: str | None = None) -> Producer:
        from worker.core.settings import Settings
        from worker.db.pool import create_pool

        settings = Settings(redis_url=env.redis.url, queue_name=queue, database_url=dsn)
        redis = await client.connect(env.redis.url)
        pool = (
            await create_pool(settings, dsn, min_size=PRODUCERS, max_size=PRODUCERS)
            if dsn
            else None
        )
        return cls(redis, pool, settings)

    async def enqueue(self, payloads: list[dict[str, Any]]) -> None:
        """Enqueue as connectors do: PRODUCERS at once, each pushing pages of PAGE_ITEMS
        with ``client.enqueue_many``; with a pool through the ledger first (the production
        path: a finished job re-sent is a no-op recorded by the client)."""
        pages = iter([payloads[i : i + PAGE_ITEMS] for i in range(0, len(payloads), PAGE_ITEMS)])

        async def producer() -> None:
            for page in pages:
                results = await client.enqueue_many(
                    self.redis, page, settings=self.settings, db=self.pool
                )
                bad = [r for r in results if not isinstance(r, str)]
                if bad:
                    raise RuntimeError(f"the corpus has invalid items: {bad[:3]}")

        await asyncio.gather(*(producer() for _ in range(PRODUCERS)))

    async def close(self) -> None:
        await self.redis.aclose()
        if self.pool is not None:
            await self.pool.close()


async def enqueue(
    env: Env, payloads: list[dict[str, Any]], queue: str, dsn: str | None = None
) -> None:
    """``Producer.enqueue`` with clients of its own (untimed uses)."""
    producer = await Producer.open(env, queue, dsn)
    try:
        await producer.enqueue(payloads)
    finally:
        await producer.close()


async def clear_arq_results(env: Env) -> None:
    """Forget finished arq jobs (as after keep_result expires) so ids can be re-enqueued."""
    redis = await client.connect(env.redis.url)
    try:
        keys = [k async for k in redis.scan_iter(match="arq:result:*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@dataclass
class IngestRun:
    seconds: float
    items: int
    vector_rows: int
    series: list[tuple[float, int, int]] = field(default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)
    ledger: dict[str, Any] = field(default_factory=dict)
    enqueue_seconds: float | None = None  # when the producers had enqueued everything


async def wait_done(
    dsn: str,
    t0: float,
    expected: int,
    *,
    events: str | None = None,
    timeout: float = 3600,
    sample_s: float = 0.02,
    series_s: float = 0.1,
) -> tuple[float, list[Any]]:
    """Poll until ``expected`` jobs are terminal (or ``events`` events exist); returns
    (seconds from t0 to the last commit, [(t, items, vector_rows)]).

    The end is seen within ``sample_s`` of the last commit (every 0.1 s added ~50 ms on
    average, ~1.5 % of small's ingest); the vector-row series (the plot) is sampled every
    ``series_s`` and at the end."""
    conn = await asyncpg.connect(dsn)
    series: list[Any] = []
    sampled = -math.inf
    try:
        while True:
            if events:
                n = await conn.fetchval(
                    "SELECT count(*) FROM ops.events WHERE event_type=$1", events
                )
            else:
                n = await conn.fetchval(
                    "SELECT count(*) FROM ops.ingestion_jobs "
                    "WHERE status IN ('done','failed','skipped')"
                )
            now = time.time()
            # (counting vector rows is only for the ingest's series: not while waiting for events)
            if events is None and (n >= expected or now - sampled >= series_s):
                rows = await conn.fetchval(VECTOR_ROWS_SQL)
                series.append((round(now - t0, 3), int(n), int(rows)))
                sampled = now
            elif events is not None:
                series.append((round(now - t0, 3), int(n), 0))
            if n >= expected:
                break
            if now - t0 > timeout:
                raise TimeoutError(f"only {n}/{expected} jobs finished in {timeout}s")
            await asyncio.sleep(sample_s)
        # When the last commit became visible (ledger finished_at is its transaction's
        # *start*, which for a big COPY is minutes before the commit).
        return series[-1][0], series
    finally:
        await conn.close()


async def ledger_summary(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("""
            SELECT count(*) FILTER (WHERE status='done') AS done,
                   count(*) FILTER (WHERE status='failed') AS failed,
                   coalesce(sum((result->>'embedded_tokens')::bigint), 0) AS embedded_tokens,
                   coalesce(sum((result->>'embedded_chunks')::bigint), 0) AS embedded_chunks,
                   coalesce(sum((result->>'chunks')::bigint), 0) AS chunks
            FROM ops.ingestion_jobs""")
        return dict(row)
    finally:
        await conn.close()


def summarize_server(stats: dict[str, Any]) -> dict[str, Any]:
    reqs = stats["requests"]
    ok = [r for r in reqs if r["status"] == 200]
    return {
        "requests": len(reqs),
        "ok": len(ok),
        "status_429": sum(1 for r in reqs if r["status"] == 429),
        "inputs": sum(r["inputs"] for r in ok),
        "tokens": sum(r["tokens"] for r in ok),
        "accepted": [(r["t"], r["tokens"]) for r in ok],
        # the stand-in's own time per answered request, without its injected latency
        "compute_ms": [r.get("compute_ms") for r in ok],
    }


async def ingest(
    env: Env,
    dsn: str,
    payloads: list[dict[str, Any]],
    n_workers: int = 1,
    tag: str = "run",
    **overrides: Any,
) -> IngestRun:
    await clear_arq_results(env)  # the same job ids were used by the previous run
    enqueued: list[float] = []  # when the producers were done
    queue = f"bench:{uuid.uuid4().hex[:8]}"
    procs = start_workers(env, worker_settings(env, dsn, queue, **overrides), n_workers, tag)
    clients = await Producer.open(env, queue, dsn)
    try:
        env.control(reset_stats=True)
        t0 = time.time()
        producer = asyncio.create_task(clients.enqueue(payloads))
        producer.add_done_callback(lambda _: enqueued.append(time.time() - t0))
        seconds, series = await wait_done(dsn, t0, len(payloads))
        await producer
    finally:
        await clients.close()
        workers = stop_workers(procs)
    server = summarize_server(env.server_stats())
    return IngestRun(
        seconds,
        len(payloads),
        series[-1][2],
        series,
        server,
        workers,
        await ledger_summary(dsn),
        enqueued[0] if enqueued else None,
    )


async def reingest(env: Env, dsn: str, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    await clear_arq_results(env)
    queue = f"bench:{uuid.uuid4().hex[:8]}"
    procs = start_workers(env, worker_settings(env, dsn, queue), 1, "reingest")
    clients = await Producer.open(env, queue, dsn)
    try:
        env.control(reset_stats=True)
        t0 = time.time()
        producer = asyncio.create_task(clients.enqueue(payloads))
        # (wait_done samples every 20 ms: at 100 ms the resolution alone added ~50 ms, 1 %
        # of the first ingest, to this figure on average)
        seconds, _ = await wait_done(dsn, t0, len(payloads), events="job.noop")
        await producer
    finally:
        await clients.close()
        stop_workers(procs)
    server = summarize_server(env.server_stats())
    return {
        "seconds": seconds,
        "embedding_tokens": server["tokens"],
        "embedding_requests": server["requests"],
    }


async def _copy_out(src_dsn: str) -> tuple[dict[str, bytes], int]:
    """The run's content tables in binary COPY format, and its vector rows."""
    src = await asyncpg.connect(src_dsn)
    data: dict[str, bytes] = {}
    try:
        for table in CONTENT_TABLES:
            schema, name = table.split(".")
            buf = io.BytesIO()
            await src.copy_from_table(name, schema_name=schema, output=buf, format="binary")
            data[table] = buf.getvalue()
        rows = int(await src.fetchval(VECTOR_ROWS_SQL))
    finally:
        await src.close()
    return data, rows


async def _copy_in(dst: asyncpg.Connection, data: dict[str, bytes]) -> None:
    async with dst.transaction():
        for table in CONTENT_TABLES:
            schema, name = table.split(".")
            await dst.copy_to_table(
                name, schema_name=schema, source=io.BytesIO(data[table]), format="binary"
            )


async def ceiling(env: Env, src_dsn: str) -> dict[str, Any]:
    """The COPY-only ceiling (figure 1's until 007): the same rows, with the same vectors,
    by binary COPY into a fresh copy of the schema (same indexes, same triggers) in one
    transaction on one connection."""
    data, rows = await _copy_out(src_dsn)
    dst_dsn = await env.fresh_db()
    dst = await asyncpg.connect(dst_dsn)
    try:
        t0 = time.perf_counter()
        await _copy_in(dst, data)
        seconds = time.perf_counter() - t0
        assert int(await dst.fetchval(VECTOR_ROWS_SQL)) == rows
    finally:
        await dst.close()
        await env.drop_db(dst_dsn)
    return {"seconds": seconds, "vector_rows": rows, "rows_per_s": rows / seconds}


# The ceiling's vector tables (their rows wait for their vectors) and the source of each
# row's embedding input; comms.participants references communications, so it goes last.
VECTOR_TABLES = ["comms.communications", "meetings.transcript_chunks", "media.media_chunks"]
AFTER_VECTORS = ["comms.participants"]


async def embedder_inputs(src_dsn: str) -> dict[str, Any]:
    """The texts the worker sent to the embedder for the run's vector rows, rebuilt from
    the ingested database, and which texts each vector row needs.

    Transcript and media chunks: their ``content`` (what was embedded, stored as is). A
    communication: the chunks of its subject and the new part of its body (``split_reply``
    of the body's text), as ``worker.ingest`` builds them; one whose rebuilt text does not
    hash to its stored ``content_hash`` (the hash of what was embedded) is counted in
    ``comm_mismatch``. Identical texts are sent once (the worker's requests and chunk
    reuse do the same). Token counts are cl100k, as the worker packs requests and the
    stand-in counts."""
    from worker.core.settings import Settings
    from worker.ingest.normalize import text_hash
    from worker.text.chunking import chunk_communication
    from worker.text.html import html_to_text, looks_like_html
    from worker.text.quotes import split_reply
    from worker.text.tokens import count_tokens

    settings = Settings()
    target, overlap = settings.chunk_tokens, settings.chunk_overlap_tokens
    conn = await asyncpg.connect(src_dsn)
    try:
        comms = await conn.fetch(
            "SELECT id, subject, body, content_hash FROM comms.communications "
            "WHERE embedding IS NOT NULL ORDER BY sent_at, id"
        )
        chunk_rows = {
            table: await conn.fetch(f"SELECT id, content FROM {table} ORDER BY id")
            for table in VECTOR_TABLES[1:]
        }
    finally:
        await conn.close()
    needs: dict[str, dict[Any, list[str]]] = {table: {} for table in VECTOR_TABLES}
    mismatch = 0
    for r in comms:
        body = r["body"] or ""
        new = split_reply(html_to_text(body) if looks_like_html(body) else body).new
        mismatch += text_hash(r["subject"], new) != r["content_hash"]
        chunks = chunk_communication(r["subject"], new, target, overlap)
        needs["comms.communications"][r["id"]] = [c.text for c in chunks]
    for table, rows in chunk_rows.items():
        needs[table] = {r["id"]: [r["content"]] for r in rows}
    # identical texts once, in first-seen order
    texts = list(dict.fromkeys(t for rows in needs.values() for ts in rows.values() for t in ts))
    return {
        "texts": texts,
        "tokens": [count_tokens(t) for t in texts],
        "needs": needs,
        "comm_mismatch": mismatch,
        "max_inputs": settings.embed_batch_max_inputs,
        "max_tokens": settings.embed_batch_max_tokens,
        "model": settings.embedding_model,
        "dimensions": settings.embedding_dimensions,
        "encoding_format": settings.embedding_encoding_format,
    }


def pack_requests(tokens: list[int], max_inputs: int, max_tokens: int) -> list[tuple[int, int]]:
    """Full requests, in order, as the worker's packing closes them: at ``max_inputs``
    inputs or when the next text would pass ``max_tokens``. Returns [start, end) ranges."""
    out: list[tuple[int, int]] = []
    start, acc = 0, 0
    for i, n in enumerate(tokens):
        if i > start and (i - start >= max_inputs or acc + n > max_tokens):
            out.append((start, i))
            start, acc = i, 0
        acc += n
    if start < len(tokens):
        out.append((start, len(tokens)))
    return out


async def _columns(conn: asyncpg.Connection, table: str) -> list[str]:
    """A table's columns as ``COPY table`` has them (generated ones left out)."""
    rows = await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
        "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        table,
    )
    return [r["attname"] for r in rows]


async def _embed_request(session: Any, url: str, inputs: dict[str, Any], texts: list[str]) -> int:
    """One request as the worker sends it; its answer decoded to float32 vectors (what
    any client must do before it can write them). Returns the vectors received."""
    import base64

    import numpy as np

    body = {
        "model": inputs["model"],
        "input": texts,
        "encoding_format": inputs["encoding_format"],
        "dimensions": inputs["dimensions"],
    }
    async with session.post(url, data=json.dumps(body).encode()) as resp:
        resp.raise_for_status()
        raw = await resp.read()
    data = json.loads(raw)["data"]
    if inputs["encoding_format"] == "base64":
        vectors = np.frombuffer(
            b"".join(base64.b64decode(e["embedding"]) for e in data), dtype="<f4"
        ).reshape(len(data), inputs["dimensions"])
    else:
        vectors = np.asarray([e["embedding"] for e in data], dtype=np.float32)
    assert vectors.shape[0] == len(texts)
    return int(vectors.shape[0])


async def ceiling_with_embedder(env: Env, src_dsn: str, concurrency: int = 1) -> dict[str, Any]:
    """Figure 1's ceiling: the two stages no pipeline on this machine can skip, sharing it.

    From one client, timed together from the same instant: the stand-in embeds the run's
    input texts (``embedder_inputs``) in full requests as the worker packs and sends them
    (``EMBED_BATCH_MAX_INPUTS`` / ``EMBED_BATCH_MAX_TOKENS`` per request, its encoding
    format), while one connection writes the same rows with the same vectors by binary
    COPY into a fresh copy of the schema (same indexes, one transaction), as the COPY-only
    ceiling does, except that a vector row is written only once the request holding its
    texts (all of them, for a communication) has been answered: the rows without a vector
    first, then each request's rows as its answer arrives, then what references them.
    Ends when the transaction has committed. Database and HTTP connections are open before
    the clock starts.

    Requests go ``concurrency`` at a time, 1 by default: each one already occupies both
    of the stand-in's helper processes, so sending several at once (the worker allows 4)
    only delays the first answer the writes wait for (medium with 006: 5.1 s at 4, 3.9 s
    at 1, against 3.8-4.0 s for the COPY alone).

    Not in it: the worker's own work (decoding payloads, tokenizing and chunking, queueing,
    grouping, its bookkeeping): the pipeline's overhead, which the ratio exposes.
    """
    import aiohttp

    inputs = await embedder_inputs(src_dsn)
    texts = inputs["texts"]
    requests = pack_requests(inputs["tokens"], inputs["max_inputs"], inputs["max_tokens"])
    request_of = {t: k for k, (start, end) in enumerate(requests) for t in texts[start:end]}
    src = await asyncpg.connect(src_dsn)
    first: list[tuple[str, list[str], bytes]] = []  # (table, columns, binary COPY data)
    per_request: list[list[tuple[str, list[str], bytes]]] = [[] for _ in requests]
    last: list[tuple[str, list[str], bytes]] = []
    try:

        async def out(table: str, ids: list[Any] | None = None) -> tuple[str, list[str], bytes]:
            cols = await _columns(src, table)
            sel = ", ".join(f'"{c}"' for c in cols)
            where = "" if ids is None else " WHERE id = ANY($1::uuid[])"
            buf = io.BytesIO()
            args = () if ids is None else (ids,)
            await src.copy_from_query(
                f"SELECT {sel} FROM {table}{where}", *args, output=buf, format="binary"
            )
            return table, cols, buf.getvalue()

        for table in CONTENT_TABLES:
            if table in AFTER_VECTORS:
                last.append(await out(table))
            elif table not in VECTOR_TABLES:
                first.append(await out(table))
        for table in VECTOR_TABLES:
            needs = inputs["needs"][table]
            groups: dict[int, list[Any]] = {}
            for row_id, row_texts in needs.items():
                groups.setdefault(max(request_of[t] for t in row_texts), []).append(row_id)
            if table == "comms.communications":  # a message without a vector waits for none
                all_ids = [r["id"] for r in await src.fetch(f"SELECT id FROM {table}")]
                unembedded = [i for i in all_ids if i not in needs]
                if unembedded:
                    first.append(await out(table, unembedded))
            for k, ids in sorted(groups.items()):
                per_request[k].append(await out(table, ids))
        rows = int(await src.fetchval(VECTOR_ROWS_SQL))
    finally:
        await src.close()
    # parents before children within each phase: CONTENT_TABLES is in FK order
    order = {t: i for i, t in enumerate(CONTENT_TABLES)}
    first.sort(key=lambda part: order[part[0]])

    dst_dsn = await env.fresh_db()
    dst = await asyncpg.connect(dst_dsn)
    url = env.openai_url + "/v1/embeddings"
    headers = {"Authorization": "Bearer sk-bench-ceiling", "Content-Type": "application/json"}
    session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=600))
    try:
        async with session.get(env.openai_url + "/_stats") as resp:  # connection open
            await resp.read()
        env.control(reset_stats=True)
        answered: asyncio.Queue[int] = asyncio.Queue()
        slots = asyncio.Semaphore(concurrency)
        done: dict[str, float] = {}
        t0 = time.perf_counter()

        async def embed(k: int) -> int:
            start, end = requests[k]
            async with slots:
                n = await _embed_request(session, url, inputs, texts[start:end])
            answered.put_nowait(k)
            return n

        async def embed_all() -> int:
            n = sum(await asyncio.gather(*(embed(k) for k in range(len(requests)))))
            done["embed"] = time.perf_counter() - t0
            return n

        async def write() -> None:
            async def copy(parts: list[tuple[str, list[str], bytes]]) -> None:
                for table, cols, data in parts:
                    schema, name = table.split(".")
                    await dst.copy_to_table(
                        name,
                        schema_name=schema,
                        columns=cols,
                        source=io.BytesIO(data),
                        format="binary",
                    )

            async with dst.transaction():
                await copy(first)
                done["unvectored"] = time.perf_counter() - t0
                for _ in requests:  # in the order the answers arrive
                    await copy(per_request[await answered.get()])
                await copy(last)

        vectors, _ = await asyncio.gather(embed_all(), write())
        seconds = time.perf_counter() - t0
        assert int(await dst.fetchval(VECTOR_ROWS_SQL)) == rows
        assert vectors == len(texts)
    finally:
        await session.close()
        await dst.close()
        await env.drop_db(dst_dsn)
    server = summarize_server(env.server_stats())
    return {
        "seconds": seconds,
        "vector_rows": rows,
        "rows_per_s": rows / seconds,
        "embed_seconds": done["embed"],  # the last answer decoded
        "unvectored_seconds": done["unvectored"],  # the rows that wait for no vector
        "requests": server["requests"],
        "inputs": server["inputs"],
        "tokens": server["tokens"],
        "request_tokens": [tokens for _, tokens in server["accepted"]],
        "server_compute_ms": server["compute_ms"],
        "comm_mismatch": inputs["comm_mismatch"],
        "concurrency": concurrency,
    }


def corpus_tokens(payloads: list[dict[str, Any]]) -> int:
    from worker.text.tokens import count_tokens

    texts = [p.get("body") or "" for p in payloads]
    texts += [s["text"] for p in payloads for s in p.get("segments") or ()]
    return sum(count_tokens(t) for t in texts)


def min_requests(inputs: int, tokens: int) -> int:
    return max(1, math.ceil(inputs / MAX_INPUTS), math.ceil(tokens / MAX_REQUEST_TOKENS))


async def bench_throughput(env: Env, payloads: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    per_run = []
    for i in range(runs):
        dsn = await env.fresh_db()
        run = await ingest(env, dsn, payloads, tag=f"e2e{i}")
        copy_ = await ceiling(env, dsn)
        ceil_ = await ceiling_with_embedder(env, dsn)
        re = await reingest(env, dsn, payloads)
        await env.drop_db(dsn)
        s = run.server
        minimum = min_requests(s["inputs"], s["tokens"])
        r = {
            "seconds": run.seconds,
            "items": run.items,
            "vector_rows": run.vector_rows,
            "items_per_s": run.items / run.seconds,
            "chunks_per_s": run.vector_rows / run.seconds,
            # figure 1's ceiling: COPY and the embedder together (ceiling_with_embedder)
            "ceiling_rows_per_s": ceil_["rows_per_s"],
            "ceiling_seconds": ceil_["seconds"],
            "ratio": (run.vector_rows / run.seconds) / ceil_["rows_per_s"],
            "ceiling_embed_seconds": ceil_["embed_seconds"],
            "ceiling_unvectored_seconds": ceil_["unvectored_seconds"],
            # what the ceiling's embedder was sent, against what the worker sent
            "ceiling_requests": ceil_["requests"],
            "ceiling_inputs": ceil_["inputs"],
            "ceiling_tokens": ceil_["tokens"],
            "ceiling_request_tokens": ceil_["request_tokens"],
            "ceiling_server_compute_ms": ceil_["server_compute_ms"],
            "ceiling_comm_mismatch": ceil_["comm_mismatch"],
            # the COPY-only ceiling (figure 1's until 007), alone on the machine
            "copy_ceiling_rows_per_s": copy_["rows_per_s"],
            "copy_ceiling_seconds": copy_["seconds"],
            "copy_ratio": (run.vector_rows / run.seconds) / copy_["rows_per_s"],
            "requests": s["requests"],
            "requests_ok": s["ok"],
            "inputs": s["inputs"],
            "tokens": s["tokens"],
            "min_requests": minimum,
            "requests_ratio": s["requests"] / minimum,
            "reingest_tokens": re["embedding_tokens"],
            "reingest_seconds": re["seconds"],
            "reingest_ratio": re["seconds"] / run.seconds,
            "ledger": run.ledger,
            # tokens of each accepted request, in order: which one fell short of a full one
            "request_tokens": [tokens for _, tokens in s["accepted"]],
            "server_compute_ms": s["compute_ms"],
            "loop_lag": [w.get("loop_lag") for w in run.workers],
            "gc": [w.get("gc") for w in run.workers],
            "series": run.series,
            "failed": run.ledger.get("failed"),
        }
        log(
            f"throughput run {i + 1}: {r['chunks_per_s']:.0f} chunks/s, "
            f"{r['items_per_s']:.1f} items/s, ceiling {r['ceiling_rows_per_s']:.0f} rows/s "
            f"(ratio {r['ratio']:.2f}; {r['ceiling_seconds']:.2f} s, embedder done at "
            f"{r['ceiling_embed_seconds']:.2f} s, {r['ceiling_requests']} requests, "
            f"{r['ceiling_inputs']} inputs, {r['ceiling_tokens']} tokens vs the worker's "
            f"{r['inputs']} / {r['tokens']}), COPY-only {r['copy_ceiling_rows_per_s']:.0f} "
            f"rows/s (ratio {r['copy_ratio']:.2f}); requests {r['requests']} vs min {minimum}; "
            f"re-ingest {re['embedding_tokens']} tokens, {r['reingest_ratio']:.3f}x time; "
            f"request tokens {r['request_tokens']}, server compute ms {r['server_compute_ms']}; "
            f"worker loop lag {r['loop_lag']}"
        )
        per_run.append(r)
    return {
        "runs": per_run,
        **medians(
            per_run,
            [
                "seconds",
                "items_per_s",
                "chunks_per_s",
                "ceiling_rows_per_s",
                "ratio",
                "ceiling_seconds",
                "ceiling_embed_seconds",
                "copy_ceiling_rows_per_s",
                "copy_ratio",
                "requests",
                "min_requests",
                "requests_ratio",
                "reingest_tokens",
                "reingest_seconds",
                "reingest_ratio",
            ],
        ),
    }


async def bench_ratelimited(
    env: Env,
    payloads: list[dict[str, Any]],
    runs: int,
    tpm: int | None,
    latency_ms: float = 200.0,
    n_workers: int = 1,
) -> dict[str, Any]:
    per_run = []
    for i in range(runs):
        dsn = await env.fresh_db()
        if tpm is None:
            # Size the limit so the corpus needs ~2.5 minutes: two full 60 s windows.
            tpm = max(20_000, int(corpus_tokens(payloads) * 1.1 / 2.5))  # +10%: overlap
        env.control(latency_ms=latency_ms, tpm_limit=tpm, window_s=60.0)
        try:
            # Every worker is told the account's limit; they share it (a budget of
            # this run's own: what an earlier run learned from headers stays there).
            run = await ingest(
                env,
                dsn,
                payloads,
                n_workers=n_workers,
                tag=f"rl{n_workers}-{i}",
                embed_tokens_per_minute=tpm,
                embed_budget_id=f"bench-{uuid.uuid4().hex[:8]}",
            )
        finally:
            env.control(latency_ms=0, tpm_limit=None)
        await env.drop_db(dsn)
        acc = sorted(run.server["accepted"])
        t_first, t_last = acc[0][0], acc[-1][0]
        total = sum(n for _, n in acc)
        # Steady state: after the first window (which may burst a full minute's budget).
        steady = [n for t, n in acc if t >= t_first + 60.0]
        steady_s = t_last - (t_first + 60.0)
        frac_steady = (sum(steady) / (steady_s / 60.0)) / tpm if steady_s > 5 else None
        span = max(1e-9, t_last - t_first + latency_ms / 1000)
        r = {
            "tpm_limit": tpm,
            "workers": n_workers,
            "latency_ms": latency_ms,
            "tokens": total,
            "seconds": run.seconds,
            "requests": run.server["requests"],
            "status_429": run.server["status_429"],
            "share_429": run.server["status_429"] / max(1, run.server["requests"]),
            "tpm_fraction_overall": (total / (span / 60.0)) / tpm,
            "tpm_fraction_steady": frac_steady,
            "series": run.series,
            # accepted tokens in the 60 s before each 5 s step, from the first request
            "tpm_series": [
                (round(s, 1), sum(n for t, n in acc if s - 60.0 < t - t_first <= s))
                for s in [5.0 * k for k in range(int((t_last - t_first) / 5.0) + 2)]
            ],
        }
        log(
            f"rate-limited, {n_workers} worker(s), run {i + 1}: "
            f"{r['tpm_fraction_steady']} of TPM (steady), "
            f"{r['tpm_fraction_overall']:.2f} overall, 429 share {r['share_429']:.3f}"
        )
        per_run.append(r)
    return {
        "runs": per_run,
        **medians(
            per_run,
            ["tpm_fraction_steady", "tpm_fraction_overall", "share_429", "seconds", "tpm_limit"],
        ),
    }


class _OneFile(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/vtt; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


async def bench_memory(env: Env, runs: int, megabytes: float) -> dict[str, Any]:
    import psutil

    vtt = corpus_mod.big_vtt(megabytes).encode()
    handler = type("H", (_OneFile,), {"body": vtt})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/meeting.vtt"
    payload = {
        "kind": "transcript",
        "workspace_id": str(WS),
        "source": "zoom",
        "external_id": "big-meeting",
        "content_url": url,
        "content_format": "vtt",
        "meeting": {"title": "All-day offsite", "starts_at": "2026-03-01T09:00:00Z"},
        "participants": [],
    }
    per_run = []
    try:
        for i in range(runs):
            # The same payload every run: arq would refuse its id while it keeps the
            # previous run's result (runs after the first waited an hour for nothing).
            await clear_arq_results(env)
            dsn = await env.fresh_db()
            queue = f"bench:{uuid.uuid4().hex[:8]}"
            procs = start_workers(env, worker_settings(env, dsn, queue), 1, f"mem{i}")
            ps = psutil.Process(procs[0].proc.pid)
            idle = ps.memory_info().rss
            peak_poll, samples = idle, []
            env.control(reset_stats=True)
            t0 = time.time()
            await enqueue(env, [payload], queue)
            waiter = asyncio.create_task(wait_done(dsn, t0, 1, timeout=3600, sample_s=0.5))
            while not waiter.done():
                try:
                    rss = ps.memory_info().rss
                except psutil.Error:
                    break
                peak_poll = max(peak_poll, rss)
                samples.append((round(time.time() - t0, 2), rss))
                await asyncio.sleep(0.05)
            seconds, series = await waiter
            stats = stop_workers(procs)[0]
            summ = await ledger_summary(dsn)
            await env.drop_db(dsn)
            r = {
                "megabytes": len(vtt) / 1e6,
                "seconds": seconds,
                "chunks": series[-1][2],
                "status": "done" if summ["done"] == 1 else "failed",
                "idle_rss_mb": idle / 2**20,
                "peak_rss_mb_polled": peak_poll / 2**20,
                "peak_rss_mb": stats.get("vm_hwm_kb", 0) / 1024,
                "rss_samples": samples[:: max(1, len(samples) // 400)],
            }
            log(
                f"memory run {i + 1}: peak RSS {r['peak_rss_mb']:.0f} MB (VmHWM), idle "
                f"{r['idle_rss_mb']:.0f} MB, {r['chunks']} chunks in {seconds:.1f}s ({r['status']})"
            )
            per_run.append(r)
    finally:
        httpd.shutdown()
    return {"runs": per_run, **medians(per_run, ["peak_rss_mb", "idle_rss_mb", "seconds"])}


async def bench_memory_backfill(
    env: Env, payloads: list[dict[str, Any]], runs: int
) -> dict[str, Any]:
    """Figure 5b: one worker process ingests the whole corpus (a backfill, enqueued as
    figure 1 does), default settings but the bench's TPM budget; its peak RSS is the
    process's VmHWM, written by ``bench.worker_proc`` when it stops. Target <= 200 MB."""
    per_run = []
    for i in range(runs):
        dsn = await env.fresh_db()
        run = await ingest(env, dsn, payloads, tag=f"membf{i}")
        await env.drop_db(dsn)
        w = run.workers[0] if run.workers else {}
        r = {
            "seconds": run.seconds,
            "items": run.items,
            "vector_rows": run.vector_rows,
            "failed": run.ledger.get("failed"),
            "peak_rss_mb": w.get("vm_hwm_kb", 0) / 1024,
            "idle_rss_mb": w.get("idle_rss_kb", 0) / 1024,
            "end_rss_mb": w.get("end_rss_kb", 0) / 1024,
        }
        log(
            f"backfill memory run {i + 1}: peak RSS {r['peak_rss_mb']:.0f} MB (VmHWM), idle "
            f"{r['idle_rss_mb']:.0f} MB, at the end {r['end_rss_mb']:.0f} MB; "
            f"{run.items} items in {run.seconds:.1f}s"
        )
        per_run.append(r)
    return {
        "runs": per_run,
        **medians(per_run, ["peak_rss_mb", "idle_rss_mb", "end_rss_mb", "seconds"]),
    }


async def bench_latency(env: Env, n: int, latency_ms: float, gap_s: float = 0.1) -> dict[str, Any]:
    dsn = await env.fresh_db()
    queue = f"bench:{uuid.uuid4().hex[:8]}"
    env.control(latency_ms=latency_ms, tpm_limit=None)
    await clear_arq_results(env)
    procs = start_workers(env, worker_settings(env, dsn, queue), 1, "latency")
    msgs = corpus_mod.short_messages(WS, n + 3)
    lat = []
    conn = await asyncpg.connect(dsn)
    redis = await client.connect(env.redis.url)
    try:
        from worker.core.payloads import job_id, parse_payload
        from worker.core.settings import Settings

        settings = Settings(redis_url=env.redis.url, queue_name=queue)
        for i, m in enumerate(msgs):
            jid = uuid.UUID(job_id(parse_payload(m)))
            t0 = time.time()
            await client.enqueue(redis, m, settings=settings)
            while (
                await conn.fetchval("SELECT status FROM ops.ingestion_jobs WHERE id=$1", jid)
            ) != "done":
                if time.time() - t0 > 30:
                    raise TimeoutError("latency probe message not committed in 30 s")
                await asyncio.sleep(0.002)
            if i >= 3:  # the first few warm up connections and the tokenizer
                lat.append((time.time() - t0) * 1000)
            await asyncio.sleep(gap_s)
    finally:
        await redis.aclose()
        await conn.close()
        stop_workers(procs)
        env.control(latency_ms=0)
        await env.drop_db(dsn)
    lat.sort()
    p50 = statistics.median(lat)
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
    log(f"latency: p50 {p50:.0f} ms, p95 {p95:.0f} ms (embedder {latency_ms:.0f} ms)")
    return {
        "embedder_latency_ms": latency_ms,
        "n": len(lat),
        "p50_ms": p50,
        "p95_ms": p95,
        "samples_ms": lat,
    }


async def bench_scaleout(
    env: Env, payloads: list[dict[str, Any]], runs: int, counts: tuple[int, ...] = (1, 2, 4)
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in counts:
        per_run = []
        for i in range(runs):
            dsn = await env.fresh_db()
            run = await ingest(env, dsn, payloads, n_workers=n, tag=f"scale{n}-{i}")
            await env.drop_db(dsn)
            per_run.append(
                {
                    "seconds": run.seconds,
                    "items_per_s": run.items / run.seconds,
                    "chunks_per_s": run.vector_rows / run.seconds,
                    "series": run.series,
                }
            )
            log(
                f"scale-out {n} worker(s) run {i + 1}: {per_run[-1]['chunks_per_s']:.0f} "
                f"chunks/s, {per_run[-1]['items_per_s']:.1f} items/s"
            )
        out[str(n)] = {
            "runs": per_run,
            **medians(per_run, ["seconds", "items_per_s", "chunks_per_s"]),
        }
    return out


def medians(runs: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    out = {}
    for k in keys:
        vals = [r[k] for r in runs if r.get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    return out


# ----------------------------------------------------------------------------- output
def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: list[tuple[str, list[Any]]] = []
    if "throughput" in results:
        curves.append(("end-to-end, 1 worker", results["throughput"]["runs"][0]["series"]))
    for n, v in (results.get("scaleout") or {}).items():
        curves.append((f"scale-out, {n} worker(s)", v["runs"][0]["series"]))
    limited = results.get("ratelimited")
    if not curves and not limited:
        return
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 2]})

    def rates(series: list[Any], step: float) -> tuple[list[float], list[float]]:
        ts, rs, prev_t, prev_rows = [], [], 0.0, 0
        for t, _, rows in series:
            if t - prev_t >= step or (t == series[-1][0] and t > prev_t):
                rs.append((rows - prev_rows) / (t - prev_t))
                ts.append(t)
                prev_t, prev_rows = t, rows
        return ts, rs

    for label, series in curves:
        ax.plot(*rates(series, 0.5), label=label, marker=".")
    if "throughput" in results:
        t = results["throughput"]
        ax.axhline(
            t["ceiling_rows_per_s"],
            ls="--",
            color="k",
            label="ceiling: COPY of the same rows with the embedder, together",
        )
        if t.get("copy_ceiling_rows_per_s"):  # results from before the embedder's ceiling
            ax.axhline(
                t["copy_ceiling_rows_per_s"],
                ls=":",
                color="grey",
                label="COPY alone (same rows, same indexes)",
            )
    ax.set_xlabel("seconds since first enqueue")
    ax.set_ylabel("vector rows committed per second (0.5 s bins)")
    ax.set_title(f"Zero-latency embedder ({results['meta']['size']} corpus)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if limited:
        run = limited["runs"][0]
        ax2.plot(*rates(run["series"], 10.0), color="tab:purple", label="rows/s (10 s bins)")
        ax2.set_title(f"Rate-limited: 200 ms latency, TPM {run['tpm_limit']:,}")
        ax2.set_xlabel("seconds since first enqueue")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    else:
        ax2.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def fmt(v: Any, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def table(results: dict[str, Any]) -> str:
    m = results["meta"]
    lines = [
        f"Corpus `{m['size']}` ({m['items']} items: {m['emails']} emails, {m['meetings']} "
        f"meeting transcripts, {m['media']} media transcripts); median of {m['runs']} run(s); "
        f"{m['cpus']} CPUs shared with other work; PostgreSQL fsync on. Command: "
        f"`{m['command']}`.",
        "",
        "| # | Figure | Result | Target | Met |",
        "|---|---|---|---|---|",
    ]

    def row(i: str, name: str, result: str, target: str, met: bool | None) -> None:
        lines.append(
            f"| {i} | {name} | {result} | {target} | "
            f"{'n/a' if met is None else ('yes' if met else '**no**')} |"
        )

    t = results.get("throughput")
    if t:
        ratios = [r["ratio"] for r in t["runs"]]
        spread = f" (runs {min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
        copy_only = (
            f"; COPY alone {fmt(t['copy_ceiling_rows_per_s'], '.0f')} rows/s "
            f"(ratio {fmt(t['copy_ratio'])})"
            if t.get("copy_ceiling_rows_per_s") is not None
            else ""
        )
        row(
            "1",
            "End-to-end throughput (zero-latency embedder) vs ceiling (COPY + embedder)",
            f"{fmt(t['chunks_per_s'], '.0f')} chunks/s, {fmt(t['items_per_s'], '.1f')} items/s; "
            f"ceiling {fmt(t['ceiling_rows_per_s'], '.0f')} rows/s; ratio {fmt(t['ratio'])}"
            f"{spread}{copy_only}",
            ">= 0.70 of ceiling",
            t["ratio"] >= 0.70,
        )
        row(
            "2",
            "Embedding requests vs minimum",
            f"{fmt(t['requests'], '.0f')} vs {fmt(t['min_requests'], '.0f')} "
            f"(x{fmt(t['requests_ratio'])})",
            "<= 1.05 x minimum",
            t["requests_ratio"] <= 1.05,
        )
        row(
            "3",
            "Re-ingest of unchanged corpus",
            f"{fmt(t['reingest_tokens'], '.0f')} tokens; {fmt(t['reingest_seconds'])} s = "
            f"{fmt(100 * t['reingest_ratio'], '.1f')}% of first ingest",
            "0 tokens, <= 10% of time",
            t["reingest_tokens"] == 0 and t["reingest_ratio"] <= 0.10,
        )
    r = results.get("ratelimited")
    if r:
        frac = r["tpm_fraction_steady"]
        row(
            "4",
            f"Rate-limited (200 ms latency, TPM {fmt(r['tpm_limit'], ',.0f')})",
            f"{fmt(100 * frac if frac is not None else None, '.1f')}% of TPM (steady state; "
            f"{fmt(100 * r['tpm_fraction_overall'], '.0f')}% over the whole run incl. first-"
            f"minute burst), 429 share {fmt(100 * r['share_429'], '.2f')}%",
            ">= 90% of TPM, < 1% 429",
            frac is not None and frac >= 0.90 and r["share_429"] < 0.01,
        )
    mem = results.get("memory")
    if mem:
        row(
            "5",
            f"Peak RSS, one {fmt(mem['runs'][0]['megabytes'], '.0f')} MB transcript",
            f"{fmt(mem['peak_rss_mb'], '.0f')} MB (idle worker {fmt(mem['idle_rss_mb'], '.0f')} MB)",
            "<= 200 MB",
            mem["peak_rss_mb"] <= 200,
        )
    mb = results.get("memory_backfill")
    if mb:
        m_ = results["meta"]
        row(
            "5b",
            f"Peak RSS, one worker ingesting the corpus ({m_['items']} items)",
            f"{fmt(mb['peak_rss_mb'], '.0f')} MB (idle worker {fmt(mb['idle_rss_mb'], '.0f')} "
            f"MB; {fmt(mb['seconds'], '.1f')} s)",
            "<= 200 MB",
            mb["peak_rss_mb"] <= 200,
        )
    lat = results.get("latency")
    if lat:
        budget = lat["embedder_latency_ms"] + 50
        row(
            "6",
            f"Enqueue-to-committed, single short messages (embedder {lat['embedder_latency_ms']:.0f} ms)",
            f"p50 {fmt(lat['p50_ms'], '.0f')} ms, p95 {fmt(lat['p95_ms'], '.0f')} ms",
            f"p50 <= {budget:.0f} ms",
            lat["p50_ms"] <= budget,
        )
    fl = results.get("fleet")
    if fl:
        parts, met = [], True
        for n, v in fl.items():
            frac = v["tpm_fraction_steady"]
            parts.append(
                f"{n}: {fmt(100 * frac if frac is not None else None, '.1f')}% of TPM, "
                f"429 share {fmt(100 * v['share_429'], '.2f')}%"
            )
            met = met and frac is not None and frac >= 0.95 and v["share_429"] < 0.01
        row(
            "4b",
            "Rate-limited, 1/2/4 worker processes told one account limit (steady state)",
            "; ".join(parts),
            ">= 95% of TPM, < 1% 429",
            met,
        )
    for i, key, name in (
        (
            "8",
            "fairness",
            "Live e-mail enqueue-to-committed during a {n:,}-item backfill in another "
            "workspace (one worker)",
        ),
        (
            "8b",
            "fairness_lane",
            "Figure 8 with a live-lane worker (`cos-worker live-lane`) beside the one",
        ),
    ):
        fa = results.get(key)
        if fa:
            row(
                i,
                name.format(n=fa["backfill_items"]),
                f"p50 {fmt(fa['busy_p50_ms'], '.0f')} ms (p95 {fmt(fa['busy_p95_ms'], '.0f')}) "
                f"vs {fmt(fa['idle_p50_ms'], '.0f')} ms idle: x{fmt(fa['p50_ratio'])}",
                "<= 2x idle p50",
                fa["p50_ratio"] <= 2.0,
            )
    so = results.get("scaleout")
    if so:
        parts = [
            f"{n}: {fmt(v['chunks_per_s'], '.0f')} chunks/s ({fmt(v['items_per_s'], '.1f')} items/s)"
            for n, v in so.items()
        ]
        row("7", "Scale-out, worker processes on one queue", "; ".join(parts), "report", None)
    return "\n".join(lines) + "\n"


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    only = set(args.only or ["throughput", "ratelimited", "memory", "latency", "scaleout"])
    if only == {"none"}:
        return {}
    corpus = corpus_mod.build(args.size, WS)
    payloads = corpus.payloads
    results: dict[str, Any] = {
        "meta": {
            "size": args.size,
            "items": len(corpus),
            "emails": len(corpus.emails),
            "meetings": len(corpus.meetings),
            "media": len(corpus.media),
            "runs": args.runs,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
            "postgres": "embedded 18 + pgvector, fsync=on, synchronous_commit=on",
            "load_before": os.getloadavg(),
        }
    }
    env = Env.start()
    try:
        await env._migrate_template()
        if "throughput" in only:
            results["throughput"] = await bench_throughput(env, payloads, args.runs)
        if "latency" in only:
            results["latency"] = await bench_latency(env, args.latency_messages, args.latency_ms)
        if "scaleout" in only:
            results["scaleout"] = await bench_scaleout(env, payloads, args.runs)
        if "ratelimited" in only:
            results["ratelimited"] = await bench_ratelimited(
                env, payloads, args.ratelimited_runs or args.runs, args.tpm
            )
        if "fleet" in only:
            from bench.fleet import bench_fleet

            results["fleet"] = await bench_fleet(
                env, payloads, args.ratelimited_runs or args.runs, args.tpm
            )
        if "fairness" in only:
            from bench.fleet import bench_fairness

            results["fairness"] = await bench_fairness(
                env, args.backfill_items, args.fairness_probes, args.latency_ms
            )
        if "fairness-lane" in only:
            from bench.fleet import bench_fairness

            results["fairness_lane"] = await bench_fairness(
                env, args.backfill_items, args.fairness_probes, args.latency_ms, live_lane=True
            )
        if "memory-backfill" in only:
            results["memory_backfill"] = await bench_memory_backfill(
                env, payloads, args.memory_runs or args.runs
            )
        if "memory" in only:
            results["memory"] = await bench_memory(
                env, args.memory_runs or args.runs, args.transcript_mb
            )
    finally:
        env.stop(keep=args.keep)
    results["meta"]["load_after"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Ingestion benchmark (see bench/README.md)")
    p.add_argument("--size", choices=sorted(corpus_mod.SIZES), default="small")
    p.add_argument(
        "--only",
        action="append",
        choices=[
            "throughput",
            "ratelimited",
            "fleet",
            "fairness",
            "fairness-lane",
            "memory",
            "memory-backfill",
            "latency",
            "scaleout",
            "none",
        ],
    )
    p.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    p.add_argument("--ratelimited-runs", type=int, default=None)
    p.add_argument("--memory-runs", type=int, default=None)
    p.add_argument(
        "--tpm",
        type=int,
        default=None,
        help="TPM limit for figure 4 (default: sized so the run takes ~2.5 min)",
    )
    p.add_argument("--transcript-mb", type=float, default=20.0)
    p.add_argument("--latency-ms", type=float, default=100.0, help="embedder latency, figure 6")
    p.add_argument(
        "--backfill-items",
        type=int,
        default=20_000,
        help="figure 8: the other workspace's backfill",
    )
    p.add_argument("--fairness-probes", type=int, default=30, help="figure 8: live e-mails timed")
    p.add_argument("--latency-messages", type=int, default=30)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    p.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="add the figures of another latest.json (e.g. one run in parallel)",
    )
    args = p.parse_args(argv)
    results = asyncio.run(amain(args)) if not (args.merge and args.only == ["none"]) else {}
    for other in args.merge:
        extra = json.loads(other.read_text())
        for key, value in extra.items():
            if key == "meta":
                results.setdefault("meta", value)
            elif key not in results:
                results[key] = value
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=1, default=str))
    plot(results, args.out / "throughput.png")
    from bench.fleet import plot_fleet

    plot_fleet(results, args.out / "fleet.png")
    md = table(results)
    if args.out == RESULTS:  # probe runs (--out elsewhere) leave the committed table alone
        fleet = "\n![fleet](results/fleet.png)\n" if results.get("fleet") else ""
        (HERE / "RESULTS.md").write_text(
            "# Benchmark results\n\n" + md + "\n![throughput](results/throughput.png)\n" + fleet
        )
    print(md)


if __name__ == "__main__":
    main()
