"""Issue 21's done-when, measured: the worker ingesting one corpus with the seed's vector
HNSW indexes, with 006's binary-quantized HNSW, with the shipped ones (007: binary-
quantized IVFFlat) and with none, on fresh databases of one server, alternated within
each run.

    python -m bench.ingest_index [--size issue21|medium|...] [--runs 3] [--out DIR]
                                 [--default-budget-runs 1] [--chunk-tokens N]

Variants (each ingest a fresh database cloned from the migrated template, one worker):

* **seed**: the template, then the index block (``DO $idx$ ... $idx$``) of
  ``migrations/rollback/006_vector_search.down.sql``: the three bulk-written columns'
  indexes (``idx_comms_embedding``, ``idx_chunks_embedding``, ``idx_media_chunks_embedding``)
  are the seed's ``hnsw (embedding vector_cosine_ops)`` again. Only that block: the whole
  file also drops ``public.search_memory``, which this worker's pool prepares on every
  connection it opens (``Q.plain()``), so the worker would not start;
* **hnsw_bq**: the index block of ``007_ivfflat_vectors.down.sql``: 006's ``hnsw
  ((binary_quantize(embedding)::bit(1536)) bit_hamming_ops)``;
* **shipped**: the template as migrated (007's ``ivfflat ((binary_quantize(embedding)::
  bit(1536)) bit_hamming_ops)``; the template is empty, so one list, as on a fresh
  database);
* **none**: the three indexes dropped: the floor (the seed's two other HNSW indexes,
  on ``core.contacts`` and ``intel.insights``, stay in every variant: ingestion writes no
  vectors there).

The worker runs with its default settings except the embedding client budget: **lifted**
(``EMBED_TOKENS_PER_MINUTE`` 1e9, ``EMBED_REQUESTS_PER_MINUTE`` 1e6; at bench/run.py's
10M TPM the limiter alone holds ~3M tokens for ~19 s and hides the index) in the ``--runs``
runs, and bench/run.py's **10M** TPM / 10k RPM budget (``worker_settings``) in
``--default-budget-runs`` more. Every ingest gets a budget id of its own (nothing learned
by an earlier run's bucket carries over). The order of the variants rotates run by run.

Per ingest: seconds from the first enqueue to the last commit (``bench.run.ingest``), the
vector rows, rows/s, CPU seconds of PostgreSQL (the postmaster's process tree: its own and
its reaped children's times plus its live children's, before and after), of the worker
process (this process's waited-for children) and of the embeddings stand-in, the worker's
peak RSS (VmHWM, ``bench.worker_proc``), the embedder's requests and tokens, the ledger
(all done, none failed) and the load average. Medians and ranges per variant; the ratio
seed / shipped of the median seconds and of each run's pair (and of PostgreSQL's CPU: on a
machine loaded by other work the wall time also counts waiting for a core).

Output: ``OUT/ingest_index_<size>[_chunkN].json`` (default ``bench/results``) and the
markdown table on stdout; ``--render FILE`` prints the table of an earlier results file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from bench import corpus as corpus_mod
from bench.run import RESULTS, WS, Env, corpus_tokens, ingest, log
from worker.core.settings import REPO_ROOT

VARIANTS = ("seed", "hnsw_bq", "shipped", "none")
BUDGETS = ("lifted", "default")
INDEXES = (
    ("comms", "idx_comms_embedding"),
    ("meetings", "idx_chunks_embedding"),
    ("media", "idx_media_chunks_embedding"),
)
ROLLBACK_006 = REPO_ROOT / "migrations" / "rollback" / "006_vector_search.down.sql"
ROLLBACK_007 = REPO_ROOT / "migrations" / "rollback" / "007_ivfflat_vectors.down.sql"
LIFTED = {"embed_tokens_per_minute": 1_000_000_000, "embed_requests_per_minute": 1_000_000}
# bench/run.py's worker_settings: what every other figure runs with
DEFAULT_BUDGET = {"embed_tokens_per_minute": 10_000_000, "embed_requests_per_minute": 10_000}
METRICS = ("seconds", "rows_per_s", "pg_cpu_s", "worker_cpu_s", "embedder_cpu_s", "peak_rss_mb")


# ----------------------------------------------------------------------------- pure logic
def variant_order(run: int, variants: tuple[str, ...] = VARIANTS) -> list[str]:
    """Run ``run``'s order: the variants rotated by one per run, so each takes each place."""
    k = run % len(variants)
    return list(variants[k:] + variants[:k])


def classify(indexdefs: dict[str, str | None]) -> str:
    """Which variant the three indexes' definitions are: all absent = none, all binary-
    quantized IVFFlat = shipped (007), binary-quantized HNSW = hnsw_bq (006), all plain
    ``vector_cosine_ops`` HNSW = seed, else mixed."""
    kinds = set()
    for d in indexdefs.values():
        if d is None:
            kinds.add("none")
        elif "binary_quantize" in d and "bit_hamming_ops" in d and "USING ivfflat" in d:
            kinds.add("shipped")
        elif "binary_quantize" in d and "bit_hamming_ops" in d and "USING hnsw" in d:
            kinds.add("hnsw_bq")
        elif "hnsw" in d and "vector_cosine_ops" in d:
            kinds.add("seed")
        else:
            kinds.add("other")
    return kinds.pop() if len(kinds) == 1 else "mixed"


def rollback_index_block(sql: str) -> str:
    """The ``DO $idx$ ... $idx$;`` statement of a rollback: 006's gives the seed's indexes
    back (from either binary-quantized index), 007's the binary-quantized HNSW."""
    m = re.search(r"^DO \$idx\$.*?^\$idx\$;", sql, re.S | re.M)
    if m is None:
        raise ValueError("no DO $idx$ ... $idx$; block in the rollback")
    return m.group(0)


def process_tree_cpu(own: tuple[float, float, float, float], live: list[float]) -> float:
    """CPU seconds of a process tree: the parent's user + system + its reaped children's
    (the cpu_times four), plus each live child's user + system."""
    return sum(own) + sum(live)


def stat(values: list[float | None]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per budget and variant: median/min/max of METRICS, and the ratios seed / shipped
    and shipped / none (of the median seconds, and each run's pair)."""
    out: dict[str, Any] = {}
    for budget in BUDGETS:
        mine = [r for r in records if r["budget"] == budget]
        if not mine:
            continue
        per: dict[str, Any] = {}
        for variant in VARIANTS:
            rs = [r for r in mine if r["variant"] == variant]
            if rs:
                per[variant] = {
                    **{m: stat([r.get(m) for r in rs]) for m in METRICS},
                    "vector_rows": stat([r["vector_rows"] for r in rs]),
                    "requests": stat([r["requests"] for r in rs]),
                    "tokens": stat([r["tokens"] for r in rs]),
                    "runs": len(rs),
                    "all_done": all(r["all_done"] for r in rs),
                }
        out[budget] = {
            "variants": per,
            "seed_over_shipped": ratio(mine, "seed", "shipped"),
            "shipped_over_none": ratio(mine, "shipped", "none"),
            "seed_over_hnsw_bq": ratio(mine, "seed", "hnsw_bq"),
            "pg_cpu_seed_over_shipped": ratio(mine, "seed", "shipped", "pg_cpu_s"),
        }
    return out


def ratio(
    records: list[dict[str, Any]], num: str, den: str, key: str = "seconds"
) -> dict[str, Any] | None:
    """key(num) / key(den), seconds by default: of the medians, and per run (records with
    the same ``run`` number paired)."""
    a = {r["run"]: r[key] for r in records if r["variant"] == num and r.get(key) is not None}
    b = {r["run"]: r[key] for r in records if r["variant"] == den and r.get(key) is not None}
    if not a or not b:
        return None
    pairs = [a[k] / b[k] for k in sorted(a) if k in b and b[k] > 0]
    return {
        "of_medians": statistics.median(a.values()) / statistics.median(b.values()),
        "per_run": pairs,
        "min": min(pairs) if pairs else None,
        "max": max(pairs) if pairs else None,
    }


def _cell(s: dict[str, Any], spec: str) -> str:
    if s["median"] is None:
        return "n/a"
    if s["n"] > 1:
        return f"{s['median']:{spec}} <sub>{s['min']:{spec}}-{s['max']:{spec}}</sub>"
    return f"{s['median']:{spec}}"


def table(results: dict[str, Any]) -> str:
    """The markdown table and ratio lines of a results file."""
    m, summary = results["meta"], results["summary"]
    lines = [
        f"Corpus `{m['size']}`: {m['items']:,} items ({m['emails']:,} e-mails, "
        f"{m['meetings']:,} meeting transcripts, {m['media']:,} media transcripts; "
        f"{m['corpus_tokens']:,} tokens of text), one worker, "
        f"{'default settings' if not m.get('chunk_tokens') else 'CHUNK_TOKENS=' + str(m['chunk_tokens'])}"
        f" but the embedding budget; medians of the runs, small print the range. "
        f"Load average (1 min) over the ingests: {m['load_1m_min']:.1f}-{m['load_1m_max']:.1f} "
        f"on {m['cpus']} CPUs. Command: `{m['command']}`.",
        "",
        "| budget | index | runs | ingest s | vector rows | rows/s | PostgreSQL CPU s "
        "| worker CPU s | embedder CPU s | worker peak RSS MB | requests / tokens | ledger |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    label = {
        "seed": "seed `vector` HNSW (006 rolled back)",
        "hnsw_bq": "006 binary-quantized HNSW (007 rolled back)",
        "shipped": "shipped: 007 binary-quantized IVFFlat",
        "none": "none (three dropped)",
    }
    for budget, b in summary.items():
        for variant, v in b["variants"].items():
            lines.append(
                f"| {budget} | {label[variant]} | {v['runs']} | {_cell(v['seconds'], '.1f')} | "
                f"{v['vector_rows']['median']:,.0f} | {_cell(v['rows_per_s'], ',.0f')} | "
                f"{_cell(v['pg_cpu_s'], '.1f')} | {_cell(v['worker_cpu_s'], '.1f')} | "
                f"{_cell(v['embedder_cpu_s'], '.1f')} | {_cell(v['peak_rss_mb'], '.0f')} | "
                f"{v['requests']['median']:.0f} / {v['tokens']['median']:,.0f} | "
                f"{'all done, 0 failed' if v['all_done'] else '**not all done**'} |"
            )
    lines.append("")
    for budget, b in summary.items():
        r, f = b["seed_over_shipped"], b["shipped_over_none"]
        c = b.get("pg_cpu_seed_over_shipped")
        if r:
            runs = ", ".join(f"{x:.2f}" for x in r["per_run"])
            lines.append(
                f"* {budget} budget: ingest seconds seed / shipped **{r['of_medians']:.2f}x** "
                f"(runs: {runs}; target >= 3x)"
                + (f"; shipped / none {f['of_medians']:.2f}x" if f else "")
                + (
                    f"; seed / 006 binary-quantized HNSW {h['of_medians']:.2f}x"
                    if (h := b.get("seed_over_hnsw_bq"))
                    else ""
                )
                + (
                    f"; PostgreSQL CPU seed / shipped {c['of_medians']:.2f}x "
                    f"(runs: {', '.join(f'{x:.2f}' for x in c['per_run'])})"
                    if c
                    else ""
                )
            )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- measuring
def postmaster_pid(env: Env) -> int:
    return int((env.pg.pgdata / "postmaster.pid").read_text().split()[0])


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds so far of ``pid`` and its descendants (``process_tree_cpu``)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        t = parent.cpu_times()
        own = (t.user, t.system, t.children_user, t.children_system)
        live = []
        for child in parent.children(recursive=True):
            try:
                c = child.cpu_times()
                live.append(c.user + c.system)
            except psutil.Error:  # exited meanwhile: its time moves to the parent's
                pass
        return process_tree_cpu(own, live)
    except psutil.Error:
        return None


def children_cpu() -> float:
    """User + system seconds of this process's waited-for children (the workers)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


async def indexdefs(dsn: str) -> dict[str, str | None]:
    conn = await asyncpg.connect(dsn)
    try:
        out: dict[str, str | None] = {}
        for schema, name in INDEXES:
            out[f"{schema}.{name}"] = await conn.fetchval(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = $2",
                schema,
                name,
            )
        return out
    finally:
        await conn.close()


async def prepare(env: Env, variant: str) -> tuple[str, dict[str, str | None]]:
    """A fresh database with the variant's indexes (checked)."""
    dsn = await env.fresh_db()
    conn = await asyncpg.connect(dsn)
    try:
        if variant == "seed":
            await conn.execute(rollback_index_block(ROLLBACK_006.read_text()))
        elif variant == "hnsw_bq":
            await conn.execute(rollback_index_block(ROLLBACK_007.read_text()))
        elif variant == "none":
            for schema, name in INDEXES:
                await conn.execute(f'DROP INDEX "{schema}"."{name}"')
    finally:
        await conn.close()
    defs = await indexdefs(dsn)
    if classify(defs) != variant:
        raise RuntimeError(f"{variant}: the indexes are {defs}")
    return dsn, defs


async def one(
    env: Env,
    payloads: list[dict[str, Any]],
    variant: str,
    budget: str,
    run: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    dsn, defs = await prepare(env, variant)
    settings = {
        **(LIFTED if budget == "lifted" else DEFAULT_BUDGET),
        "embed_budget_id": f"bench-ingest-index-{uuid.uuid4().hex[:8]}",
        **extra,
    }
    pid, emb_pid = postmaster_pid(env), env.openai_proc.pid
    load_before = os.getloadavg()
    cpu0, emb0, kids0 = tree_cpu_seconds(pid), tree_cpu_seconds(emb_pid), children_cpu()
    try:
        res = await ingest(env, dsn, payloads, tag=f"{variant}-{budget}-{run}", **settings)
    finally:
        # the worker process has been waited for: its (and its children's) CPU is ours now
        cpu1, emb1, kids1 = tree_cpu_seconds(pid), tree_cpu_seconds(emb_pid), children_cpu()
        await env.drop_db(dsn)
    w = res.workers[0] if res.workers else {}
    led = res.ledger
    r = {
        "run": run,
        "budget": budget,
        "variant": variant,
        "seconds": res.seconds,
        "items": res.items,
        "vector_rows": res.vector_rows,
        "rows_per_s": res.vector_rows / res.seconds,
        "pg_cpu_s": None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
        "worker_cpu_s": kids1 - kids0,
        "embedder_cpu_s": None if emb0 is None or emb1 is None else emb1 - emb0,
        "peak_rss_mb": w["vm_hwm_kb"] / 1024 if w.get("vm_hwm_kb") else None,
        "worker_jobs": {k: w.get(k) for k in ("jobs_complete", "jobs_failed", "jobs_retried")},
        "requests": res.server["requests"],
        "status_429": res.server["status_429"],
        "tokens": res.server["tokens"],
        "inputs": res.server["inputs"],
        "ledger": led,
        "all_done": led.get("done") == res.items and not led.get("failed"),
        "enqueue_seconds": res.enqueue_seconds,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "indexdefs": defs,
        "settings": {k: v for k, v in settings.items() if k != "embed_budget_id"},
    }
    log(
        f"run {run} {budget:7} {variant:7}: {r['seconds']:.1f} s, {r['vector_rows']} rows "
        f"({r['rows_per_s']:.0f}/s), CPU s PG {fmt(r['pg_cpu_s'])} worker "
        f"{fmt(r['worker_cpu_s'])} embedder {fmt(r['embedder_cpu_s'])}, RSS "
        f"{fmt(r['peak_rss_mb'], '.0f')} MB, {r['requests']} requests / {r['tokens']} tokens, "
        f"ledger {led.get('done')} done {led.get('failed')} failed; load {load_before[0]:.1f}"
    )
    return r


def fmt(v: float | None, spec: str = ".1f") -> str:
    return "n/a" if v is None else format(v, spec)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    corpus = corpus_mod.build(args.size, WS)
    payloads = corpus.payloads
    extra: dict[str, Any] = {}
    if args.chunk_tokens:
        extra["chunk_tokens"] = args.chunk_tokens
    meta: dict[str, Any] = {
        "size": args.size,
        "spec": corpus_mod.SIZES[args.size],
        "items": len(corpus),
        "emails": len(corpus.emails),
        "meetings": len(corpus.meetings),
        "media": len(corpus.media),
        "corpus_tokens": corpus_tokens(payloads),
        "chunk_tokens": args.chunk_tokens,
        "runs": args.runs,
        "default_budget_runs": args.default_budget_runs,
        "budgets": {"lifted": LIFTED, "default": DEFAULT_BUDGET},
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join(["python -m bench.ingest_index", *sys.argv[1:]]),
        "postgres": "embedded 18 + pgvector, fsync=on, synchronous_commit=on",
        "load_before": os.getloadavg(),
    }
    records: list[dict[str, Any]] = []
    env = Env.start()
    try:
        await env._migrate_template()
        conn = await asyncpg.connect(env.pg.dsn(env.template))
        meta["server_version"] = await conn.fetchval("SHOW server_version")
        meta["pgvector"] = await conn.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        )
        await conn.close()
        for i in range(args.runs):
            for variant in variant_order(i):
                records.append(await one(env, payloads, variant, "lifted", i, extra))
        for i in range(args.default_budget_runs):
            for variant in variant_order(i):
                records.append(await one(env, payloads, variant, "default", i, extra))
    finally:
        env.stop(keep=args.keep)
    loads = [r["load_before"][0] for r in records] + [r["load_after"][0] for r in records]
    meta.update(
        load_after=os.getloadavg(),
        load_1m_min=min(loads, default=0.0),
        load_1m_max=max(loads, default=0.0),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    return {"meta": meta, "summary": summarize(records), "records": records}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--size",
        choices=sorted(corpus_mod.SIZES),
        default="issue21",
        help="corpus (bench/corpus.py); issue21 = the issue's 1,000 e-mails + 100 meetings",
    )
    p.add_argument("--runs", type=int, default=3, help="runs at the lifted budget")
    p.add_argument(
        "--default-budget-runs",
        type=int,
        default=1,
        help="runs at bench/run.py's 10M TPM budget (0: none)",
    )
    p.add_argument(
        "--chunk-tokens", type=int, default=None, help="CHUNK_TOKENS (default: the worker's)"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    p.add_argument("--render", type=Path, help="print the table of this results file and exit")
    args = p.parse_args(argv)
    if args.render:
        print(table(json.loads(args.render.read_text())))
        return
    results = asyncio.run(amain(args))
    suffix = f"_chunk{args.chunk_tokens}" if args.chunk_tokens else ""
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ingest_index_{args.size}{suffix}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    log(f"results: {path}")
    print(table(results))


if __name__ == "__main__":
    main()
