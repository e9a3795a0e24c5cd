"""Index drift: ``python -m bench.index --drift [--rows N] [--only bq seed] [--server pg16]``.

How much an index built once and then maintained row by row (the worker's writes,
deletes, VACUUM) answers worse than a fresh build of the same rows: the number that
should decide a REINDEX. For each index design, on the scratch database of
``bench.index`` (same generator, table, RLS, workspaces, query machinery):

1. build the index on ``N`` rows (``--rows``, default 30,000) and measure;
2. **growth**: insert rows through the index with the worker's pattern (binary COPY,
   250-row transactions, 4 writers) up to +50 %, +100 %, +200 %;
3. **deletes** (from a fresh build on ``N`` rows): delete whole documents (the worker
   deletes an item's chunks together) until 10 %, 30 %, 50 % of the rows are gone;
   measured before VACUUM (dead tuples still in the graph) and after it (as autovacuum
   would);
4. **churn** (from a fresh build on ``N`` rows): rounds of deleting a third of the
   rows' documents, VACUUM, and inserting as many new rows (they reuse the freed space),
   to 100 % turnover.

After each step the shipped query shape runs (``--queries`` queries, recall@10 against
the exact top 10 of the rows then in the table, p50/p95 of the large workspaces), the
maintenance job's recall probe runs (:mod:`worker.maintenance.recall`, what the nightly
policy would see), and then the same is measured on a fresh build of the same rows:
``REINDEX`` inside a transaction that is rolled back afterwards, so the next step
continues from the maintained index. *Drift* = drifted minus rebuilt.

An IVFFlat design (``bq_ivf``: lists = rows/1000 at the build) is also re-created with
lists = rows/1000 of the rows then present, and measured at several ``ivfflat.probes``
(1, 5, 10, sqrt(lists)); the probe runs as the maintenance job runs it and with the
search's ``ivfflat.*`` settings. ``--scenarios cold``: the IVFFlat created on the empty
table (lists 1, as a migration on a fresh database), rows written through it to
``--cold-rows`` and 1x, 2x ``--rows``, each compared with a re-creation;
``--scenarios sweep``: built with each of ``--sweep-lists`` lists on each of
``--sweep-rows`` rows, recall@10 and p95 by probes (1-40, sqrt(lists); sort disabled, so
the index answers).

Writes ``OUT/drift_<rows>[_pg16][_<tag>].json`` and prints a Markdown table; the conclusions are
written by hand in bench/INDEX.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from bench.index.measure import COLUMNS, TABLE, Bench, Plan, log
from bench.index.options import SQL_VECTOR, K, hnsw_ddl, ivf_lists, sql_binary
from bench.index.vectors import Corpus, row_index, row_uuid, user_uuid, workspace_uuid
from worker.maintenance import recall as recall_mod

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "results" / "index"
INDEX = "idx_bi_drift"
BQ_EXPR = "(binary_quantize(embedding)::bit(1536)) bit_hamming_ops"


@dataclass(frozen=True)
class Design:
    name: str
    ddl: str  # "{t}" the table; an IVFFlat's "{lists}" its lists
    sql: str
    settings: dict[str, str]
    pgvector: tuple[int, int]
    description: str

    @property
    def ivf(self) -> bool:
        return "{lists}" in self.ddl


#: probes measured at every step of an IVFFlat design besides the design's own
#: ("sqrt": round(sqrt(lists))), and in the lists sweep
IVF_PROBES: tuple[int | str, ...] = (1, 5, 10, "sqrt")
SWEEP_PROBES: tuple[int | str, ...] = (1, 2, 3, 5, 10, 20, 40, "sqrt")


def ivf_probes(p: int | str, lists: int) -> int:
    return max(1, round(lists**0.5)) if p == "sqrt" else int(p)


#: no sort left to the planner: ORDER BY distance from the index (bench.index's "forced")
FORCED = {"enable_sort": "off"}


def ivf_settings(probes: int) -> dict[str, str]:
    return {"ivfflat.probes": str(probes), "ivfflat.iterative_scan": "relaxed_order"}


def designs(iterative: bool, ivf_probe: int = 10) -> list[Design]:
    bq_settings = {"hnsw.ef_search": "100"}
    if iterative:
        bq_settings["hnsw.iterative_scan"] = "relaxed_order"
    return [
        Design(
            "bq",
            hnsw_ddl(INDEX, 16, 64, BQ_EXPR),
            sql_binary(100),
            bq_settings,
            (0, 7),
            "binary-quantized HNSW (migration 006), 100 Hamming candidates re-ranked by cosine",
        ),
        Design(
            "seed",
            hnsw_ddl(INDEX, 16, 64),
            SQL_VECTOR,
            {"hnsw.ef_search": "100"},
            (0, 5),
            "seed vector HNSW m 16 / ef_construction 64, ef_search 100 (the 0.6 fallback)",
        ),
        Design(
            "bq_ivf",
            f"CREATE INDEX {INDEX} ON {{t}} USING ivfflat ({BQ_EXPR}) WITH (lists = {{lists}})",
            sql_binary(100),
            ivf_settings(ivf_probe),
            (0, 8),
            f"binary-quantized IVFFlat (lists = rows/1000 at the build), 100 Hamming "
            f"candidates re-ranked by cosine, probes {ivf_probe}, relaxed_order",
        ),
    ]


class Drift:
    """One scratch server; the table's live rows are tracked here (row indices)."""

    def __init__(self, bench: Bench, sims: np.ndarray, probe_samples: int) -> None:
        self.bench = bench
        self.sims = sims  # queries x corpus rows, cosine
        self.live = np.zeros(bench.corpus.rows, dtype=bool)
        self.probe_samples = probe_samples
        self.next_new = 0  # next never-inserted row for growth/churn
        self.lists = 0  # an IVFFlat design's lists at its last build
        self.ivf_probes = IVF_PROBES
        self.forced: dict[str, str] = {}  # added to every query's settings (the sweep's)

    # ------------------------------------------------------------------ table state
    async def load(self, rows: np.ndarray, writers: int = 1, batch: int = 5000) -> float:
        """COPY rows ``rows`` (sorted indices) in ``batch``-row transactions on ``writers``
        service_role connections; seconds."""
        corpus = self.bench.corpus
        chunks = [rows[i : i + batch] for i in range(0, len(rows), batch)]
        conns = [await self.bench.connect(role="service_role") for _ in range(writers)]
        queue: asyncio.Queue[np.ndarray] = asyncio.Queue()
        for c in chunks:
            queue.put_nowait(c)

        async def writer(conn: asyncpg.Connection) -> None:
            while not queue.empty():
                idx = queue.get_nowait()
                vecs = corpus.rows_at(idx)
                recs = [
                    (
                        row_uuid(int(i)),
                        workspace_uuid(int(corpus.row_ws[i])),
                        corpus.content(int(i)),
                        f"{int(i):016x}",
                        "text-embedding-3-small",
                        vecs[j],
                    )
                    for j, i in enumerate(idx)
                ]
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "chunks", schema_name="bench_index", columns=COLUMNS, records=recs
                    )

        t0 = time.perf_counter()
        await asyncio.gather(*(writer(c) for c in conns))
        elapsed = time.perf_counter() - t0
        for c in conns:
            await c.close()
        self.live[rows] = True
        return elapsed

    async def grow(self, n: int) -> float:
        rows = np.arange(self.next_new, self.next_new + n)
        self.next_new += n
        return await self.load(rows, writers=self.bench.writers, batch=self.bench.batch)

    async def delete_docs(self, n: int, rng: np.random.Generator) -> int:
        """Delete whole documents, in random order, until at least ``n`` rows are gone."""
        corpus = self.bench.corpus
        live_rows = np.flatnonzero(self.live)
        docs = np.unique(corpus.row_doc[live_rows])
        rng.shuffle(docs)
        doomed: list[int] = []
        for d in docs:
            if len(doomed) >= n:
                break
            doomed.extend(live_rows[corpus.row_doc[live_rows] == d].tolist())
        conn = await self.bench.connect(role="service_role")
        try:
            for i in range(0, len(doomed), 5000):
                await conn.execute(
                    f"DELETE FROM {TABLE} WHERE id = ANY($1::uuid[])",
                    [row_uuid(r) for r in doomed[i : i + 5000]],
                )
        finally:
            await conn.close()
        self.live[np.array(doomed, dtype=np.int64)] = False
        return len(doomed)

    async def sql(self, *statements: str) -> float:
        conn = await self.bench.connect()
        try:
            t0 = time.perf_counter()
            for s in statements:
                await conn.execute(s)
            return time.perf_counter() - t0
        finally:
            await conn.close()

    async def reset(self, design: Design, base: int, lists: int | None = None) -> float:
        """Back to the first ``base`` rows with a fresh index on them; build seconds. An
        IVFFlat's lists: ``lists``, by default rows/1000 (1 on an empty table)."""
        await self.sql(f"DROP INDEX IF EXISTS bench_index.{INDEX}")
        extra = np.flatnonzero(self.live[base:]) + base
        conn = await self.bench.connect()
        try:
            for i in range(0, len(extra), 5000):
                await conn.execute(
                    f"DELETE FROM {TABLE} WHERE id = ANY($1::uuid[])",
                    [row_uuid(int(r)) for r in extra[i : i + 5000]],
                )
        finally:
            await conn.close()
        self.live[base:] = False
        missing = np.flatnonzero(~self.live[:base])
        if len(missing):
            await self.load(missing)
        await self.sql(f"VACUUM {TABLE}", "CHECKPOINT")
        self.lists = lists if lists is not None else ivf_lists(base)
        build = await self.sql(
            "SET maintenance_work_mem = '2GB'",
            "SET max_parallel_maintenance_workers = 2",
            design.ddl.format(t=TABLE, lists=self.lists),
        )
        await self.sql(f"ANALYZE {TABLE}")
        self.next_new = base
        return build

    # ------------------------------------------------------------------ measuring
    def truth(self) -> np.ndarray:
        """Exact top-10 row indices per query among the live rows of its workspace."""
        c = self.bench.corpus
        ok = self.live[None, :] & (self.bench.query_ws[:, None] == c.row_ws[None, :])
        s = np.where(ok, self.sims, -np.inf)
        part = np.argpartition(-s, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
        top[~np.isfinite(np.take_along_axis(s, top, axis=1))] = -1
        return top

    async def measure(
        self, design: Design, rebuilt: bool | str, probe: bool = True
    ) -> dict[str, Any]:
        """The shipped query shape, index size and the recall probe; on a fresh build of
        the same rows when ``rebuilt`` (REINDEX; "recreate": an IVFFlat dropped and
        created with lists = rows/1000), rolled back afterwards."""
        bench = self.bench
        conn = await bench.connect()
        out: dict[str, Any] = {}
        lists = self.lists
        tr = conn.transaction()
        await tr.start()
        try:
            if rebuilt:
                await conn.execute("SET LOCAL maintenance_work_mem = '2GB'")
                await conn.execute("SET LOCAL max_parallel_maintenance_workers = 2")
                t0 = time.perf_counter()
                if rebuilt == "recreate":
                    lists = ivf_lists(int(self.live.sum()))
                    await conn.execute(f"DROP INDEX bench_index.{INDEX}")
                    await conn.execute(design.ddl.format(t=TABLE, lists=lists))
                else:
                    await conn.execute(f"REINDEX INDEX bench_index.{INDEX}")
                out["reindex_s"] = round(time.perf_counter() - t0, 2)
            if design.ivf:
                out["lists"] = lists
            out["index_mb"] = round(
                await conn.fetchval(f"SELECT pg_relation_size('bench_index.{INDEX}')") / 2**20, 1
            )
            out["probe"] = await self.probe(conn) if probe else {}
            if design.ivf and probe:
                # the probe as the search would query (worker.maintenance.recall sets only
                # hnsw.*: an IVFFlat is probed at ivfflat.probes 1 without iterative scans)
                await conn.execute("SAVEPOINT ivf")
                for k, v in design.settings.items():
                    await conn.execute(f"SELECT set_config('{k}', '{v}', true)")
                out["probe_search"] = await self.probe(conn)
                await conn.execute("ROLLBACK TO SAVEPOINT ivf")
            await conn.execute("SET LOCAL ROLE authenticated")
            out.update(await self.queries(conn, design, plan=True))
            if design.ivf:
                # the index's own answer (no sort left to the planner, which at a few lists
                # or many probes prefers the workspace's rows sorted exactly): at the
                # design's probes, and by probes
                out["forced"] = await self.queries(conn, design, design.settings | FORCED, True)
                out["by_probes"] = {}
                for n in sorted({min(ivf_probes(p, lists), lists) for p in self.ivf_probes}):
                    q = await self.queries(conn, design, ivf_settings(n) | FORCED)
                    out["by_probes"][str(n)] = {
                        k: q[k] for k in ("recall_at_10", "p50_ms", "p95_ms")
                    }
        finally:
            await tr.rollback()
            await conn.close()
        return out

    async def probe(self, conn: asyncpg.Connection) -> dict[str, Any]:
        target = await recall_mod.target_for(conn, f"bench_index.{INDEX}")
        if target is None:
            return {"note": "index shape not probed"}
        iterative = self.bench.supports((0, 8))
        # inside the measuring transaction: its SET LOCALs would outlive the probe's
        # savepoints, so roll them back before the queries run
        await conn.execute("SAVEPOINT probe")
        result = await recall_mod.probe(
            conn, target, samples=self.probe_samples, iterative=iterative, timeout_ms=60_000
        )
        await conn.execute("ROLLBACK TO SAVEPOINT probe")
        return result.to_dict()

    async def queries(
        self,
        conn: asyncpg.Connection,
        design: Design,
        settings: dict[str, str] | None = None,
        plan: bool = False,
    ) -> dict[str, Any]:
        """Recall and latency of the design's query (``settings`` instead of the design's);
        ``plan``: also the plan of the first query of the largest workspace."""
        bench = self.bench
        settings = {
            "plan_cache_mode": "force_custom_plan",
            **(settings or design.settings),
            **self.forced,
        }
        for k, v in settings.items():
            await conn.execute(f"SELECT set_config('{k}', '{v}', true)")
        stmt = await conn.prepare(design.sql.format(t=TABLE))
        lat = np.zeros(len(bench.queries))
        got: list[list[int]] = []
        for i in range(-min(20, len(bench.queries)), len(bench.queries)):
            j = i % len(bench.queries)
            w = int(bench.query_ws[j])
            claims = json.dumps({"sub": str(user_uuid(w)), "role": "authenticated"})
            await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", claims)
            t0 = time.perf_counter()
            rows = await stmt.fetch(workspace_uuid(w), bench.queries[j])
            if i >= 0:
                lat[j] = (time.perf_counter() - t0) * 1000
                got.append([row_index(r["id"]) for r in rows])
        truth = self.truth()
        recall = np.array(
            [
                len(set(g) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
                for g, t in zip(got, truth, strict=True)
            ]
        )
        tiny = len(bench.corpus.shares) - 1
        main = bench.query_ws != tiny
        out: dict[str, Any] = {
            "recall_at_10": round(float(recall[main].mean()), 4),
            "recall_all": round(float(recall.mean()), 4),
            "p50_ms": round(float(np.percentile(lat[main], 50)), 2),
            "p95_ms": round(float(np.percentile(lat[main], 95)), 2),
            "tiny_recall": round(float(recall[~main].mean()), 4),
        }
        if plan:
            w = int(np.argmax(bench.corpus.ws_rows))
            j = int(np.flatnonzero(bench.query_ws == w)[0])
            claims = json.dumps({"sub": str(user_uuid(w)), "role": "authenticated"})
            await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", claims)
            text = await conn.fetchval(
                "EXPLAIN (FORMAT JSON) " + design.sql.format(t=TABLE),
                workspace_uuid(w),
                bench.queries[j],
            )
            out["plan"] = " > ".join(Plan.from_json(text).nodes)
        return out

    async def step(
        self, design: Design, label: str, rebuild: bool = True, recreate: bool | None = None
    ) -> dict[str, Any]:
        """Measure the maintained index and (``rebuild``) a REINDEX of it; an IVFFlat's
        also re-created with lists = rows/1000 (``recreate``; default: when that differs
        from its lists)."""
        drifted = await self.measure(design, rebuilt=False)
        rows = int(self.live.sum())
        out: dict[str, Any] = {"step": label, "rows": rows, "drifted": drifted}
        if rebuild:
            fresh = await self.measure(design, rebuilt=True)
            out["rebuilt"] = fresh
            out["drift"] = {
                "recall_at_10": round(drifted["recall_at_10"] - fresh["recall_at_10"], 4),
                "p50_ms": round(drifted["p50_ms"] - fresh["p50_ms"], 2),
                "p95_ms": round(drifted["p95_ms"] - fresh["p95_ms"], 2),
                "index_mb": round(drifted["index_mb"] - fresh["index_mb"], 1),
                "probe_recall": _diff(drifted["probe"], fresh["probe"]),
            }
        if recreate is None:
            recreate = rebuild and design.ivf and ivf_lists(rows) != self.lists
        if recreate:
            out["recreated"] = await self.measure(design, rebuilt="recreate", probe=False)
        log(f"  {_line(out)}")
        return out


def _diff(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    if a.get("recall") is None or b.get("recall") is None:
        return None
    return round(a["recall"] - b["recall"], 4)


def _line(s: dict[str, Any]) -> str:
    d = s["drifted"]
    text = (
        f"{s['step']:<22} rows {s['rows']:>7}: recall {d['recall_at_10']:.3f} "
        f"p50 {d['p50_ms']:.2f} p95 {d['p95_ms']:.2f} ms, {d['index_mb']} MB, "
        f"probe {d['probe'].get('recall')}"
    )
    if "probe_search" in d:
        text += f" (as search {d['probe_search'].get('recall')})"
    if "rebuilt" in s:
        r = s["rebuilt"]
        text += (
            f" | rebuilt {r['recall_at_10']:.3f} p50 {r['p50_ms']:.2f} p95 {r['p95_ms']:.2f} ms,"
            f" {r['index_mb']} MB, probe {r['probe'].get('recall')} (REINDEX {r['reindex_s']} s)"
        )
    if "recreated" in s:
        r = s["recreated"]
        text += (
            f" | lists {r['lists']}: {r['recall_at_10']:.3f} p50 {r['p50_ms']:.2f}"
            f" p95 {r['p95_ms']:.2f} ms ({r['reindex_s']} s), forced "
            f"{r['forced']['recall_at_10']:.3f} p95 {r['forced']['p95_ms']:.2f}"
        )
    if "forced" in d:
        f = d["forced"]
        text += f" | forced {f['recall_at_10']:.3f} p95 {f['p95_ms']:.2f} ms ({f['plan']})"
    if "by_probes" in d:
        text += " | forced probes " + ", ".join(
            f"{p}: {v['recall_at_10']:.3f}/{v['p95_ms']:.1f}" for p, v in d["by_probes"].items()
        )
    if "plan" in d:
        text += f" | {d['plan']}"
    return text


async def run_design(dr: Drift, design: Design, base: int, seed: int) -> dict[str, Any]:
    log(f"design {design.name}: {design.description}")
    rng = np.random.default_rng([seed, 7])
    started = time.perf_counter()
    steps: list[dict[str, Any]] = []
    build = await dr.reset(design, base)
    log(f"  built on {base} rows in {build:.1f} s")
    steps.append(await dr.step(design, "built", rebuild=False))
    inserted = 0
    for pct in (50, 100, 200):
        n = base * pct // 100 - inserted
        secs = await dr.grow(n)
        inserted += n
        log(f"  inserted {n} rows: {n / secs:.0f} rows/s")
        steps.append(await dr.step(design, f"growth +{pct}%"))
        steps[-1]["insert_rows_per_s"] = round(n / secs, 1)
    await dr.reset(design, base)
    deleted = 0
    for pct in (10, 30, 50):
        deleted += await dr.delete_docs(base * pct // 100 - deleted, rng)
        steps.append(await dr.step(design, f"delete {pct}% (dead)", rebuild=False))
        vac = await dr.sql(f"VACUUM {TABLE}")
        steps.append(await dr.step(design, f"delete {pct}% + VACUUM"))
        steps[-1]["vacuum_s"] = round(vac, 1)
    await dr.reset(design, base)
    turned = 0
    for _ in range(3):
        n = await dr.delete_docs(base // 3, rng)
        vac = await dr.sql(f"VACUUM {TABLE}")
        secs = await dr.grow(n)
        turned += n
        steps.append(await dr.step(design, f"churn {round(100 * turned / base)}%"))
        steps[-1]["vacuum_s"] = round(vac, 1)
        steps[-1]["insert_rows_per_s"] = round(n / secs, 1)
    await dr.sql(f"DROP INDEX IF EXISTS bench_index.{INDEX}")
    return {
        "name": design.name,
        "scenario": "drift",
        "description": design.description,
        "ddl": design.ddl.format(t=TABLE, lists=ivf_lists(base)),
        "sql": design.sql.format(t=TABLE),
        "settings": design.settings,
        "build_s": round(build, 2),
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 1),
    }


async def cold_start(dr: Drift, design: Design, checkpoints: list[int]) -> dict[str, Any]:
    """An IVFFlat created on an empty table (lists = 1, as a migration on a fresh
    database), then every row written through it with the worker's pattern; at each
    checkpoint (rows) compared with the index re-created with lists = rows/1000."""
    log(f"cold start {design.name}: created on an empty table, rows to {checkpoints}")
    started = time.perf_counter()
    await dr.reset(design, 0)
    steps: list[dict[str, Any]] = []
    for rows in checkpoints:
        n = rows - int(dr.live.sum())
        secs = await dr.grow(n)
        log(f"  inserted {n} rows: {n / secs:.0f} rows/s")
        steps.append(await dr.step(design, f"cold {rows}", rebuild=False, recreate=True))
        steps[-1]["insert_rows_per_s"] = round(n / secs, 1)
    await dr.sql(f"DROP INDEX IF EXISTS bench_index.{INDEX}")
    return {
        "name": design.name,
        "scenario": "cold",
        "description": design.description + "; created on the empty table (lists 1)",
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 1),
    }


async def sweep(
    dr: Drift, design: Design, rows_list: list[int], lists_list: list[int]
) -> dict[str, Any]:
    """Recall and latency by ivfflat.probes for IVFFlats built after the load with each
    of ``lists_list`` lists (and rows/1000) on each of ``rows_list`` rows."""
    log(f"sweep {design.name}: rows {rows_list}, lists {lists_list} and rows/1000")
    started = time.perf_counter()
    steps: list[dict[str, Any]] = []
    saved = dr.ivf_probes
    dr.ivf_probes = SWEEP_PROBES
    dr.forced = FORCED
    try:
        for rows in rows_list:
            for lists in sorted({*lists_list, ivf_lists(rows)}):
                build = await dr.reset(design, rows, lists)
                out = {
                    "step": f"lists {lists}",
                    "rows": rows,
                    "lists": lists,
                    "rows_per_list": round(rows / lists),
                    "build_s": round(build, 2),
                    "drifted": await dr.measure(design, rebuilt=False, probe=False),
                }
                log(f"  rows {rows} build {build:.1f} s: {_line(out)}")
                steps.append(out)
    finally:
        dr.ivf_probes = saved
        dr.forced = {}
    await dr.sql(f"DROP INDEX IF EXISTS bench_index.{INDEX}")
    return {
        "name": design.name,
        "scenario": "sweep",
        "description": design.description + "; lists and probes swept, enable_sort off",
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 1),
    }


def exact_sims(corpus: Corpus, queries: np.ndarray) -> np.ndarray:
    out = np.empty((len(queries), corpus.rows), np.float32)
    for lo, v in corpus.blocks():
        out[:, lo : lo + len(v)] = queries @ v.T
    return out


async def drift(args: argparse.Namespace, corpus: Corpus) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="cos-bench-drift-"))
    queries, query_ws = corpus.queries(args.queries)
    sims = exact_sims(corpus, queries)
    empty = np.zeros((len(queries), K), np.int64)
    bench = await Bench.create(
        root, corpus, args.rows, args.writers, args.batch, queries, query_ws, empty, args.server
    )
    out: dict[str, Any] = {"server": bench.server, "pgvector": bench.pgvector, "designs": []}
    try:
        dr = Drift(bench, sims, args.probe_samples)
        wanted = args.only
        for d in designs(bench.supports((0, 8)), args.ivf_probes):
            if d.name not in wanted:
                continue
            if not bench.supports(d.pgvector):
                log(f"design {d.name}: skipped (needs pgvector {d.pgvector})")
                continue
            if "drift" in args.scenarios:
                out["designs"].append(await run_design(dr, d, args.rows, args.seed))
            if d.ivf and "cold" in args.scenarios:
                rows = sorted({*args.cold_rows, args.rows, 2 * args.rows})
                out["designs"].append(await cold_start(dr, d, rows))
            if d.ivf and "sweep" in args.scenarios:
                rows = args.sweep_rows or [args.rows]
                out["designs"].append(await sweep(dr, d, rows, args.sweep_lists))
    finally:
        bench.pg.stop(mode="fast")
        shutil.rmtree(root, ignore_errors=True)
    return out


def table(results: dict[str, Any]) -> str:
    """The Markdown table of a results file (drifted / rebuilt / drift per step)."""
    lines = [
        "| design | step | rows | recall@10 maintained / rebuilt | p50 ms | p95 ms | "
        "index MB | probe recall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ivf = [d for d in results["designs"] if "by_probes" in d["steps"][0]["drifted"]]
    for d in results["designs"]:
        if d in ivf:
            continue
        for s in d["steps"]:
            a, b = s["drifted"], s.get("rebuilt")
            probe = a["probe"].get("recall")
            if b is None:
                cells = [
                    f"{a['recall_at_10']:.3f}",
                    f"{a['p50_ms']:.2f}",
                    f"{a['p95_ms']:.2f}",
                    f"{a['index_mb']}",
                    f"{probe}",
                ]
            else:
                cells = [
                    f"{a['recall_at_10']:.3f} / {b['recall_at_10']:.3f}",
                    f"{a['p50_ms']:.2f} / {b['p50_ms']:.2f}",
                    f"{a['p95_ms']:.2f} / {b['p95_ms']:.2f}",
                    f"{a['index_mb']} / {b['index_mb']}",
                    f"{probe} / {b['probe'].get('recall')}",
                ]
            lines.append(f"| {d['name']} | {s['step']} | {s['rows']} | " + " | ".join(cells) + " |")
    if len(lines) == 2:
        lines = []
    for d in ivf:
        lines.append("")
        lines.extend(ivf_table(d))
    return "\n".join(lines).strip("\n")


def _probes(m: dict[str, Any]) -> str:
    return ", ".join(
        f"{p}: {v['recall_at_10']:.3f} / {v['p95_ms']:.1f}" for p, v in m["by_probes"].items()
    )


def ivf_table(d: dict[str, Any]) -> list[str]:
    """An IVFFlat design's steps: the maintained index, its REINDEX and its re-creation
    with lists = rows/1000 (recall@10 / p95 ms at the design's probes), the probe as the
    maintenance job runs it and as the search queries, recall / p95 by probes."""
    scenario = d.get("scenario", "drift")
    if scenario == "sweep":
        out = [
            f"{d['name']}, {scenario}: recall@10 / p95 ms by ivfflat.probes (relaxed_order)",
            "",
            "| rows | lists | rows/list | build s | plan | by probes |",
            "|---|---|---|---|---|---|",
        ]
        for s in d["steps"]:
            m = s["drifted"]
            out.append(
                f"| {s['rows']} | {s['lists']} | {s['rows_per_list']} | {s['build_s']} | "
                f"{m['plan']} | {_probes(m)} |"
            )
        return out
    out = [
        f"{d['name']}, {scenario}: recall@10 / p95 ms as the planner chooses; forced (the "
        "index answers)",
        "",
        "| step | rows | lists | maintained | REINDEX | re-created (lists) | probe as job / "
        "as search | maintained, forced, by probes | re-created, forced, by probes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def both(x: dict[str, Any]) -> str:
        f = x["forced"]
        return (
            f"{x['recall_at_10']:.3f} / {x['p95_ms']:.1f}; "
            f"forced {f['recall_at_10']:.3f} / {f['p95_ms']:.1f}"
        )

    for s in d["steps"]:
        m, r, c = s["drifted"], s.get("rebuilt"), s.get("recreated")
        cells = [
            s["step"],
            str(s["rows"]),
            str(m["lists"]),
            both(m),
            both(r) if r else "",
            f"{both(c)} ({c['lists']})" if c else "",
            f"{m['probe'].get('recall')} / {m['probe_search'].get('recall')}",
            _probes(m),
            _probes(c) if c else "",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.index --drift", description=__doc__)
    p.add_argument("--rows", type=int, default=30_000, help="rows at the first build (30k)")
    p.add_argument("--queries", type=int, default=200, help="queries per measurement (200)")
    p.add_argument("--probe-samples", type=int, default=20, help="recall probe samples (20)")
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--server", choices=["pg18", "pg16"], default="pg18")
    p.add_argument(
        "--only",
        nargs="*",
        choices=["bq", "seed", "bq_ivf"],
        default=["bq"],
        help="designs (default bq, the shipped one: ~10 min; the seed's vector HNSW writes "
        "and rebuilds 5-10x slower; bench/INDEX.md's figures: --rows 50000 --only bq seed)",
    )
    p.add_argument(
        "--scenarios",
        nargs="*",
        choices=["drift", "cold", "sweep"],
        default=["drift"],
        help="drift: growth, deletes, churn (default); for IVFFlat designs also cold: "
        "created on the empty table (lists 1), rows written through it to --cold-rows and "
        "1-2x --rows; sweep: built with --sweep-lists lists on --sweep-rows rows, "
        "recall by probes",
    )
    p.add_argument("--ivf-probes", type=int, default=10, help="bq_ivf's ivfflat.probes (10)")
    p.add_argument("--cold-rows", type=int, nargs="*", default=[10_000, 30_000])
    p.add_argument("--sweep-rows", type=int, nargs="*", default=[], help="default --rows")
    p.add_argument("--sweep-lists", type=int, nargs="*", default=[10, 30, 100, 300])
    p.add_argument("--tag", default="", help="suffix of the results file name")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--render", type=Path, metavar="FILE", help="print a results file's table")
    args = p.parse_args(argv)
    if args.render:
        print(table(json.loads(args.render.read_text())))
        return
    started = time.time()
    # growth reaches 3 x rows; churn reuses rows beyond the base
    corpus = Corpus(3 * args.rows, seed=args.seed)
    log(f"{args.rows} base rows, corpus of {corpus.rows} in workspaces of {corpus.ws_rows}")
    measured = asyncio.run(drift(args, corpus))
    results = {
        "meta": {
            "command": "python -m bench.index --drift " + " ".join(argv),
            "rows": args.rows,
            "queries": args.queries,
            "probe_samples": args.probe_samples,
            "writers": args.writers,
            "batch": args.batch,
            "seed": args.seed,
            "server": args.server,
            "scenarios": args.scenarios,
            "ivf_probes": args.ivf_probes,
            "cpus": os.cpu_count(),
            "machine": platform.platform(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
        },
        **measured,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.server == "pg18" else f"_{args.server}"
    suffix += f"_{args.tag}" if args.tag else ""
    path = args.out / f"drift_{args.rows}{suffix}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    log(f"results: {path} ({results['meta']['seconds']} s)")
    print(table(results))


if __name__ == "__main__":
    main(sys.argv[1:])
