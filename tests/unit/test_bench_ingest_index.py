"""bench/ingest_index.py's pure logic: the variants' order, which indexes a database has,
the process tree's CPU, the medians/ranges/ratios and the table (no timing asserted)."""

from __future__ import annotations

import pytest

from bench import corpus as corpus_mod
from bench.ingest_index import (
    ROLLBACK_006,
    VARIANTS,
    classify,
    process_tree_cpu,
    ratio,
    rollback_index_block,
    stat,
    summarize,
    table,
    variant_order,
)

SEED = "CREATE INDEX idx_chunks_embedding ON meetings.transcript_chunks USING hnsw (embedding vector_cosine_ops) WITH (m='16', ef_construction='64')"
HNSW_BQ = "CREATE INDEX idx_chunks_embedding ON meetings.transcript_chunks USING hnsw (((binary_quantize(embedding))::bit(1536)) bit_hamming_ops) WITH (m='16', ef_construction='64')"
SHIPPED = "CREATE INDEX idx_chunks_embedding ON meetings.transcript_chunks USING ivfflat (((binary_quantize(embedding))::bit(1536)) bit_hamming_ops) WITH (lists='1')"


def test_order_rotates_so_every_variant_takes_every_place() -> None:
    n = len(VARIANTS)
    orders = [variant_order(i) for i in range(n)]
    assert orders[0] == list(VARIANTS)
    for order in orders:
        assert sorted(order) == sorted(VARIANTS)
    for place in range(n):
        assert {o[place] for o in orders} == set(VARIANTS)
    assert variant_order(n) == variant_order(0)


def test_classify() -> None:
    assert classify({"a": SEED, "b": SEED, "c": SEED}) == "seed"
    assert classify({"a": SHIPPED, "b": SHIPPED, "c": SHIPPED}) == "shipped"
    assert classify({"a": HNSW_BQ, "b": HNSW_BQ, "c": HNSW_BQ}) == "hnsw_bq"
    assert classify({"a": HNSW_BQ, "b": SHIPPED, "c": SHIPPED}) == "mixed"
    assert classify({"a": None, "b": None, "c": None}) == "none"
    assert classify({"a": SEED, "b": SHIPPED, "c": SHIPPED}) == "mixed"
    assert classify({"a": SEED, "b": None, "c": SEED}) == "mixed"
    assert classify({"a": "CREATE INDEX x ON t USING ivfflat (embedding)"}) == "other"


def test_process_tree_cpu() -> None:
    # parent user/system + reaped children's user/system, plus live children
    assert process_tree_cpu((1.0, 0.5, 10.0, 2.0), [3.0, 0.25]) == pytest.approx(16.75)
    assert process_tree_cpu((0.0, 0.0, 0.0, 0.0), []) == 0.0


def test_stat_skips_missing_values() -> None:
    assert stat([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert stat([None]) == {"median": None, "min": None, "max": None, "n": 0}


def _rec(run: int, variant: str, seconds: float, budget: str = "lifted") -> dict:
    rows = 9000
    return {
        "run": run,
        "budget": budget,
        "variant": variant,
        "seconds": seconds,
        "vector_rows": rows,
        "rows_per_s": rows / seconds,
        "pg_cpu_s": seconds * 1.5 if variant == "seed" else seconds / 2,
        "worker_cpu_s": 12.0,
        "embedder_cpu_s": None,
        "peak_rss_mb": 250.0 + run,
        "requests": 12,
        "tokens": 3_000_000,
        "all_done": True,
    }


RECORDS = [
    _rec(0, "seed", 60.0),
    _rec(0, "shipped", 20.0),
    _rec(0, "none", 15.0),
    _rec(1, "shipped", 25.0),
    _rec(1, "none", 16.0),
    _rec(1, "seed", 70.0),
    _rec(2, "none", 14.0),
    _rec(2, "seed", 66.0),
    _rec(2, "shipped", 22.0),
    _rec(0, "seed", 80.0, "default"),
    _rec(0, "shipped", 30.0, "default"),
]


def test_ratio_of_medians_and_per_run_pairs() -> None:
    r = ratio([x for x in RECORDS if x["budget"] == "lifted"], "seed", "shipped")
    assert r is not None
    assert r["of_medians"] == pytest.approx(66.0 / 22.0)
    assert r["per_run"] == pytest.approx([3.0, 2.8, 3.0])
    assert (r["min"], r["max"]) == pytest.approx((2.8, 3.0))
    assert ratio(RECORDS, "seed", "absent") is None


def test_summarize_medians_ranges_and_budgets() -> None:
    s = summarize(RECORDS)
    assert list(s) == ["lifted", "default"]
    seed = s["lifted"]["variants"]["seed"]
    assert seed["seconds"] == {"median": 66.0, "min": 60.0, "max": 70.0, "n": 3}
    assert seed["rows_per_s"]["median"] == pytest.approx(9000 / 66.0)
    assert seed["peak_rss_mb"]["max"] == 252.0
    assert seed["runs"] == 3 and seed["all_done"]
    assert s["lifted"]["shipped_over_none"]["of_medians"] == pytest.approx(22.0 / 15.0)
    cpu = s["lifted"]["pg_cpu_seed_over_shipped"]
    assert cpu["of_medians"] == pytest.approx(99.0 / 11.0)
    assert cpu["per_run"] == pytest.approx([9.0, 8.4, 9.0])
    assert seed["worker_cpu_s"]["median"] == 12.0
    assert seed["embedder_cpu_s"] == {"median": None, "min": None, "max": None, "n": 0}
    d = s["default"]
    assert set(d["variants"]) == {"seed", "shipped"}
    assert d["seed_over_shipped"]["of_medians"] == pytest.approx(80.0 / 30.0)
    assert d["shipped_over_none"] is None


def test_summarize_flags_an_unfinished_ledger() -> None:
    bad = [*RECORDS[:3], {**_rec(1, "seed", 61.0), "all_done": False}]
    assert not summarize(bad)["lifted"]["variants"]["seed"]["all_done"]
    assert summarize(bad)["lifted"]["variants"]["shipped"]["all_done"]


def test_table_renders_every_variant_and_the_ratios() -> None:
    meta = {
        "size": "issue21",
        "items": 1100,
        "emails": 1000,
        "meetings": 100,
        "media": 0,
        "corpus_tokens": 2_487_833,
        "chunk_tokens": None,
        "load_1m_min": 2.0,
        "load_1m_max": 4.5,
        "cpus": 2,
        "command": "python -m bench.ingest_index --runs 3",
    }
    md = table({"meta": meta, "summary": summarize(RECORDS)})
    assert "| lifted | seed `vector` HNSW (006 rolled back) | 3 | 66.0 <sub>60.0-70.0</sub>" in md
    assert "| default | shipped: 007 binary-quantized IVFFlat | 1 | 30.0 |" in md
    assert "seed / shipped **3.00x** (runs: 3.00, 2.80, 3.00; target >= 3x)" in md
    assert "seed / shipped **2.67x**" in md
    assert "all done, 0 failed" in md
    assert "PostgreSQL CPU seed / shipped 9.00x (runs: 9.00, 8.40, 9.00)" in md
    assert (
        "| 99.0 <sub>90.0-105.0</sub> | 12.0 <sub>12.0-12.0</sub> | n/a | 251 <sub>250-252</sub> |"
        in md
    )
    assert "`python -m bench.ingest_index --runs 3`" in md


def test_issue21_size_is_the_issues_corpus_and_the_others_are_unchanged() -> None:
    assert corpus_mod.SIZES["issue21"]["emails"] == 1000
    assert corpus_mod.SIZES["issue21"]["meetings"] == 100
    assert corpus_mod.SIZES["medium"] == {
        "emails": 600,
        "meetings": 20,
        "meeting_min": 60,
        "media": 20,
        "media_min": 20,
    }


def test_rollback_index_block_is_the_seed_index_statement_only() -> None:
    block = rollback_index_block(ROLLBACK_006.read_text())
    assert block.startswith("DO $idx$") and block.endswith("$idx$;")
    assert "vector_cosine_ops" in block and "idx_media_chunks_embedding" in block
    assert "search_memory" not in block and "schema_migrations" not in block
    with pytest.raises(ValueError):
        rollback_index_block("BEGIN; COMMIT;")
