"""Scheduled maintenance against the real server (PostgreSQL 18 + pgvector + pg_stat_statements).

One migrated template database per module, with a few thousand 1536-dim chunks and a
freshly built HNSW index; each test gets a clone of it (``CREATE DATABASE ... TEMPLATE``
copies files: much faster than migrating and loading again). A clone starts with empty
statistics counters (they are kept per database OID), and autovacuum is switched off on
every table so that autoanalyze cannot reset the counters the tests rely on.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import numpy as np
import pytest
from structlog.testing import capture_logs

from tests.conftest import run_sql
from worker.core.settings import Settings
from worker.db.pool import connect
from worker.maintenance import MaintenanceReport, run_maintenance
from worker.maintenance import reindex as reindex_mod
from worker.servers.embedded import EmbeddedPostgres

CHUNK_ROWS = 1500
CONTACT_ROWS = 40
DIM = 1536
CHUNKS_INDEX = "meetings.idx_chunks_embedding"
CONTACTS_INDEX = "core.idx_contacts_embedding"

SEED_PARENTS = """
INSERT INTO core.workspaces (id, name) VALUES ($1, 'maintenance tests');
INSERT INTO meetings.meetings (id, workspace_id, source, external_id) VALUES ($2, $1, 'test', 'm1');
INSERT INTO meetings.transcripts (id, workspace_id, meeting_id, source, external_id, content_hash)
VALUES ($3, $1, $2, 'test', 't1', 'h');
"""
NO_AUTOVACUUM = """
DO $$
DECLARE t record;
BEGIN
  FOR t IN SELECT schemaname, tablename FROM pg_tables
           WHERE schemaname IN ('core','ops','comms','meetings','media','work','intel') LOOP
    EXECUTE format('ALTER TABLE %I.%I SET (autovacuum_enabled = false)', t.schemaname, t.tablename);
  END LOOP;
END $$;
"""
CHUNK_COLUMNS = [
    "workspace_id",
    "transcript_id",
    "meeting_id",
    "chunk_index",
    "content",
    "content_hash",
    "token_count",
    "embedding",
    "embedding_model",
]
INSERT_CHUNK = """
INSERT INTO meetings.transcript_chunks
  (workspace_id, transcript_id, meeting_id, chunk_index, content, content_hash, token_count,
   embedding, embedding_model)
VALUES ($1, $2, $3, $4, 'live insert', 'h', 2, $5, 'test')
"""
WS, MEETING, TRANSCRIPT = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, DIM), dtype=np.float32)


async def _build_template(dsn: str) -> None:
    from worker.db.migrate import Migrator

    await Migrator(dsn).up()
    conn = await connect(Settings(), dsn, as_role=False)
    try:
        await conn.execute("SET client_min_messages = warning")
        await conn.execute(NO_AUTOVACUUM)
        await conn.execute(
            SEED_PARENTS.replace("$1", f"'{WS}'")
            .replace("$2", f"'{MEETING}'")
            .replace("$3", f"'{TRANSCRIPT}'")
        )
        # Load without the index, then build it once: as a fresh index would be.
        # The seed's vector HNSW (one row per 8 kB page: the size and bloat arithmetic
        # below), whatever migration 006 made of it on this pgvector.
        indexdef = (
            "CREATE INDEX idx_chunks_embedding ON meetings.transcript_chunks "
            "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        await conn.execute(f"DROP INDEX {CHUNKS_INDEX}")
        vectors = _vectors(CHUNK_ROWS, seed=1)
        records = [
            (WS, TRANSCRIPT, MEETING, i, f"chunk {i}", f"h{i}", 3, vectors[i], "test")
            for i in range(CHUNK_ROWS)
        ]
        await conn.copy_records_to_table(
            "transcript_chunks", schema_name="meetings", records=records, columns=CHUNK_COLUMNS
        )
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute(indexdef)
        # A build the policy has not seen (migration 006 records the ones it makes).
        await conn.execute("DELETE FROM ops.index_builds")
        await conn.executemany(
            "INSERT INTO core.contacts (workspace_id, primary_address) VALUES ($1, $2)",
            [(WS, f"c{i}@example.com") for i in range(CONTACT_ROWS)],
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def template(pg: EmbeddedPostgres) -> Iterator[str]:
    name = f"maint_tpl_{uuid.uuid4().hex[:8]}"
    run_sql(pg.dsn(), f'CREATE DATABASE "{name}"')
    asyncio.run(_build_template(pg.dsn(name)))
    yield name
    run_sql(pg.dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def db(pg: EmbeddedPostgres, template: str) -> AsyncIterator[str]:
    """A fresh clone of the template; its DSN."""
    name = f"maint_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        yield pg.dsn(name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "maintenance_work_mem": "256MB",
        "slow_query_min_mean_ms": 100.0,
        # The growth, bloat and cap rules alone: uniformly random vectors make any ANN
        # index measure badly (the recall probe: test_maintenance_recall.py).
        "reindex_recall_target": 0.0,
    }
    values.update(overrides)
    return Settings(**values)


async def flush_stats(conn: asyncpg.Connection) -> None:
    """Make this backend's pending table counters visible to other sessions now."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT 1")


async def run_row(dsn: str, run_id: uuid.UUID | None) -> asyncpg.Record:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM ops.maintenance_runs WHERE id = $1", run_id)
        assert row is not None
        return row
    finally:
        await conn.close()


def analyzed(report: MaintenanceReport) -> set[str]:
    return {a.target for a in report.actions_of("analyze", "done")}


async def test_analyze_picks_changed_tables_and_skips_the_rest(db: str) -> None:
    settings = make_settings(analyze_min_changed_rows=500, analyze_min_changed_fraction=0.1)
    conn = await asyncpg.connect(db)
    try:
        await conn.execute("CREATE TABLE work.maint_busy (id int, note text)")
        await conn.execute("CREATE TABLE work.maint_quiet (id int, note text)")
        for t in ("maint_busy", "maint_quiet"):
            await conn.execute(f"ALTER TABLE work.{t} SET (autovacuum_enabled = false)")
            await conn.execute(f"INSERT INTO work.{t} SELECT g, 'x' FROM generate_series(1, 100) g")
        await flush_stats(conn)

        forced = await run_maintenance(settings, db, force_analyze=True)
        assert forced.status == "succeeded", forced.to_dict()
        assert {"work.maint_busy", "work.maint_quiet", "meetings.transcript_chunks"} <= analyzed(
            forced
        )
        assert all(a.reason == "forced" for a in forced.actions_of("analyze"))

        await conn.execute(
            "INSERT INTO work.maint_busy SELECT g, 'y' FROM generate_series(1, 800) g"
        )
        await conn.execute("UPDATE work.maint_quiet SET note = 'z' WHERE id <= 20")
        await flush_stats(conn)

        dry = await run_maintenance(settings, db, dry_run=True)
        assert [a.target for a in dry.actions_of("analyze", "planned")] == ["work.maint_busy"]
        assert not dry.actions_of("analyze", "done")
        still = await conn.fetchval(
            "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'maint_busy'"
        )
        assert still == 800  # the dry run changed nothing

        report = await run_maintenance(settings, db, trigger="cron")
        assert report.status == "succeeded"
        assert analyzed(report) == {"work.maint_busy"}  # 20 changed rows < 500: skipped
        busy = report.actions_of("analyze")[0]
        assert busy.reason == "changed_rows" and busy.details["modified_rows"] == 800
        assert busy.details["threshold"] == 500
        after = await conn.fetchrow(
            "SELECT n_mod_since_analyze, last_analyze FROM pg_stat_user_tables "
            "WHERE relname = 'maint_busy'"
        )
        assert after["n_mod_since_analyze"] == 0 and after["last_analyze"] is not None

        row = await run_row(db, report.run_id)
        assert row["status"] == "succeeded" and row["trigger"] == "cron" and not row["dry_run"]
        actions = json.loads(row["actions"])
        assert any(a["kind"] == "analyze" and a["target"] == "work.maint_busy" for a in actions)
        assert json.loads(row["summary"])["counts"]["analyze_done"] == 1
        events = await conn.fetch(
            "SELECT event_type, aggregate_type, workspace_id FROM ops.events "
            "WHERE aggregate_id = $1 ORDER BY version",
            report.run_id,
        )
        types = [e["event_type"] for e in events]
        assert types[0] == "maintenance.started" and types[-1] == "maintenance.finished"
        assert "maintenance.action" in types
        assert {(e["aggregate_type"], e["workspace_id"]) for e in events} == {
            ("maintenance_run", None)
        }
        dry_row = await run_row(db, dry.run_id)
        assert dry_row["dry_run"] and dry_row["status"] == "succeeded"
    finally:
        await conn.close()


async def test_reindex_follows_growth_policy_and_cap(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(reindex_growth_factor=2.0, reindex_max_per_run=2)
    conn = await asyncpg.connect(db)
    try:
        first = await run_maintenance(settings, db)
        baselines = {a.target for a in first.actions_of("reindex_baseline", "done")}
        assert CHUNKS_INDEX in baselines and len(baselines) == 5
        assert not first.actions_of("reindex")  # first sighting: baseline only
        recorded = await conn.fetchval(
            "SELECT rows_at_build FROM ops.index_builds WHERE index_name = $1", CHUNKS_INDEX
        )
        assert recorded == CHUNK_ROWS
        chunks = next(i for i in first.indexes if i["index"] == CHUNKS_INDEX)
        print(f"\nfresh index: {chunks}")
        # The catalog size estimate must fit a freshly built index, or we rebuild nightly.
        assert chunks["bloat"] < 0.05 and chunks["decision"] == "baseline"

        second = await run_maintenance(settings, db)
        assert not second.actions_of("reindex") and not second.actions_of("reindex_baseline")

        # The index was last built when the table had 600 rows: 1,500 / 600 >= 2.
        await conn.execute(
            "UPDATE ops.index_builds SET rows_at_build = 600 WHERE index_name = $1", CHUNKS_INDEX
        )
        third = await run_maintenance(settings, db)
        rebuilt = third.actions_of("reindex", "done")
        assert [a.target for a in rebuilt] == [CHUNKS_INDEX]
        assert rebuilt[0].reason == "growth"
        assert rebuilt[0].details["rows_before"] == 600
        assert rebuilt[0].details["rows_now"] == CHUNK_ROWS
        build = await conn.fetchrow(
            "SELECT rows_at_build, reason, duration_ms FROM ops.index_builds WHERE index_name = $1",
            CHUNKS_INDEX,
        )
        assert build["rows_at_build"] == CHUNK_ROWS and build["reason"] == "growth"
        assert build["duration_ms"] > 0
        print(f"idle-table REINDEX CONCURRENTLY of {CHUNK_ROWS} rows: {build['duration_ms']} ms")
        valid = await conn.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = $1::regclass", CHUNKS_INDEX
        )
        assert valid

        # Bloat: delete 700 rows and VACUUM (as autovacuum would): the table shrinks, an
        # HNSW index never does, so the size estimate sees 1 - 801/1501 = 47 % waste.
        monkeypatch.setattr(reindex_mod, "MIN_ROWS_FOR_REBUILD", 10)
        await conn.execute("DELETE FROM meetings.transcript_chunks WHERE chunk_index < 700")
        await conn.execute("VACUUM meetings.transcript_chunks")
        await flush_stats(conn)
        bloated = await run_maintenance(settings, db)
        rebuilt = bloated.actions_of("reindex", "done")
        assert [(a.target, a.reason) for a in rebuilt] == [(CHUNKS_INDEX, "bloat")]
        assert rebuilt[0].details["bloat"] >= 0.4
        after = next(
            i for i in (await run_maintenance(settings, db)).indexes if i["index"] == CHUNKS_INDEX
        )
        assert after["bloat"] < 0.05 and after["decision"] == "none"

        # Cap: two indexes due, one rebuild allowed: the larger overshoot goes first.
        await conn.execute(
            "UPDATE ops.index_builds SET rows_at_build = CASE index_name "
            "WHEN $1 THEN 300 ELSE 5 END WHERE index_name IN ($1, $2)",
            CHUNKS_INDEX,
            CONTACTS_INDEX,
        )
        capped = await run_maintenance(make_settings(reindex_max_per_run=1), db)
        assert [a.target for a in capped.actions_of("reindex")] == [CONTACTS_INDEX]
        deferred = next(i for i in capped.indexes if i["index"] == CHUNKS_INDEX)
        assert deferred["decision"] == "deferred_by_cap"
        none = await run_maintenance(make_settings(reindex_max_per_run=0), db)
        assert not none.actions_of("reindex")
    finally:
        await conn.close()


async def test_leftover_invalid_indexes_are_dropped(db: str) -> None:
    settings = make_settings()
    conn = await asyncpg.connect(db)
    victim = await asyncpg.connect(db)
    try:
        # 1. A failed CREATE UNIQUE INDEX CONCURRENTLY leaves an INVALID index behind.
        await conn.execute("CREATE TABLE work.maint_dups (x int)")
        await conn.execute("INSERT INTO work.maint_dups VALUES (1), (1)")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY maint_dups_x ON work.maint_dups (x)"
            )
        # 2. A REINDEX CONCURRENTLY cancelled mid-build leaves <name>_ccnew.
        task = asyncio.create_task(victim.execute(f"REINDEX INDEX CONCURRENTLY {CHUNKS_INDEX}"))
        pid = victim.get_server_pid()
        for _ in range(200):
            if await conn.fetchval("SELECT to_regclass('meetings.idx_chunks_embedding_ccnew')"):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        await conn.execute("SELECT pg_cancel_backend($1)", pid)
        with pytest.raises(asyncpg.QueryCanceledError):
            await task
        invalid_sql = (
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE NOT i.indisvalid ORDER BY 1"
        )
        leftovers = [r[0] for r in await conn.fetch(invalid_sql)]
        assert leftovers == ["idx_chunks_embedding_ccnew", "maint_dups_x"]

        dry = await run_maintenance(settings, db, dry_run=True)
        assert {a.target for a in dry.actions_of("drop_invalid", "planned")} == {
            "meetings.idx_chunks_embedding_ccnew",
            "work.maint_dups_x",
        }
        assert len(await conn.fetch(invalid_sql)) == 2

        report = await run_maintenance(settings, db)
        dropped = {a.target: a.reason for a in report.actions_of("drop_invalid", "done")}
        assert dropped == {
            "meetings.idx_chunks_embedding_ccnew": "interrupted_reindex_new",
            "work.maint_dups_x": "invalid",
        }
        assert await conn.fetch(invalid_sql) == []
        assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", CHUNKS_INDEX)
    finally:
        await victim.close()
        await conn.close()


async def test_inserts_keep_flowing_during_concurrent_reindex(db: str) -> None:
    settings = make_settings(reindex_max_per_run=1)
    writer = await connect(settings, db, as_role=False)
    conn = await asyncpg.connect(db)
    try:
        await conn.execute(
            "INSERT INTO ops.index_builds (index_name, table_name, rows_at_build) "
            "VALUES ($1, 'meetings.transcript_chunks', 600)",
            CHUNKS_INDEX,
        )
        vectors = _vectors(5000, seed=2)
        latencies: list[tuple[float, float]] = []  # (start, seconds)
        done = asyncio.Event()

        async def ingest() -> None:
            i = 0
            while not done.is_set():
                start = time.monotonic()
                await writer.execute(
                    INSERT_CHUNK, WS, TRANSCRIPT, MEETING, CHUNK_ROWS + i, vectors[i]
                )
                latencies.append((start, time.monotonic() - start))
                i += 1
                await asyncio.sleep(0.005)

        ingest_task = asyncio.create_task(ingest())
        t0 = time.monotonic()
        report = await run_maintenance(settings, db)
        done.set()
        await ingest_task

        rebuilds = report.actions_of("reindex", "done")
        assert [a.target for a in rebuilds] == [CHUNKS_INDEX], report.to_dict()
        rebuild_s = rebuilds[0].duration_ms / 1000
        inserted = await conn.fetchval(
            "SELECT count(*) FROM meetings.transcript_chunks WHERE content = 'live insert'"
        )
        assert inserted == len(latencies)  # every insert succeeded
        during = [lat for start, lat in latencies if start - t0 < report.duration_ms / 1000]
        worst = max(lat for _, lat in latencies)
        print(
            f"\nREINDEX CONCURRENTLY {CHUNK_ROWS} x {DIM}-dim rows: {rebuild_s:.2f}s; "
            f"{len(latencies)} concurrent inserts, max latency {worst * 1000:.1f} ms, "
            f"median {sorted(x for _, x in latencies)[len(latencies) // 2] * 1000:.1f} ms"
        )
        assert rebuild_s >= 0.5, "rebuild too quick to show anything; load more rows"
        assert len(during) >= 20
        assert worst < rebuild_s / 2  # no insert waited for the rebuild
    finally:
        await writer.close()
        await conn.close()


async def test_slow_queries_reported_and_regression_flagged(db: str) -> None:
    settings = make_settings(slow_query_min_mean_ms=100.0, slow_query_regression_factor=1.5)
    conn = await asyncpg.connect(db)
    try:
        for _ in range(3):
            await conn.fetchval("SELECT pg_sleep($1)", 0.2)
        await conn.fetchval("SELECT pg_sleep(0.01)")  # fast: below the threshold
        with capture_logs() as logs:
            first = await run_maintenance(settings, db)
        sleeps = [q for q in first.slow_queries if "pg_sleep" in q.query]
        assert len(sleeps) == 1, first.to_dict()["slow_queries"]
        entry = sleeps[0]
        assert entry.query == "SELECT pg_sleep($1)"
        assert entry.calls == 3 and 195 <= entry.mean_ms < 400
        assert entry.total_ms == pytest.approx(entry.mean_ms * 3)
        assert entry.rows == 3 and not entry.regression and entry.previous_mean_ms is None
        # PostgreSQL 18's view: the 17+ column names, chosen from the catalog.
        assert first.slow_query_source["columns"] == {
            "mean": "mean_exec_time",
            "total": "total_exec_time",
            "read_time": "shared_blk_read_time",
            "stats_since": "stats_since",
        }
        assert entry.stats_since is not None and entry.read_time_ms is not None
        events = [e for e in logs if e["event"] == "maintenance.slow_query"]
        assert any(e["queryid"] == entry.queryid and e["calls"] == 3 for e in events)

        for _ in range(2):
            await conn.fetchval("SELECT pg_sleep($1)", 0.5)  # same statement, slower now
        second = await run_maintenance(settings, db)
        again = next(q for q in second.slow_queries if q.queryid == entry.queryid)
        assert again.regression and again.previous_mean_ms == pytest.approx(entry.mean_ms)
        assert again.interval_mean_ms is not None and again.interval_mean_ms >= 490
        assert second.counts()["regressions"] >= 1
        stored = await conn.fetch(
            "SELECT run_id, calls, regression, previous_mean_ms FROM ops.slow_query_reports "
            "WHERE queryid = $1 ORDER BY id",
            entry.queryid,
        )
        assert [(r["run_id"], r["calls"], r["regression"]) for r in stored] == [
            (first.run_id, 3, False),
            (second.run_id, 5, True),
        ]
    finally:
        await conn.close()


async def test_missing_pg_stat_statements_warns_and_run_completes(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        await conn.execute("DROP EXTENSION IF EXISTS pg_stat_statements")
    finally:
        await conn.close()
    with capture_logs() as logs:
        report = await run_maintenance(make_settings(), db, force_analyze=True)
    assert report.status == "succeeded"
    assert report.actions_of("analyze", "done")  # the rest of the run went on
    warnings = [e for e in logs if e["event"] == "maintenance.pg_stat_statements_missing"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
    assert "shared_preload_libraries" in warnings[0]["hint"]
    assert "CREATE EXTENSION pg_stat_statements" in warnings[0]["hint"]
    assert report.actions_of("slow_queries", "skipped")[0].reason == "extension_missing"
    source = report.to_dict()["slow_query_source"]
    assert source["available"] is False and source["reason"] == "extension_missing"
    assert source["explanation"] == "pg_stat_statements is not installed in this database"
    assert report.server["pg_stat_statements_available"] is True
    assert any(w.startswith("no slow-query report") for w in report.warnings)


async def test_an_entry_reset_since_the_last_report_is_judged_on_its_own(db: str) -> None:
    """Counters reset for one statement, then a few more calls than before, a little
    slower (150 -> 200 ms, under the 1.5 factor): the totals alone read as 300 ms a call
    ((total - total_then) / (calls - calls_then)), a regression; stats_since (17+) shows
    the entry restarted, so its own mean is compared."""
    settings = make_settings(slow_query_min_mean_ms=100.0, slow_query_regression_factor=1.5)
    conn = await asyncpg.connect(db)
    try:
        for _ in range(2):
            await conn.fetchval("SELECT pg_sleep($1)", 0.15)
        first = await run_maintenance(settings, db)
        [entry] = [q for q in first.slow_queries if "pg_sleep" in q.query]
        await conn.execute("SELECT pg_stat_statements_reset(queryid => $1)", entry.queryid)
        for _ in range(3):
            await conn.fetchval("SELECT pg_sleep($1)", 0.2)
        second = await run_maintenance(settings, db)
        again = next(q for q in second.slow_queries if q.queryid == entry.queryid)
        assert again.calls == 3 and again.total_ms > entry.total_ms
        assert again.stats_since is not None and entry.stats_since is not None
        assert again.stats_since > entry.stats_since
        assert again.mean_ms < 1.5 * entry.mean_ms
        assert not again.regression and again.interval_mean_ms is None
    finally:
        await conn.close()


async def test_two_concurrent_runs_exactly_one_works(db: str) -> None:
    settings = make_settings(maintenance_lock_timeout="30s")
    blocker = await asyncpg.connect(db)
    try:
        await blocker.execute("CREATE TABLE work.maint_hold (id int)")
        tx = blocker.transaction()
        await tx.start()
        # Keeps the winner busy (its ANALYZE of this table waits) while the other tries.
        await blocker.execute("LOCK TABLE work.maint_hold IN SHARE UPDATE EXCLUSIVE MODE")
        runs = [
            asyncio.create_task(run_maintenance(settings, db, force_analyze=True, trigger=t))
            for t in ("cron", "manual")
        ]
        finished, pending = await asyncio.wait(runs, return_when=asyncio.FIRST_COMPLETED)
        assert len(finished) == 1 and len(pending) == 1
        loser = finished.pop().result()
        assert loser.status == "skipped" and not loser.actions
        await tx.rollback()
        winner = await pending.pop()
        assert winner.status == "succeeded" and "work.maint_hold" in analyzed(winner)
        rows = await blocker.fetch("SELECT id, status::text FROM ops.maintenance_runs")
        assert sorted(r["status"] for r in rows) == ["skipped", "succeeded"]
        skipped_row = await run_row(db, loser.run_id)
        assert skipped_row["finished_at"] is not None
        assert json.loads(skipped_row["actions"]) == []
    finally:
        await blocker.close()


async def test_failed_action_is_recorded_and_run_continues(db: str) -> None:
    settings = make_settings(maintenance_lock_timeout="200ms")
    blocker = await asyncpg.connect(db)
    try:
        await blocker.execute("CREATE TABLE work.maint_hold (id int)")
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE work.maint_hold IN SHARE UPDATE EXCLUSIVE MODE")
            report = await run_maintenance(settings, db, force_analyze=True)
        assert report.status == "partial"
        failed = report.actions_of("analyze", "failed")
        assert [a.target for a in failed] == ["work.maint_hold"]
        assert "lock timeout" in (failed[0].error or "")
        assert len(report.actions_of("analyze", "done")) > 10  # the others went on
        assert report.actions_of("slow_queries", "done")
        row = await run_row(db, report.run_id)
        assert row["status"] == "partial"
        stored = [a for a in json.loads(row["actions"]) if a["status"] == "failed"]
        assert stored and stored[0]["target"] == "work.maint_hold"
    finally:
        await blocker.close()
