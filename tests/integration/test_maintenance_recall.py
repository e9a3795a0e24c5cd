"""The REINDEX policy's recall probe against the real servers: PostgreSQL 18 + pgvector 0.8
(the seed's HNSW and migration 006's binary-quantized index) and PostgreSQL 16 + pgvector
0.6 (no binary_quantize, no iterative scans).

A degraded index is made on purpose: ``m = 2, ef_construction = 4`` (the smallest
pgvector allows) over clustered vectors answers far below the target. Raising the index's
options afterwards (``ALTER INDEX ... SET``, no rebuild) stands in for a graph worse than
a rebuild of it would be: the probe must measure the shortfall, the policy must rebuild
for it and say so, and the rebuilt index must then be measured healthy and left alone.
Left weak, a rebuild does not help: the policy must notice that instead of rebuilding
every night. Vectors are clustered (uniformly random ones make every ANN index look
broken, and their binary quantization is all ones).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import numpy as np
import pytest

from worker.core.settings import Settings
from worker.db.migrate import Migrator
from worker.db.pool import connect
from worker.maintenance import MaintenanceReport, run_maintenance
from worker.maintenance import recall as recall_mod
from worker.maintenance import reindex as reindex_mod
from worker.maintenance.capabilities import detect
from worker.servers.embedded import EmbeddedPostgres

DIM = 1536
ROWS = 3000
CHUNKS = "meetings.idx_chunks_embedding"
CONTACTS = "core.idx_contacts_embedding"
WEAK = "USING hnsw (embedding vector_cosine_ops) WITH (m = 2, ef_construction = 4)"
BQ = (
    "USING hnsw ((binary_quantize(embedding)::bit(1536)) bit_hamming_ops) "
    "WITH (m = 16, ef_construction = 64)"
)
WS, MEETING, TRANSCRIPT = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
PARENTS = f"""
INSERT INTO core.workspaces (id, name) VALUES ('{WS}', 'recall probe tests');
INSERT INTO meetings.meetings (id, workspace_id, source, external_id)
VALUES ('{MEETING}', '{WS}', 'test', 'm1');
INSERT INTO meetings.transcripts (id, workspace_id, meeting_id, source, external_id, content_hash)
VALUES ('{TRANSCRIPT}', '{WS}', '{MEETING}', 'test', 't1', 'h');
"""
COLUMNS = ["workspace_id", "transcript_id", "meeting_id", "chunk_index", "content",
           "content_hash", "token_count", "embedding", "embedding_model"]  # fmt: skip


def clustered(n: int, seed: int, clusters: int = 40) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres (within-cluster cosine ~0.5)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


async def load(dsn: str, chunks_index: str, contacts: int = 0) -> None:
    """Migrated database: ROWS clustered chunks under ``chunks_index`` (built after the
    load), ``contacts`` clustered contacts under the seed's index; autovacuum off."""
    await Migrator(dsn).up()
    conn = await connect(Settings(), dsn, as_role=False)
    try:
        await conn.execute("SET client_min_messages = warning")
        await conn.execute(PARENTS)
        for t in ("meetings.transcript_chunks", "core.contacts"):
            await conn.execute(f"ALTER TABLE {t} SET (autovacuum_enabled = false)")
        await conn.execute(f"DROP INDEX {CHUNKS}")
        vectors = clustered(ROWS, seed=1)
        records = [
            (WS, TRANSCRIPT, MEETING, i, f"chunk {i}", f"h{i}", 3, vectors[i], "test")
            for i in range(ROWS)
        ]
        await conn.copy_records_to_table(
            "transcript_chunks", schema_name="meetings", records=records, columns=COLUMNS
        )
        await conn.execute("SET maintenance_work_mem = '256MB'")
        await conn.execute(
            f"CREATE INDEX idx_chunks_embedding ON meetings.transcript_chunks {chunks_index}"
        )
        # This build is not known to the policy (migration 006 recorded its own).
        await conn.execute("DELETE FROM ops.index_builds")
        if contacts:
            people = clustered(contacts, seed=2)
            await conn.executemany(
                "INSERT INTO core.contacts (workspace_id, primary_address, embedding) "
                "VALUES ($1, $2, $3)",
                [(WS, f"c{i}@example.com", people[i]) for i in range(contacts)],
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def database(server: EmbeddedPostgres) -> str:
    name = f"recall_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return server.dsn(name)


async def drop(server: EmbeddedPostgres, dsn: str) -> None:
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db(pg: EmbeddedPostgres) -> AsyncIterator[str]:
    dsn = await database(pg)
    yield dsn
    await drop(pg, dsn)


def settings(**overrides: Any) -> Settings:
    return Settings(**{"maintenance_work_mem": "256MB", "reindex_recall_target": 0.95, **overrides})


def index(report: MaintenanceReport, name: str) -> dict[str, Any]:
    return next(i for i in report.indexes if i["index"] == name)


async def test_a_degraded_index_is_rebuilt_for_its_measured_recall(db: str) -> None:
    await load(db, WEAK, contacts=1200)
    conn = await asyncpg.connect(db)
    try:
        # Stand-in for a graph worse than its rebuild: the rebuild will use these options.
        await conn.execute(f"ALTER INDEX {CHUNKS} SET (m = 16, ef_construction = 64)")

        dry = await run_maintenance(settings(), db, dry_run=True)
        planned = index(dry, CHUNKS)
        print(f"\ndegraded: {planned}")
        assert planned["decision"] == "rebuild" and planned["reason"] == "recall"
        assert planned["recall"] < 0.9  # far below: not sampling noise
        assert planned["probe"]["answered"] == reindex_mod.PROBE_QUERIES
        assert planned["why"].startswith(f"recall@10 {planned['recall']:.2f} < 0.95 on 20 sampled")
        assert [a.status for a in dry.actions_of("reindex")] == ["planned"]

        report = await run_maintenance(settings(), db)
        assert report.status == "succeeded", report.to_dict()
        healthy = index(report, CONTACTS)
        print(f"healthy: {healthy}")
        assert healthy["recall"] >= 0.95 and healthy["decision"] == "baseline"
        [rebuilt] = report.actions_of("reindex", "done")
        assert rebuilt.target == CHUNKS and rebuilt.reason == "recall"
        assert rebuilt.details["recall_before"] == planned["recall"] or (
            rebuilt.details["recall_before"] < 0.9  # a new sample, the same shortfall
        )
        assert rebuilt.details["recall_after"] >= 0.95
        assert "< 0.95 on 20 sampled queries" in rebuilt.details["policy"]
        reason = await conn.fetchval(
            "SELECT reason FROM ops.index_builds WHERE index_name = $1", CHUNKS
        )
        assert reason == "recall"

        after = await run_maintenance(settings(), db)
        assert not after.actions_of("reindex")
        left = index(after, CHUNKS)
        assert left["decision"] == "none" and left["reason"] == "within_policy"
        assert left["recall"] >= 0.95 and left["recall_after_build"] >= 0.95

        # Growth and dead tuples measured harmless do not rebuild (bench/INDEX.md, Drift).
        await conn.execute(
            "UPDATE ops.index_builds SET rows_at_build = 1000 WHERE index_name = $1", CHUNKS
        )
        await conn.execute("DELETE FROM meetings.transcript_chunks WHERE chunk_index % 3 = 0")
        await conn.execute("SELECT pg_stat_force_next_flush()")
        grown = await run_maintenance(settings(reindex_bloat_ratio=0.9), db)
        chunks = index(grown, CHUNKS)
        print(f"grown, a third deleted: {chunks}")
        assert chunks["growth"] >= 2.0 and chunks["dead_ratio"] > 0.3
        assert chunks["recall"] >= 0.9 and chunks["decision"] == "none"
        assert "growth measured harmless" in chunks["why"]
    finally:
        await conn.close()


async def test_a_rebuild_that_cannot_restore_recall_is_not_repeated(db: str) -> None:
    await load(db, WEAK)
    first = await run_maintenance(settings(), db)
    [rebuilt] = first.actions_of("reindex", "done")
    assert rebuilt.reason == "recall" and rebuilt.details["recall_after"] < 0.9
    second = await run_maintenance(settings(), db)
    assert not second.actions_of("reindex")
    chunks = index(second, CHUNKS)
    assert chunks["decision"] == "none"
    assert chunks["reason"] == "recall_below_target_since_build"
    assert "right after the last rebuild" in chunks["why"]
    # No probe (target 0): the growth and bloat rules alone, as before.
    off = await run_maintenance(settings(reindex_recall_target=0), db)
    assert index(off, CHUNKS)["probe"] is None and index(off, CHUNKS)["reason"] == "within_policy"


async def test_binary_quantized_index_is_probed_and_its_size_estimated(db: str) -> None:
    await load(db, BQ)
    report = await run_maintenance(settings(), db, dry_run=True)
    chunks = index(report, CHUNKS)
    print(f"\nbinary-quantized: {chunks}")
    # bit(1536): 192 bytes + 8 of header per element; a fresh build fits the estimate.
    assert chunks["expected_pages"] is not None and chunks["bloat"] < 0.05
    assert "hamming" in chunks["probe"]["shape"]
    assert chunks["recall"] >= 0.95 and chunks["decision"] == "baseline"


async def test_probe_shapes_from_index_definitions() -> None:
    assert recall_mod.parse(f"CREATE INDEX i ON t {WEAK}") == ("embedding", "<=>", None)
    assert recall_mod.parse(
        "CREATE INDEX i ON t USING hnsw (((public.binary_quantize(embedding))::bit(1536)) "
        "public.bit_hamming_ops)"
    ) == ("embedding", "<=>", 1536)
    assert recall_mod.parse(
        "CREATE INDEX i ON t USING ivfflat (embedding vector_l2_ops) WITH (lists='10')"
    ) == ("embedding", "<->", None)
    assert recall_mod.parse("CREATE INDEX i ON t USING hnsw ((embedding::halfvec(3)) x)") is None


async def test_probe_on_pgvector_06(pg16: EmbeddedPostgres) -> None:
    dsn = await database(pg16)
    try:
        await load(dsn, WEAK)
        conn = await connect(Settings(), dsn, as_role=False)
        try:
            caps = await detect(conn)
            assert not caps.iterative_index_scans and not caps.halfvec
        finally:
            await conn.close()
        report = await run_maintenance(settings(), dsn)
        assert report.status == "succeeded", report.to_dict()
        [rebuilt] = report.actions_of("reindex", "done")
        assert rebuilt.target == CHUNKS and rebuilt.reason == "recall"
        assert rebuilt.details["recall_before"] < 0.9
    finally:
        await drop(pg16, dsn)


async def test_churn_since_the_build_rebuilds(db: str) -> None:
    seed = "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
    await load(db, seed)
    await run_maintenance(settings(), db)  # first seen: baseline (3,000 rows)
    counted = await run_maintenance(settings(), db)  # the first run after it: counters
    assert index(counted, CHUNKS)["churn"] is None
    conn = await connect(Settings(), db, as_role=False)
    try:
        # A third of the rows replaced: deleted (and vacuumed, as autovacuum would),
        # then as many new ones written into the freed graph slots.
        await conn.execute("DELETE FROM meetings.transcript_chunks WHERE chunk_index < 1100")
        await conn.execute("VACUUM meetings.transcript_chunks")
        fresh = clustered(1100, seed=3)
        await conn.copy_records_to_table(
            "transcript_chunks",
            schema_name="meetings",
            columns=COLUMNS,
            records=[
                (WS, TRANSCRIPT, MEETING, ROWS + i, "new", f"n{i}", 3, fresh[i], "test")
                for i in range(1100)
            ],
        )
        await conn.execute("SELECT pg_stat_force_next_flush()")
    finally:
        await conn.close()
    churned = await run_maintenance(settings(), db)
    chunks = index(churned, CHUNKS)
    print(f"\nchurned: {chunks}")
    assert chunks["recall"] >= 0.9  # the probe cannot see it; the churn rule does
    assert chunks["churn"] >= 0.33 and chunks["decision"] == "rebuild"
    assert chunks["reason"] == "churn"
    assert chunks["why"].startswith("37% of the rows replaced since the build >= 33%")
    assert [a.reason for a in churned.actions_of("reindex", "done")] == ["churn"]
    again = await run_maintenance(settings(), db)  # counted afresh from this build
    assert index(again, CHUNKS)["churn"] is None and not again.actions_of("reindex")


IVF_ONE_LIST = (
    "USING ivfflat ((binary_quantize(embedding)::bit(1536)) bit_hamming_ops) WITH (lists = 1)"
)


async def test_ivfflat_lists_follow_the_rows(db: str) -> None:
    """Migration 007 builds its IVFFlat indexes with ops.ivfflat_lists of the rows there:
    one list on a fresh database. Once the table holds 3,000 rows the rule calls for 3:
    the job re-creates the index with them (same name, valid, search still answers from
    it), probes it as search_memory does, records the build, and leaves it alone next."""
    await load(db, IVF_ONE_LIST)
    report = await run_maintenance(settings(), db)
    chunks = index(report, CHUNKS)
    print(f"\nivfflat: {chunks}")
    assert chunks["decision"] == "rebuild" and chunks["reason"] == "lists"
    assert "1 lists where its rows call for 3" in chunks["why"]
    action = next(a for a in report.actions if a.kind == "reindex" and a.target == CHUNKS)
    assert action.status == "done", action
    assert action.details["lists_before"] == 1 and action.details["lists_after"] == 3
    conn = await asyncpg.connect(db)
    try:
        defs = await conn.fetch(
            "SELECT c.relname, i.indisvalid, pg_get_indexdef(c.oid) AS def FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'meetings.transcript_chunks'::regclass AND c.relam = "
            "(SELECT oid FROM pg_am WHERE amname = 'ivfflat')"
        )
        assert [(r["relname"], r["indisvalid"]) for r in defs] == [("idx_chunks_embedding", True)]
        assert "lists='3'" in defs[0]["def"] and "binary_quantize" in defs[0]["def"]
        built = await conn.fetchrow(
            "SELECT rows_at_build, reason FROM ops.index_builds WHERE index_name = $1", CHUNKS
        )
        assert built["rows_at_build"] == ROWS and built["reason"] == "lists"
        q = "[" + ",".join(f"{x:.6f}" for x in clustered(1, seed=9)[0]) + "]"
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT id FROM meetings.transcript_chunks ORDER BY "
                "binary_quantize(embedding)::bit(1536) <~> binary_quantize($1::vector) LIMIT 10",
                q,
            )
        )
        assert "idx_chunks_embedding" in plan
        hits = await conn.fetch(
            "SELECT * FROM public.search_memory($1, $2::vector, NULL, 5)", WS, q
        )
        assert len(hits) == 5
    finally:
        await conn.close()
    again = index(await run_maintenance(settings(), db, dry_run=True), CHUNKS)
    assert again["decision"] == "none" and again["reason"] == "within_policy", again
    assert again["recall"] >= 0.9 and "hamming" in again["probe"]["shape"]
