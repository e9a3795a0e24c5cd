"""bench/INDEX.md and the plot, from a results file of ``python -m bench.index``.

The report is regenerated above ``KEEP_MARKER``; whatever follows the marker in the
existing file (the written conclusion) is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

KEEP_MARKER = "<!-- written by hand below this line: kept when the report is re-rendered -->"
SEED_OPTION, SEED_VARIANT = "hnsw_m16_ef64", "seed ef_search=40"
SEED_VARIANT_100 = "seed ef_search=100, forced"  # its index, whatever the planner picks


def _rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (option, variant), with the option's write-side figures."""
    copy_s = results["base_load"]["copy_s"]
    base = results["base_load"]["rows"]
    runs = results.get("runs") or []

    def spread(get: Any) -> tuple[float, float] | None:
        if len(runs) < 2:
            return None
        vals = [get(r) for r in runs]
        return (min(vals), max(vals))

    out = []
    for oi, o in enumerate(results["options"]):
        for vi, v in enumerate(o["variants"]):
            out.append(
                {
                    "option": o["name"],
                    "variant": v["name"],
                    "insert": o["insert"]["rows_per_s"],
                    "build": o["build_s"],
                    "backfill": base / (copy_s + o["build_s"]),
                    "mb": o["index_mb"],
                    "p50": v["main"]["p50_ms"],
                    "p95": v["main"]["p95_ms"],
                    "recall": v["main"]["recall_at_10"],
                    "tiny_rows": v["tiny"]["rows_returned_mean"],
                    "tiny_min": v["tiny"]["rows_returned_min"],
                    "tiny_recall": v["tiny"]["recall_at_10"],
                    "tiny_p95": v["tiny"]["p95_ms"],
                    "pgvector": o["pgvector_needed"],
                    "settings": v["settings"],
                    "plans": v["plans"],
                    "insert_rng": spread(lambda r, oi=oi: r["options"][oi]["insert"]["rows_per_s"]),
                    "p95_rng": spread(
                        lambda r, oi=oi, vi=vi: r["options"][oi]["variants"][vi]["main"]["p95_ms"]
                    ),
                    "recall_rng": spread(
                        lambda r, oi=oi, vi=vi: r["options"][oi]["variants"][vi]["main"][
                            "recall_at_10"
                        ]
                    ),
                }
            )
    return out


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's target, checked per row against the seed (ef_search 40)."""
    seed = next((r for r in rows if r["variant"] == SEED_VARIANT), None)
    seed100 = next((r for r in rows if r["variant"] == SEED_VARIANT_100), None)
    if seed is None:
        return {}
    for r in rows:
        r["t_write"] = r["insert"] >= 3 * seed["insert"]
        r["t_recall"] = r["recall"] >= 0.95
        r["t_p95"] = r["p95"] <= seed["p95"]
        r["t_p95_100"] = r["p95"] <= seed100["p95"] if seed100 else None
        r["t_tiny"] = r["tiny_min"] >= 10
        r["meets"] = r["t_write"] and r["t_recall"] and r["t_p95"] and r["t_tiny"]
        r["meets_100"] = r["t_write"] and r["t_recall"] and r["t_p95_100"] and r["t_tiny"]
    return seed


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "no")


def _rng(v: tuple[float, float] | None, fmt: str) -> str:
    return "" if v is None else f" <sub>{v[0]:{fmt}}-{v[1]:{fmt}}</sub>"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| option | query variant | insert rows/s (worker pattern) | build s | backfill rows/s "
        "| index MB | p50 ms | p95 ms | recall@10 | tiny ws: rows returned (min) / recall "
        "| tiny p95 ms | target: write / recall / p95 (vs seed ef 40; vs seed ef 100 forced) / tiny |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        tgt = " / ".join(_mark(r.get(k)) for k in ("t_write", "t_recall"))
        tgt += f" / {_mark(r.get('t_p95'))}; {_mark(r.get('t_p95_100'))} / {_mark(r.get('t_tiny'))}"
        lines.append(
            f"| {r['option']} | {r['variant']} | {r['insert']:,.0f}{_rng(r['insert_rng'], ',.0f')} "
            f"| {r['build']:.1f} | {r['backfill']:,.0f} | {r['mb']:.0f} | {r['p50']:.2f} "
            f"| {r['p95']:.2f}{_rng(r['p95_rng'], '.2f')} "
            f"| {r['recall']:.3f}{_rng(r['recall_rng'], '.3f')} "
            f"| {r['tiny_rows']:.1f} ({r['tiny_min']}) / "
            f"{r['tiny_recall']:.3f} | {r['tiny_p95']:.2f} | {tgt} |"
        )
    return head + "\n".join(lines) + "\n"


def plans_table(results: dict[str, Any]) -> str:
    n_ws = len(results["meta"]["workspace_rows"])
    head = "| variant | " + " | ".join(
        f"ws{w} ({results['meta']['workspace_rows'][w]:,} rows)" for w in range(n_ws)
    )
    out = [head + " |", "|---" * (n_ws + 1) + "|"]
    for o in results["options"]:
        for v in o["variants"]:
            cells = []
            for w in range(n_ws):
                nodes = [
                    n.replace("Index Scan", "IS").replace("Bitmap Heap Scan", "BHS")
                    for n in v["plans"][f"ws{w}"]
                    if not n.startswith(
                        ("Function Scan", "Hash", "SubPlan", "Result", "ProjectSet")
                    )
                ]
                cells.append(" > ".join(nodes))
            out.append(f"| {v['name']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def per_workspace(results: dict[str, Any]) -> str:
    n_ws = len(results["meta"]["workspace_rows"])
    head = "| variant | " + " | ".join(f"ws{w} recall / p95 ms" for w in range(n_ws)) + " |"
    out = [head, "|---" * (n_ws + 1) + "|"]
    for o in results["options"]:
        for v in o["variants"]:
            cells = [
                f"{v['per_workspace'][f'ws{w}']['recall_at_10']:.3f} / "
                f"{v['per_workspace'][f'ws{w}']['p95_ms']:.1f}"
                for w in range(n_ws)
            ]
            out.append(f"| {v['name']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def generator_table(g: dict[str, Any]) -> str:
    names = {
        "nearest_neighbour": "stored vector -> its nearest other vector (same workspace)",
        "random_pairs": "random pairs (any workspaces)",
        "random_pairs_same_workspace": "random pairs within one workspace",
        "query_top1": "query -> its exact top-1 (own workspace)",
        "query_top10": "query -> its exact 10th",
        "query_gap_top1_top10": "top-1 minus 10th similarity",
    }
    out = [
        "| cosine similarity | p5 | p25 | p50 | p75 | p95 | mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in names.items():
        s = g.get(key)
        if s:
            out.append(
                f"| {label} | {s['p5']} | {s['p25']} | {s['p50']} | {s['p75']} | {s['p95']} "
                f"| {s['mean']} |"
            )
    return "\n".join(out) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 6.5), gridspec_kw={"width_ratios": [3, 2]})
    options = sorted({r["option"] for r in rows}, key=[r["option"] for r in rows].index)
    cmap = plt.get_cmap("tab10")
    top = max(r["insert"] for r in rows)
    for i, name in enumerate(options):
        sel = [r for r in rows if r["option"] == name]
        for forced in (False, True):
            part = [r for r in sel if ("forced" in r["variant"]) == forced]
            if not part:
                continue
            ax.scatter(
                [r["recall"] for r in part],
                [r["p95"] for r in part],
                s=[40 + 600 * r["insert"] / top for r in part],
                facecolors="none" if forced else cmap(i % 10),
                edgecolors=cmap(i % 10) if forced else "black",
                alpha=0.8 if forced else 0.6,
                linewidths=1.2,
            )
        ax.scatter(
            [], [], s=40, color=cmap(i % 10), label=f"{name} ({sel[0]['insert']:,.0f} rows/s)"
        )
        for r in sel:
            if "forced" in r["variant"]:
                continue
            ax.annotate(
                r["variant"],
                (r["recall"], r["p95"]),
                fontsize=6,
                xytext=(4, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("recall@10 (workspaces > 0.1 % of rows)")
    ax.set_ylabel("p95 latency, ms (log)")
    ax.set_yscale("log")
    ax.axvline(0.95, color="grey", ls=":", lw=1)
    ax.set_title(
        "recall vs p95; marker area ~ insert rows/s; hollow: index forced (enable_sort off)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left")
    first = [next(r for r in rows if r["option"] == n) for n in options]
    bx.barh(
        range(len(first)),
        [r["insert"] for r in first],
        color=[cmap(i % 10) for i in range(len(first))],
    )
    bx.set_yticks(range(len(first)), [r["option"] for r in first], fontsize=8)
    bx.invert_yaxis()
    bx.set_xscale("log")
    bx.set_xlabel(
        "insert rows/s into the indexed table (log; binary COPY, 250 rows/txn, 4 writers)"
    )
    for i, r in enumerate(first):
        bx.annotate(
            f"{r['insert']:,.0f}",
            (r["insert"], i),
            fontsize=7,
            xytext=(3, -3),
            textcoords="offset points",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(results: dict[str, Any], plot_name: str) -> str:
    m = results["meta"]
    rows = _rows(results)
    seed = targets(rows)
    ws = ", ".join(
        f"ws{w} {n:,} ({s * 100:g} %)"
        for w, (n, s) in enumerate(zip(m["workspace_rows"], m["workspace_shares"], strict=True))
    )
    load = results["base_load"]
    lines = [
        "# Vector index options, side by side",
        "",
        f"Measured by `{m['command'].strip()}` on {m['started']} ({m['seconds'] / 60:.0f} min): "
        f"PostgreSQL {results['server']}, pgvector {results['pgvector']}, {m['cpus']} CPUs "
        "(shared with other engineers' runs: the small print under a figure is its range over the runs). Results: "
        f"[`results/index/index_{m['rows']}.json`](results/index/index_{m['rows']}.json), "
        f"plot: [`results/index/{plot_name}`](results/index/{plot_name}).",
        "",
        f"**Data**: {m['rows']:,} vectors (1536 dims) in {len(m['workspace_rows'])} workspaces: "
        f"{ws}; {m['documents']:,} documents. {m['base_rows']:,} rows are bulk-loaded before "
        f"the index is built; the last {m['insert_rows']:,} are then written into the indexed "
        f"table with the worker's pattern (binary COPY, {m['batch']} rows per transaction, "
        f"{m['writers']} concurrent `service_role` connections, fsync and synchronous_commit "
        f"on). **Queries**: {m['queries']} per variant (an equal number per workspace, "
        "interleaved), k = 10, as role `authenticated` with `request.jwt.claims` set by "
        "`set_config(..., true)` in each query's transaction (the RLS policy "
        "`workspace_id IN (SELECT authz.user_workspaces())`) plus `WHERE workspace_id = $1`, "
        "prepared statements, one connection, after 20 warm-up queries. Recall@10 is against "
        "the exact top-10 of the same filtered query with no vector index (SQL; it agrees "
        f"with a numpy exact search to {results.get('truth_check', {}).get('sql_exact_vs_numpy_exact_overlap', 'n/a')}).",
        "",
        "**Table**: `bench_index.chunks`, standalone, in a scratch database with the real "
        "migrations applied (so `anon`/`authenticated`/`service_role`, `core.workspaces`, "
        "`core.members` and the `authz` helpers are the schema's own): the columns of "
        "`meetings.transcript_chunks` that an index or a search touches (`id uuid` primary key, "
        "`workspace_id` with its FK to `core.workspaces`, `content` ~400 characters, "
        "`content_hash`, `embedding_model`, `embedding vector(1536)`), the btree of "
        "`idx_chunks_ws_model_hash` (`workspace_id, embedding_model, content_hash`), RLS "
        "enabled with the schema's two policies for it (`service_role` all; `authenticated` "
        "reads `workspace_id IN (SELECT authz.user_workspaces())`). One member per workspace "
        "in `core.members`. Autovacuum off on the table; server with `shared_buffers = 2GB` "
        "(the largest index fits), `max_wal_size = 16GB` and a `CHECKPOINT` before each build "
        "and each insert phase. Every option starts from the same 95k-row heap; its index "
        "and inserted rows are dropped after it (partitioned: its own table, filled by "
        "`INSERT ... SELECT`).",
        "",
        f"Base load (the backfill's first half): {load['rows']:,} rows by binary COPY in "
        f"{load['copy_s']} s = {load['rows_per_s']:,.0f} rows/s, heap + TOAST "
        f"{load['heap_toast_mb']:.0f} MB. **backfill rows/s** = base rows / (COPY s + build s), "
        "the build with `max_parallel_maintenance_workers = 2`, `maintenance_work_mem = 2GB`.",
        "",
        (
            f"Each figure is the median of {m['runs']} runs (fresh server, same data); small "
            "print: the runs' range."
            if m.get("runs", 1) > 1
            else "One run."
        ),
        "",
        "p50/p95/recall columns: the queries of the four workspaces above 0.1 %; the *tiny ws* "
        "columns: the 0.1 % workspace's queries. *target*: insert rows/s >= 3x the seed's, "
        "recall@10 >= 0.95, p95 <= the seed's (ef_search 40), every tiny-workspace query "
        "returns 10 rows.",
        "",
        table(rows),
    ]
    if seed:
        winners = [r for r in rows if r.get("meets")]
        winners_100 = [r for r in rows if r.get("meets_100")]
        lines += [
            "Meets all four targets (p95 against the seed at ef_search 40, recall "
            f"{seed['recall']:.3f}): "
            + (", ".join(f"**{r['option']} / {r['variant']}**" for r in winners) or "none")
            + ". With p95 against the seed's HNSW at ef_search 100 (the seed's setting that "
            "gets recall near 0.95 here; the forced variant: under the planner, ef_search 100 "
            "makes some workspaces' plans flip to an exact scan): "
            + (", ".join(f"**{r['option']} / {r['variant']}**" for r in winners_100) or "none")
            + ".",
            "",
        ]
    lines += [
        f"![recall vs p95](results/index/{plot_name})",
        "",
        "## The vector generator",
        "",
        "`bench/index/vectors.py` (deterministic, seeded, float32, generated 2,000 rows at a "
        "time). Uniformly random vectors in 1536 dimensions are all at cosine 0 +- 0.03 from "
        "each other: no neighbour is nearer than the rest, so every ANN index looks broken "
        "and recall means nothing. Text embeddings are (1) anisotropic: a shared direction "
        "puts unrelated texts at cosine ~0.1-0.2; (2) of low intrinsic dimension: a few "
        "hundred directions carry the variance; (3) hierarchical: chunks of one passage, "
        "one document, one topic are progressively less alike; (4) queried by short texts "
        "that resemble, but are not, the stored chunks. The generator builds each vector as "
        "`normalize(sum sqrt(w_k) * component_k)`: a common direction (w 0.12), the "
        "workspace (0.04), one of 300 global topics (0.22; each workspace draws a Dirichlet "
        "mixture over a subset, so tenants share topics and compete in a global index), "
        "its document (0.16; log-normal sizes, median 12 chunks), its segment of 6 adjacent "
        "chunks (0.14), its own part (0.26, scaled per chunk by a log-normal specificity "
        "factor) and isotropic noise (0.06). All but the common direction and the noise "
        "live in a random 512-dim subspace with a power-law variance spectrum "
        "(lambda_i ~ i^-0.5, participation ratio ~270). Queries: 75 % aim at an existing "
        "segment of their workspace, 25 % at a topic only (a new document), each with a "
        "larger own part (0.40): no query is a stored vector. Measured on this run "
        f"({results['generator']['samples']} sampled rows, "
        f"{results['generator']['random_pair_count']} random pairs, every query):",
        "",
        generator_table(results["generator"]),
        "The target shape (text-embedding-3-small): nearest-neighbour cosine ~0.5-0.8, "
        "random pairs ~0.0-0.2 (mean ~0.1-0.2), a query's best chunk ~0.4-0.7. What it "
        "does not model: exact and near-exact duplicates (re-sent mail, quoted history), "
        "which make neighbours easier to find, not harder.",
        "",
        "## Plans per workspace",
        "",
        "The plan each workspace's first query got (EXPLAIN of the prepared statement under "
        "the variant's settings; custom plans unless the variant says generic):",
        "",
        plans_table(results),
        "## Recall and p95 per workspace",
        "",
        per_workspace(results),
    ]
    return "\n".join(lines)


def fallback_section(fb: dict[str, Any]) -> str:
    m = fb["meta"]
    rows = _rows(fb)
    targets(rows)
    skipped = ", ".join(fb.get("skipped_options", [])) or "none"
    skipped_v = [v for o in fb["options"] for v in o.get("skipped_variants", [])]
    return "\n".join(
        [
            f"## On pgvector {fb['pgvector']} (PostgreSQL {fb['server']}), measured",
            "",
            f"The same data, queries and procedure (`{m['command'].strip()}`, "
            f"{m['runs']} run(s), {m['seconds'] / 60:.0f} min; results "
            f"[`results/index/index_{m['rows']}_pg16.json`](results/index/index_{m['rows']}_pg16.json)) "
            "on the pgserver wheel's PostgreSQL 16.2 + pgvector 0.6.2, what the tests' `pg16` "
            f"subset runs. Not available there, so not run: options {skipped} (no `halfvec`, "
            "no `binary_quantize`: pgvector 0.7); variants "
            + ("; ".join(f"*{v}*" for v in skipped_v) or "none")
            + " (no iterative scans: 0.8). Targets against this server's own seed.",
            "",
            table(rows),
            "Plans per workspace:",
            "",
            plans_table(fb),
            "Recall and p95 per workspace:",
            "",
            per_workspace(fb),
        ]
    )


def write(
    results: dict[str, Any],
    plot_path: Path,
    report_path: Path,
    fallback: dict[str, Any] | None = None,
) -> None:
    rows = _rows(results)
    plot(rows, plot_path)
    text = render(results, plot_path.name)
    if fallback:
        text += "\n" + fallback_section(fallback)
    kept = ""
    if report_path.exists():
        old = report_path.read_text()
        if KEEP_MARKER in old:
            kept = old.split(KEEP_MARKER, 1)[1]
    report_path.write_text(text + "\n" + KEEP_MARKER + (kept or "\n"))
