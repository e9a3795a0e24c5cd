"""Index-strategy benchmark: ``python -m bench.index [--rows N] [--only OPTION ...]``;
``python -m bench.index --drift [...]``: drift after growth and deletes (drift.py).

Writes ``OUT/index_<rows>.json``, ``OUT/index_<rows>.png`` and the report (default
``bench/INDEX.md``). ``--render FILE`` re-renders the plot and report from a results file
without measuring. See bench/INDEX.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.index import report
from bench.index.measure import log, measure
from bench.index.options import options
from bench.index.vectors import DEFAULT_SHARES, Corpus, similarity_stats

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "results" / "index"
DEFAULT_REPORT = HERE.parent / "INDEX.md"


def median_of(runs: list[Any]) -> Any:
    """The runs merged: every number the median of its values across the runs (same
    structure in every run), everything else from the first run."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: median_of([r[k] for r in runs]) for k in first}
    if isinstance(first, list) and all(isinstance(r, list) and len(r) == len(first) for r in runs):
        if first and isinstance(first[0], dict | list):
            return [median_of([r[i] for r in runs]) for i in range(len(first))]
        return first
    if isinstance(first, int | float) and not isinstance(first, bool):
        m = statistics.median(runs)
        return round(m, 4) if isinstance(m, float) else m
    return first


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--drift" in argv:  # index drift after growth and deletes: bench/index/drift.py
        from bench.index import drift

        drift.main([a for a in argv if a != "--drift"])
        return
    p = argparse.ArgumentParser(prog="python -m bench.index", description=__doc__)
    p.add_argument("--rows", type=int, default=100_000, help="vectors in the table (default 100k)")
    p.add_argument("--queries", type=int, default=200, help="queries per variant (default 200)")
    p.add_argument(
        "--insert-share",
        type=float,
        default=0.05,
        help="share of the rows written with the worker pattern into the indexed table "
        "(the rest is bulk-loaded before the build; default 0.05)",
    )
    p.add_argument("--writers", type=int, default=4, help="concurrent writers (default 4)")
    p.add_argument("--batch", type=int, default=250, help="rows per transaction (default 250)")
    p.add_argument(
        "--runs",
        type=int,
        default=1,
        help="repeat the whole measurement (fresh server each time) and report medians",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--server",
        choices=["pg18", "pg16"],
        default="pg18",
        help="pg18: PostgreSQL 18 + pgvector 0.8.6 (default); pg16: PostgreSQL 16.2 + "
        "pgvector 0.6.2 (pgserver wheel): the options and variants it supports, written to "
        "index_<rows>_pg16.json and a section of the report",
    )
    p.add_argument("--only", nargs="*", metavar="OPTION", help="option names (default all)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--report", type=Path, default=DEFAULT_REPORT)
    p.add_argument("--render", type=Path, metavar="FILE", help="re-render a results file")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL data directory")
    args = p.parse_args(argv)

    if args.render:
        results = json.loads(args.render.read_text())
        report.write(results, args.render.with_suffix(".png"), args.report, _fallback(args.render))
        return

    started = time.time()
    corpus = Corpus(args.rows, DEFAULT_SHARES, seed=args.seed)
    insert_rows = min(args.rows // 2, max(1000, round(args.rows * args.insert_share)))
    base_rows = args.rows - insert_rows
    opts = options(base_rows, len(corpus.shares))
    known = [o.name for o in opts]
    if args.only:
        bad = [n for n in args.only if n not in known]
        if bad:
            p.error(f"unknown option(s) {bad}; known: {known}")
        opts = [o for o in opts if o.name in args.only]
    log(f"{args.rows} rows in workspaces of {corpus.ws_rows} ({corpus.n_docs} documents)")
    queries, query_ws = corpus.queries(args.queries)
    t0 = time.perf_counter()
    stats, truth = similarity_stats(corpus, queries, query_ws)
    log(f"similarity statistics and numpy exact top-10 in {time.perf_counter() - t0:.1f} s")
    log(
        f"  nearest neighbour cos p50 {stats['nearest_neighbour']['p50']}, "  # type: ignore[index]
        f"random pairs p50 {stats['random_pairs']['p50']}, "  # type: ignore[index]
        f"query top-1 p50 {stats['query_top1']['p50']}"  # type: ignore[index]
    )
    runs = []
    for run in range(args.runs):
        log(f"run {run + 1} of {args.runs}")
        runs.append(
            asyncio.run(
                measure(
                    corpus,
                    base_rows,
                    args.writers,
                    args.batch,
                    queries,
                    query_ws,
                    truth,
                    opts,
                    keep=args.keep,
                    server=args.server,
                )
            )
        )
    measured = median_of(runs)
    results = {
        "meta": {
            "command": "python -m bench.index "
            + " ".join(a for a in (argv if argv is not None else sys.argv[1:])),
            "rows": args.rows,
            "base_rows": base_rows,
            "insert_rows": insert_rows,
            "writers": args.writers,
            "batch": args.batch,
            "queries": args.queries,
            "seed": args.seed,
            "runs": args.runs,
            "server": args.server,
            "workspace_rows": corpus.ws_rows,
            "workspace_shares": list(corpus.shares),
            "documents": corpus.n_docs,
            "cpus": os.cpu_count(),
            "machine": platform.platform(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
        },
        "generator": stats,
        **measured,
        "runs": runs if len(runs) > 1 else [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.server == "pg18" else f"_{args.server}"
    path = args.out / f"index_{args.rows}{suffix}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    log(f"results: {path}")
    main_path = args.out / f"index_{args.rows}.json"
    if main_path.exists():
        main_results = json.loads(main_path.read_text())
        report.write(main_results, main_path.with_suffix(".png"), args.report, _fallback(main_path))
        log(f"plot: {main_path.with_suffix('.png')}; report: {args.report}")


def _fallback(main_path: Path) -> dict[str, Any] | None:
    """The PostgreSQL 16 / pgvector 0.6 results next to ``main_path``, if measured."""
    other = main_path.with_name(main_path.stem + "_pg16.json")
    return json.loads(other.read_text()) if other.exists() else None


if __name__ == "__main__":
    main()
