"""Acceptance fixtures: servers of our own (restartable without disturbing other tests),
real worker processes, and the exactly-once checker the fault scenarios share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from pgvector.asyncpg import register_vector

from tests.support.openai_server import OpenAIServer
from tests.support.servers import running_postgres, running_redis
from worker.core.payloads import CommunicationPayload, job_id, parse_payload
from worker.core.settings import Settings
from worker.db.ledger import project
from worker.db.migrate import Migrator
from worker.embedding.local import local_embed
from worker.ingest.normalize import Pulled, chunk
from worker.servers.embedded import EmbeddedPostgres, EmbeddedRedis
from worker.text.chunking import Chunk

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-acceptance-not-a-real-key-0123456789"


@pytest.fixture(scope="module")
def own_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server only this module uses, so restarting it disturbs nobody."""
    with running_postgres(tmp_path_factory.mktemp("own-pg")) as server:
        yield server


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with running_redis(tmp_path_factory.mktemp("own-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def api() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.fixture
async def fresh_db(own_pg: EmbeddedPostgres) -> str:
    """A migrated database of its own: the reconciler sees only this test's ledger."""
    name = f"f_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(own_pg.dsn())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = own_pg.dsn(name)
    await Migrator(dsn).up()
    return dsn


def worker_env(dsn: str, redis_url: str, api: OpenAIServer, queue: str, **extra: Any) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": api.base_url + "/v1",
        "EMBEDDING_PROVIDER": "openai",
        "QUEUE_NAME": queue,
        "LOG_FORMAT": "json",
        # arq re-runs a job whose worker vanished once its in-progress key expires, which
        # is job_timeout + 10 s, and the reconciler releases it after job_timeout + grace:
        # keep both short so a SIGKILLed job comes back quickly.
        "JOB_TIMEOUT_S": "6",
        "JOB_MAX_TRIES": "8",
        "RETRY_BASE_DELAY_S": "0.2",
        "EMBED_REQUEST_TIMEOUT_S": "1.5",
        "EMBED_MAX_RETRIES": "4",
        "EMBED_RETRY_MAX_WAIT_S": "2",
        "EMBED_BATCH_LINGER_MS": "20",
        "WORKER_CONCURRENCY": "8",
        "DB_POOL_MIN": "1",
        "DB_POOL_MAX": "6",
        "RECONCILE_GRACE_S": "2",
    }
    env.update({k.upper(): str(v) for k, v in extra.items()})
    return env


def _python() -> list[str]:
    """The interpreter command of worker processes: ``WORKER_PROFILER`` replaces it for a
    profiling run, e.g. ``"memray run -q -o /tmp/worker.bin"`` (one worker per run: memray
    will not overwrite its file). How issue 18's memory figures were found."""
    wrapper = os.environ.get("WORKER_PROFILER")
    return wrapper.split() if wrapper else [sys.executable]


@dataclass
class Workers:
    """Real worker processes (``python -m tests.support.worker_proc``) this test owns."""

    env: dict
    log_dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, n: int = 1) -> list[subprocess.Popen]:
        started = []
        for _ in range(n):
            log = open(self.log_dir / f"worker-{len(self.procs)}.log", "w")  # noqa: SIM115
            proc = subprocess.Popen(
                [*_python(), "-m", "tests.support.worker_proc"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.procs.append(proc)
            started.append(proc)
        return started

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def sigkill(self, proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.sigkill(proc)

    def supervise(self) -> int:
        """Restart exited workers, as a process manager (systemd, k8s, Procfile) would.

        arq's poll loop can still die on a Redis outage that hits a WATCH (redis-py turns
        the connection error into WatchError, which arq's start_jobs does not catch on
        every call); nothing is lost when that happens, but a supervisor must restart it.
        """
        dead = [p for p in self.procs if p.poll() is not None and not getattr(p, "_seen", 0)]
        for p in dead:
            p._seen = 1  # type: ignore[attr-defined]
        self.start(len(dead))
        return len(dead)

    def check(self) -> None:
        """Fail fast (with the log tail) when every worker process has died."""
        if self.procs and not self.alive():
            raise AssertionError("all worker processes exited:\n" + self.logs()[-3000:])

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


@pytest.fixture
def workers_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Workers] = []

    def make(env: dict) -> Workers:
        w = Workers(env, tmp_path)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop_all()


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await register_vector(conn)
    return conn


async def ledger_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT status::text, count(*) FROM ops.ingestion_jobs GROUP BY 1")
    finally:
        await conn.close()
    return {r[0]: r[1] for r in rows}


async def wait_until_settled(
    dsn: str,
    expected_jobs: int,
    within: float,
    *,
    on_tick: Any = None,
    workers: Workers | None = None,
) -> dict[str, int]:
    """Poll the ledger until ``expected_jobs`` rows are done/skipped/failed."""
    deadline = time.monotonic() + within
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = await ledger_counts(dsn)
        finished = sum(counts.get(s, 0) for s in ("done", "skipped", "failed"))
        if finished >= expected_jobs and not (counts.get("queued") or counts.get("running")):
            return counts
        if workers is not None:
            workers.check()
        if on_tick is not None:
            await on_tick()
        await asyncio.sleep(0.5)
    raise AssertionError(f"ledger did not settle in {within}s: {counts}\n{await stuck(dsn)}")


async def stuck(dsn: str) -> str:
    """The unfinished ledger rows and their events, for a failure message."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT j.id, j.status::text, j.attempts, j.arq_job_id, j.last_error, "
            "array_agg(e.event_type || coalesce(' ' || (e.payload->>'reason'), '') "
            "ORDER BY e.version) AS events FROM ops.ingestion_jobs j "
            "LEFT JOIN ops.events e ON e.aggregate_id = j.id "
            "WHERE j.status IN ('queued', 'running') GROUP BY j.id LIMIT 5"
        )
    finally:
        await conn.close()
    return "\n".join(str(dict(r)) for r in rows)


def expected_chunks(payload: Any, settings: Settings) -> list[Chunk]:
    """What the pipeline must have stored for an inline payload."""
    if isinstance(payload, CommunicationPayload):
        return chunk(Pulled(payload.body or "", None, "body"), settings, payload.subject)
    if payload.segments is not None:
        return chunk(Pulled(None, list(payload.segments), "segments"), settings)
    return chunk(Pulled(payload.text, None, "text"), settings)


async def assert_exactly_once(
    dsn: str, ws: uuid.UUID, final: list[dict[str, Any]], superseded: list[dict[str, Any]] = ()
) -> None:
    """The state the inputs imply, and nothing else.

    ``final``: the payload that must be stored for each item; ``superseded``: older
    versions that must have ended ``skipped`` or been replaced (done before the newer).
    Checks rows, chunk counts and texts, vectors, ledger statuses, and for every job a
    gap-free event sequence with exactly one ``content.stored`` per stored job, and the
    ledger equal to the projection of its events.
    """
    settings = Settings()
    conn = await connect(dsn)
    try:
        models = [parse_payload(p) for p in final]
        final_ids = {uuid.UUID(job_id(m)) for m in models}
        old_ids = {uuid.UUID(job_id(parse_payload(p))) for p in superseded}
        ledger = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT id, kind::text, source, external_id, content_hash, status::text, attempts, "
                "last_error, error_field FROM ops.ingestion_jobs WHERE workspace_id = $1",
                ws,
            )
        }
        assert set(ledger) == final_ids | old_ids, "ledger rows differ from the jobs enqueued"
        for jid in final_ids:
            row = ledger[jid]
            assert row["status"] == "done", (
                f"{row['external_id']}: {row['status']} after {row['attempts']} attempts: "
                f"{row['error_field']}: {row['last_error']}"
            )
        for jid in old_ids:
            row = ledger[jid]
            assert row["status"] in ("done", "skipped"), (
                f"{row['external_id']}: {row['status']}: {row['error_field']}: {row['last_error']}"
            )

        for m in models:
            want = expected_chunks(m, settings)
            if m.kind == "communication":
                rows = await conn.fetch(
                    "SELECT body, chunk_count, embedding, ingestion_job_id FROM "
                    "comms.communications WHERE workspace_id=$1 AND source=$2 AND external_id=$3",
                    ws,
                    m.source,
                    m.external_id,
                )
                assert len(rows) == 1, (m.external_id, len(rows))
                assert rows[0]["body"] == m.body and rows[0]["chunk_count"] == len(want)
                assert rows[0]["ingestion_job_id"] == uuid.UUID(job_id(m))
                vec = rows[0]["embedding"].to_numpy()
                if len(want) == 1:
                    assert float(np.dot(vec, local_embed([want[0].text])[0])) > 0.999
                continue
            src, chunks_table, fk = (
                ("meetings.transcripts", "meetings.transcript_chunks", "transcript_id")
                if m.kind == "transcript"
                else ("media.assets", "media.media_chunks", "asset_id")
            )
            sources = await conn.fetch(
                f"SELECT id, ingestion_job_id FROM {src} WHERE workspace_id=$1 AND source=$2 "
                "AND external_id=$3",
                ws,
                m.source,
                m.external_id,
            )
            assert len(sources) == 1, (m.external_id, len(sources))
            assert sources[0]["ingestion_job_id"] == uuid.UUID(job_id(m))
            rows = await conn.fetch(
                f"SELECT chunk_index, content, embedding FROM {chunks_table} "
                f"WHERE workspace_id=$1 AND {fk}=$2 ORDER BY chunk_index",
                ws,
                sources[0]["id"],
            )
            assert [r["chunk_index"] for r in rows] == [c.index for c in want], m.external_id
            assert [r["content"] for r in rows] == [c.text for c in want]
            got = np.stack([r["embedding"].to_numpy() for r in rows])
            assert np.allclose(got, local_embed([c.text for c in want]), atol=1e-5)
        # no rows for items nobody enqueued
        for table in ("comms.communications", "meetings.transcripts", "media.assets"):
            n = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE workspace_id=$1", ws)
            kind = {
                "comms.communications": "communication",
                "meetings.transcripts": "transcript",
                "media.assets": "media",
            }[table]
            assert n == len({(m.source, m.external_id) for m in models if m.kind == kind}), table

        events = await conn.fetch(
            "SELECT aggregate_id, version, event_type, payload FROM ops.events "
            "WHERE aggregate_id = ANY($1::uuid[]) ORDER BY aggregate_id, version",
            list(ledger),
        )
        by_job: dict[uuid.UUID, list[Any]] = {}
        for e in events:
            by_job.setdefault(e["aggregate_id"], []).append(e)
        for jid, evs in by_job.items():
            assert [e["version"] for e in evs] == list(range(1, len(evs) + 1)), jid
            types = [e["event_type"] for e in evs]
            stored = types.count("content.stored")
            if ledger[jid]["status"] == "done":
                assert stored == 1 and types.count("job.completed") == 1, (jid, types)
            else:
                assert stored == 0 and types.count("job.completed") == 0, (jid, types)
        projected = project([dict(e) for e in events])
        for jid, row in ledger.items():
            p = projected[jid]
            # the columns the events determine (external_id and last_error stay in the
            # ledger: the events hold no personal content, docs/events.md)
            cols = ("kind", "source", "content_hash", "status", "attempts", "error_field")
            assert p.columns() == tuple(row[c] for c in cols), dict(row)
    finally:
        await conn.close()
