"""Run the index options against one embedded PostgreSQL 18 + pgvector and measure them.

The table: ``bench_index.chunks`` in a scratch database with the real migrations applied
(so the roles, ``core.workspaces``/``core.members`` and the RLS helpers are the schema's
own). It has the columns of ``meetings.transcript_chunks`` an index or a search touches:
``id uuid`` primary key, ``workspace_id uuid`` (FK to ``core.workspaces``), ``content``,
``content_hash``, ``embedding_model``, ``embedding vector(1536)``, the btree
``(workspace_id, embedding_model, content_hash)`` of ``idx_chunks_ws_model_hash``, RLS
enabled with the schema's policies (``authenticated`` reads ``workspace_id IN (SELECT
authz.user_workspaces())``; ``service_role`` all). Autovacuum is off on it so that no
vacuum or analyze lands inside a measurement.

Per option: the first ``base`` rows are loaded once by binary COPY with no vector index
(the bulk-backfill path's first half), then per option the index is built with
``max_parallel_maintenance_workers = 2`` (its second half), the remaining rows are
written with the worker's pattern (binary COPY, ``batch`` rows per transaction,
``writers`` concurrent connections as ``service_role``) into the indexed table, the
queries run, and the index and the inserted rows are dropped again.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from pgvector.asyncpg import register_vector

from bench.index.options import K, Option, Variant
from bench.index.vectors import Corpus, row_index, row_uuid, user_uuid, workspace_uuid
from worker.core.settings import REPO_ROOT
from worker.db.migrate import Migrator
from worker.servers.embedded import EmbeddedPostgres

TABLE = "bench_index.chunks"
PART_TABLE = "bench_index.chunks_part"
MODEL = "text-embedding-3-small"
COLUMNS = ["id", "workspace_id", "content", "content_hash", "embedding_model", "embedding"]
SERVER_CONF = {
    "fsync": "on",
    "synchronous_commit": "on",
    # The largest index (seed HNSW on 100k x 1536) is ~800 MB: it fits, as it should in
    # production; queries then measure the index, not the page cache.
    "shared_buffers": "2GB",
    # No checkpoint inside a measurement: each phase starts after an explicit CHECKPOINT.
    "max_wal_size": "16GB",
    "checkpoint_timeout": "60min",
}
BUILD_SETTINGS = {"maintenance_work_mem": "2GB", "max_parallel_maintenance_workers": "2"}
#: every query variant plans with the workspace value unless it says otherwise
DEFAULT_QUERY_SETTINGS = {"plan_cache_mode": "force_custom_plan"}
WARMUP = 20


def log(msg: str) -> None:
    print(f"[bench.index {time.strftime('%H:%M:%S')}] {msg}", flush=True)


SCHEMA_SQL = """
CREATE SCHEMA bench_index;
CREATE TABLE bench_index.chunks (
  id               uuid PRIMARY KEY,
  workspace_id     uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  content          text NOT NULL,
  content_hash     text NOT NULL,
  embedding_model  text,
  embedding        vector(1536),
  created_at       timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_enabled = off);
CREATE INDEX idx_bi_ws_model_hash ON bench_index.chunks (workspace_id, embedding_model, content_hash);
GRANT USAGE ON SCHEMA bench_index TO authenticated, service_role;
"""

POLICY_SQL = """
ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;
CREATE POLICY {n}_all_service ON {t} FOR ALL TO service_role USING (true) WITH CHECK (true);
CREATE POLICY {n}_select_member ON {t} FOR SELECT TO authenticated
  USING (workspace_id IN (SELECT authz.user_workspaces()));
GRANT SELECT ON {t} TO authenticated;
GRANT ALL ON {t} TO service_role;
"""


@dataclass
class Plan:
    """What a query plan uses, per workspace: node types and index names, top down."""

    nodes: list[str]

    @classmethod
    def from_json(cls, text: str) -> Plan:
        out: list[str] = []

        def walk(node: dict[str, Any]) -> None:
            label = node["Node Type"]
            if "Index Name" in node:
                label += f" {node['Index Name']}"
            if "Relation Name" in node and "Index Name" not in node:
                label += f" {node['Relation Name']}"
            out.append(label)
            for child in node.get("Plans", []):
                walk(child)

        walk(json.loads(text)[0]["Plan"])
        return cls(out)


@dataclass
class Bench:
    pg: EmbeddedPostgres
    dsn: str
    corpus: Corpus
    base_rows: int
    writers: int
    batch: int
    queries: np.ndarray
    query_ws: np.ndarray
    truth: np.ndarray  # queries x K row indices (replaced by SQL exact when measured)
    truth_source: str = "numpy"
    pgvector: str = ""
    server: str = ""
    notices: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ setup
    @classmethod
    async def create(
        cls,
        root: Path,
        corpus: Corpus,
        base_rows: int,
        writers: int,
        batch: int,
        queries: np.ndarray,
        query_ws: np.ndarray,
        truth: np.ndarray,
        server: str = "pg18",
    ) -> Bench:
        if server == "pg16":
            # PostgreSQL 16.2 + pgvector 0.6.2 from the pgserver wheel (a dev dependency),
            # as the tests' pg16 subset runs it; it has no pg_stat_statements to preload.
            from tests.support.servers import pgserver_bin

            conf = {**SERVER_CONF, "shared_preload_libraries": "''"}
            pg = EmbeddedPostgres(root / "pg", extra_conf=conf, bin_dir=pgserver_bin()).start()
        else:
            pg = EmbeddedPostgres(root / "pg", extra_conf=SERVER_CONF).start()
        conn = await asyncpg.connect(pg.dsn())
        await conn.execute('CREATE DATABASE "bench_index"')
        await conn.close()
        dsn = pg.dsn("bench_index")
        await Migrator(dsn, REPO_ROOT / "migrations").up()
        bench = cls(pg, dsn, corpus, base_rows, writers, batch, queries, query_ws, truth)
        conn = await bench.connect()
        try:
            await conn.execute(SCHEMA_SQL)
            await conn.execute(POLICY_SQL.format(t=TABLE, n="chunks"))
            for w in range(len(corpus.shares)):
                await conn.execute(
                    "INSERT INTO core.workspaces (id, name) VALUES ($1, $2)",
                    workspace_uuid(w),
                    f"bench ws {w} ({corpus.ws_rows[w]} rows)",
                )
                await conn.execute(
                    "INSERT INTO core.members (workspace_id, user_id, role) VALUES ($1, $2, 'member')",
                    workspace_uuid(w),
                    user_uuid(w),
                )
            bench.pgvector = await conn.fetchval(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            )
            bench.server = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        return bench

    async def connect(self, role: str | None = None) -> asyncpg.Connection:
        settings = {"application_name": "bench.index"}
        if role:
            settings["role"] = role
        conn = await asyncpg.connect(self.dsn, server_settings=settings, command_timeout=None)
        schema = await conn.fetchval(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'vector'"
        )
        await register_vector(conn, schema=schema)
        return conn

    def records(self, lo: int, hi: int) -> list[tuple[Any, ...]]:
        vecs = self.corpus.vectors(lo, hi)
        c = self.corpus
        return [
            (
                row_uuid(i),
                workspace_uuid(int(c.row_ws[i])),
                c.content(i),
                f"{i:016x}",
                MODEL,
                vecs[i - lo],
            )
            for i in range(lo, hi)
        ]

    async def checkpoint(self) -> None:
        conn = await self.connect()
        await conn.execute("CHECKPOINT")
        await conn.close()

    async def load_base(self) -> dict[str, Any]:
        """Binary COPY of the base rows, no vector index: rows/s of the COPY alone (the
        generator's time is outside the clock)."""
        await self.checkpoint()
        conn = await self.connect(role="service_role")
        copy_s = 0.0
        wall = time.perf_counter()
        for lo in range(0, self.base_rows, 5000):
            recs = self.records(lo, min(self.base_rows, lo + 5000))
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "chunks", schema_name="bench_index", columns=COLUMNS, records=recs
                )
            copy_s += time.perf_counter() - t0
        wall = time.perf_counter() - wall
        await conn.execute("ANALYZE bench_index.chunks")
        sizes = await conn.fetchrow(
            "SELECT pg_relation_size('bench_index.chunks') AS heap, "
            "pg_table_size('bench_index.chunks') AS heap_toast"
        )
        await conn.close()
        log(f"base load: {self.base_rows} rows, COPY {copy_s:.1f} s (wall {wall:.1f} s)")
        return {
            "rows": self.base_rows,
            "copy_s": round(copy_s, 2),
            "rows_per_s": round(self.base_rows / copy_s, 1),
            "heap_mb": round(sizes["heap"] / 2**20, 1),
            "heap_toast_mb": round(sizes["heap_toast"] / 2**20, 1),
        }

    # ------------------------------------------------------------------ per option
    def fmt(self, sql: str, table: str) -> str:
        ws = {f"ws_{w}": str(workspace_uuid(w)) for w in range(len(self.corpus.shares))}
        return sql.format(t=table, **ws)

    async def make_partitioned(self) -> float:
        conn = await self.connect()
        try:
            await conn.execute(
                f"CREATE TABLE {PART_TABLE} (LIKE {TABLE} INCLUDING DEFAULTS) "
                "PARTITION BY LIST (workspace_id)"
            )
            await conn.execute(f"ALTER TABLE {PART_TABLE} ADD PRIMARY KEY (workspace_id, id)")
            await conn.execute(
                f"CREATE INDEX idx_bi_part_ws ON {PART_TABLE} "
                "(workspace_id, embedding_model, content_hash)"
            )
            for w in range(len(self.corpus.shares)):
                await conn.execute(
                    f"CREATE TABLE bench_index.chunks_p{w} PARTITION OF {PART_TABLE} "
                    f"FOR VALUES IN ('{workspace_uuid(w)}') WITH (autovacuum_enabled = off)"
                )
            await conn.execute(
                f"ALTER TABLE {PART_TABLE} ADD FOREIGN KEY (workspace_id) "
                "REFERENCES core.workspaces (id) ON DELETE CASCADE"
            )
            await conn.execute(POLICY_SQL.format(t=PART_TABLE, n="chunks_part"))
            await self._checkpoint_on(conn)
            t0 = time.perf_counter()
            await conn.execute(f"INSERT INTO {PART_TABLE} SELECT * FROM {TABLE}")
            load_s = time.perf_counter() - t0
            await conn.execute(f"ANALYZE {PART_TABLE}")
            return load_s
        finally:
            await conn.close()

    @staticmethod
    async def _checkpoint_on(conn: asyncpg.Connection) -> None:
        await conn.execute("CHECKPOINT")

    async def build(self, option: Option, table: str) -> tuple[float, list[str]]:
        conn = await self.connect()
        notices: list[str] = []
        conn.add_log_listener(lambda _c, msg: notices.append(str(msg)))
        try:
            for k, v in BUILD_SETTINGS.items():
                await conn.execute(f"SET {k} = '{v}'")
            await conn.execute("CHECKPOINT")
            t0 = time.perf_counter()
            for ddl in option.ddl:
                await conn.execute(self.fmt(ddl, table))
            build_s = time.perf_counter() - t0
            if option.ddl:
                await conn.execute(f"ANALYZE {table}")
            return build_s, notices
        finally:
            await conn.close()

    async def insert(self, table: str) -> dict[str, Any]:
        """The worker's write pattern: binary COPY of ``batch`` rows per transaction on
        ``writers`` concurrent service_role connections, into the indexed table."""
        lo, hi = self.base_rows, self.corpus.rows
        batches = [self.records(s, min(hi, s + self.batch)) for s in range(lo, hi, self.batch)]
        schema, name = table.split(".")
        conns = [await self.connect(role="service_role") for _ in range(self.writers)]
        await self.checkpoint()
        queue: asyncio.Queue[list[tuple[Any, ...]]] = asyncio.Queue()
        for b in batches:
            queue.put_nowait(b)
        commit_ms: list[float] = []

        async def writer(conn: asyncpg.Connection) -> None:
            while not queue.empty():
                recs = queue.get_nowait()
                t = time.perf_counter()
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        name, schema_name=schema, columns=COLUMNS, records=recs
                    )
                commit_ms.append((time.perf_counter() - t) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(writer(c) for c in conns))
        elapsed = time.perf_counter() - t0
        for c in conns:
            await c.close()
        n = hi - lo
        return {
            "rows": n,
            "seconds": round(elapsed, 2),
            "rows_per_s": round(n / elapsed, 1),
            "transaction_ms_p50": round(statistics.median(commit_ms), 1),
            "transaction_ms_max": round(max(commit_ms), 1),
        }

    async def index_mb(self, names: tuple[str, ...]) -> float:
        conn = await self.connect()
        total = 0
        for n in names:
            # a partitioned index: its partitions' sizes; a plain one: its own
            total += int(
                await conn.fetchval(
                    "SELECT coalesce(sum(pg_relation_size(relid)), "
                    "pg_relation_size($1::regclass)) FROM pg_partition_tree($1::regclass)",
                    f"bench_index.{n}",
                )
            )
        await conn.close()
        return round(total / 2**20, 1)

    async def cleanup(self, option: Option) -> None:
        conn = await self.connect()
        try:
            if option.table == "partitioned":
                await conn.execute(f"DROP TABLE {PART_TABLE}")
            for n in option.indexes:
                await conn.execute(f"DROP INDEX IF EXISTS bench_index.{n}")
            await conn.execute(
                f"DELETE FROM {TABLE} WHERE id = ANY($1::uuid[])",
                [row_uuid(i) for i in range(self.base_rows, self.corpus.rows)],
            )
            await conn.execute(f"VACUUM {TABLE}")
        finally:
            await conn.close()

    # ------------------------------------------------------------------ queries
    async def run_variant(self, variant: Variant, table: str) -> dict[str, Any]:
        conn = await self.connect(role="authenticated")
        settings = DEFAULT_QUERY_SETTINGS | variant.settings
        try:
            for k, v in settings.items():
                await conn.execute(f"SET {k} = '{v}'")
            sql = variant.sql.format(t=table)
            stmt = await conn.prepare(sql)
            claims = [
                json.dumps({"sub": str(user_uuid(int(w))), "role": "authenticated"})
                for w in self.query_ws
            ]

            async def one(i: int) -> tuple[float, list[int]]:
                w = int(self.query_ws[i])
                async with conn.transaction():
                    await conn.execute(
                        "SELECT set_config('request.jwt.claims', $1, true)", claims[i]
                    )
                    t0 = time.perf_counter()
                    rows = await stmt.fetch(workspace_uuid(w), self.queries[i])
                    dt = (time.perf_counter() - t0) * 1000
                return dt, [row_index(r["id"]) for r in rows]

            for i in range(min(WARMUP, len(self.queries))):
                await one(i)
            lat = np.zeros(len(self.queries))
            got: list[list[int]] = []
            for i in range(len(self.queries)):
                lat[i], ids = await one(i)
                got.append(ids)
            plans = await self.plans(conn, sql)
        finally:
            await conn.close()
        return self.summarize(variant, settings, lat, got, plans)

    async def plans(self, conn: asyncpg.Connection, sql: str) -> dict[str, list[str]]:
        """The plan each workspace's first query gets (EXPLAIN EXECUTE of a prepared
        statement, so ``plan_cache_mode`` applies as it does to the measured queries)."""
        out: dict[str, list[str]] = {}
        await conn.execute(f"PREPARE bench_q (uuid, vector) AS {sql}")
        try:
            for w in range(len(self.corpus.shares)):
                i = int(np.flatnonzero(self.query_ws == w)[0])
                vec = "[" + ",".join(f"{x:.7g}" for x in self.queries[i]) + "]"
                claims = json.dumps({"sub": str(user_uuid(w)), "role": "authenticated"})
                async with conn.transaction():
                    await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", claims)
                    text = await conn.fetchval(
                        f"EXPLAIN (FORMAT JSON) EXECUTE bench_q('{workspace_uuid(w)}', '{vec}')"
                    )
                out[f"ws{w}"] = Plan.from_json(text).nodes
        finally:
            await conn.execute("DEALLOCATE bench_q")
        return out

    def summarize(
        self,
        variant: Variant,
        settings: dict[str, str],
        lat: np.ndarray,
        got: list[list[int]],
        plans: dict[str, list[str]],
    ) -> dict[str, Any]:
        recall = np.array(
            [len(set(g) & set(self.truth[i].tolist())) / K for i, g in enumerate(got)]
        )
        returned = np.array([len(g) for g in got])
        tiny = len(self.corpus.shares) - 1
        is_tiny = self.query_ws == tiny

        def block(mask: np.ndarray) -> dict[str, Any]:
            return {
                "queries": int(mask.sum()),
                "p50_ms": round(float(np.percentile(lat[mask], 50)), 2),
                "p95_ms": round(float(np.percentile(lat[mask], 95)), 2),
                "recall_at_10": round(float(recall[mask].mean()), 4),
                "recall_min": round(float(recall[mask].min()), 2),
                "rows_returned_mean": round(float(returned[mask].mean()), 2),
                "rows_returned_min": int(returned[mask].min()),
                "short_results": int((returned[mask] < K).sum()),
            }

        per_ws = {}
        for w in range(len(self.corpus.shares)):
            per_ws[f"ws{w}"] = {"rows": self.corpus.ws_rows[w], **block(self.query_ws == w)}
        return {
            "name": variant.name,
            "settings": settings,
            "sql": variant.sql,
            "note": variant.note,
            "main": block(~is_tiny),
            "tiny": block(is_tiny),
            "all": block(np.ones_like(is_tiny)),
            "per_workspace": per_ws,
            "plans": plans,
            "_ids": got,
        }

    def supports(self, needed: tuple[int, ...] | str) -> bool:
        if isinstance(needed, str):
            needed = tuple(int(x) for x in needed.split("."))
        have = tuple(int(x) for x in self.pgvector.split(".")[:2])
        return have >= tuple(needed)

    async def run_option(self, option: Option) -> dict[str, Any]:
        log(f"option {option.name}: {option.description}")
        started = time.perf_counter()
        table = TABLE
        result: dict[str, Any] = {
            "name": option.name,
            "description": option.description,
            "pgvector_needed": option.pgvector,
            "ddl": [
                self.fmt(d, PART_TABLE if option.table == "partitioned" else TABLE)
                for d in option.ddl
            ],
        }
        if option.table == "partitioned":
            table = PART_TABLE
            load_s = await self.make_partitioned()
            result["partition_load_s"] = round(load_s, 2)
            log(f"  partitioned copy of the base rows: {load_s:.1f} s")
        build_s, notices = await self.build(option, table)
        result["build_s"] = round(build_s, 2)
        result["build_notices"] = notices
        log(f"  build {build_s:.1f} s {notices if notices else ''}")
        ins = await self.insert(table)
        result["insert"] = ins
        log(f"  insert {ins['rows']} rows: {ins['rows_per_s']} rows/s")
        result["index_mb"] = await self.index_mb(option.indexes)
        log(f"  index {result['index_mb']} MB")
        result["variants"] = []
        result["skipped_variants"] = [
            v.name for v in option.variants if not self.supports(v.pgvector)
        ]
        for v in option.variants:
            if not self.supports(v.pgvector):
                continue
            r = await self.run_variant(v, table)
            log(
                f"  {v.name}: p50 {r['main']['p50_ms']} p95 {r['main']['p95_ms']} ms, "
                f"recall {r['main']['recall_at_10']}; tiny rows {r['tiny']['rows_returned_mean']}"
                f" recall {r['tiny']['recall_at_10']} p95 {r['tiny']['p95_ms']} ms; "
                f"plans {_short_plans(r['plans'])}"
            )
            result["variants"].append(r)
        await self.cleanup(option)
        result["seconds"] = round(time.perf_counter() - started, 1)
        return result


def _short_plans(plans: dict[str, list[str]]) -> str:
    return "; ".join(
        f"{w}: {'>'.join(re.sub(r'^(Index Scan|Index Only Scan) ', 'IS ', n) for n in nodes)}"
        for w, nodes in plans.items()
    )


async def measure(
    corpus: Corpus,
    base_rows: int,
    writers: int,
    batch: int,
    queries: np.ndarray,
    query_ws: np.ndarray,
    truth: np.ndarray,
    opts: list[Option],
    keep: bool = False,
    server: str = "pg18",
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="cos-bench-index-"))
    log(f"PostgreSQL in {root}")
    bench = await Bench.create(
        root, corpus, base_rows, writers, batch, queries, query_ws, truth, server
    )
    out: dict[str, Any] = {
        "server": bench.server,
        "pgvector": bench.pgvector,
        "server_conf": SERVER_CONF,
        "build_settings": BUILD_SETTINGS,
        "default_query_settings": DEFAULT_QUERY_SETTINGS,
        "options": [],
    }
    try:
        out["base_load"] = await bench.load_base()
        for opt in opts:
            if not bench.supports(opt.pgvector):
                log(f"option {opt.name}: skipped (needs pgvector {opt.pgvector})")
                out.setdefault("skipped_options", []).append(opt.name)
                continue
            res = await bench.run_option(opt)
            if opt.name == "exact":
                sql_ids = res["variants"][0]["_ids"]
                agree = np.mean(
                    [len(set(ids) & set(truth[i].tolist())) / K for i, ids in enumerate(sql_ids)]
                )
                out["truth_check"] = {
                    "sql_exact_vs_numpy_exact_overlap": round(float(agree), 4),
                    "note": "the exact option's recall is against the numpy exact top-10; "
                    "every later option's against the SQL exact result",
                }
                bench.truth = np.array(
                    [ids + [-1] * (K - len(ids)) for ids in sql_ids], dtype=np.int64
                )
                bench.truth_source = "sql"
            out["options"].append(res)
        out["truth_source"] = bench.truth_source
    finally:
        bench.pg.stop(mode="fast")
        if not keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    for o in out["options"]:
        for v in o["variants"]:
            v.pop("_ids", None)
    return out
