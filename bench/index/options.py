"""The index options compared, and the query variants run against each.

An *option* is one physical design (a table and its vector index DDL): build time, size
and the insert rate belong to it. A *variant* is one way to query it (settings and SQL):
latency and recall belong to the variant. ``{t}`` in the SQL is the table, ``$1`` the
workspace id, ``$2`` the query vector (type ``vector``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

K = 10

SQL_VECTOR = "SELECT id FROM {t} WHERE workspace_id = $1 ORDER BY embedding <=> $2 LIMIT 10"
SQL_HALFVEC = (
    "SELECT id FROM {t} WHERE workspace_id = $1 "
    "ORDER BY embedding::halfvec(1536) <=> $2::vector(1536)::halfvec(1536) LIMIT 10"
)


def sql_binary(candidates: int) -> str:
    """Hamming distance on the index, then exact cosine on ``candidates`` rows."""
    return (
        "SELECT id FROM (SELECT id, embedding FROM {t} WHERE workspace_id = $1 "
        "ORDER BY binary_quantize(embedding)::bit(1536) <~> binary_quantize($2::vector(1536)) "
        f"LIMIT {candidates}) c "
        "ORDER BY c.embedding <=> $2::vector(1536) LIMIT 10"
    )


@dataclass(frozen=True)
class Variant:
    name: str
    sql: str = SQL_VECTOR
    settings: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def pgvector(self) -> tuple[int, ...]:
        """The pgvector version the variant needs (iterative scans: 0.8)."""
        return (0, 8) if any(k.endswith(".iterative_scan") for k in self.settings) else (0, 5)


@dataclass(frozen=True)
class Option:
    name: str
    #: DDL run after the base rows are loaded ("{t}" the table, "{ws_<i>}" a workspace id);
    #: empty: no vector index
    ddl: tuple[str, ...]
    variants: tuple[Variant, ...]
    #: the index names whose sizes are summed
    indexes: tuple[str, ...] = ()
    #: "plain" (bench_index.chunks) or "partitioned" (bench_index.chunks_part)
    table: str = "plain"
    #: needs pgvector >= 0.7 (halfvec, binary_quantize)
    pgvector: str = "0.5"
    description: str = ""


def hnsw_ddl(name: str, m: int, ef_c: int, expr: str = "embedding vector_cosine_ops") -> str:
    return (
        f"CREATE INDEX {name} ON {{t}} USING hnsw ({expr}) WITH (m = {m}, ef_construction = {ef_c})"
    )


#: "forced": no sort left to the planner, so ORDER BY distance must come from the vector
#: index (the index's own recall and latency, whatever the planner would have chosen)
FORCED = {"enable_sort": "off"}
RELAXED = {"hnsw.iterative_scan": "relaxed_order"}
STRICT = {"hnsw.iterative_scan": "strict_order"}


def ivf_lists(rows: int) -> int:
    return max(1, round(rows / 1000))


def bq_option(m: int, ef_c: int) -> Option:
    """The binary-quantized HNSW at other build parameters, queried as search_memory does
    (relaxed_order, 100 or 150 candidates): what a cheaper graph costs in recall."""
    name = f"bq m{m}/ef_c{ef_c}"
    return Option(
        f"bq_m{m}_ef{ef_c}",
        (
            hnsw_ddl(
                "idx_bi_bq", m, ef_c, "(binary_quantize(embedding)::bit(1536)) bit_hamming_ops"
            ),
        ),
        tuple(
            Variant(
                f"{name} {n} re-ranked, relaxed_order",
                sql=sql_binary(n),
                settings={"hnsw.ef_search": str(n)} | RELAXED,
            )
            for n in (100, 150)
        )
        + (
            Variant(
                f"{name} 100 re-ranked, forced, relaxed_order",
                sql=sql_binary(100),
                settings=FORCED | {"hnsw.ef_search": "100"} | RELAXED,
            ),
        ),
        ("idx_bi_bq",),
        pgvector="0.7",
        description=f"binary-quantized HNSW, m {m}, ef_construction {ef_c}",
    )


def options(base_rows: int, n_ws: int) -> list[Option]:
    lists = ivf_lists(base_rows)
    partial_ddl = tuple(
        hnsw_ddl(f"idx_bi_partial_{i}", 16, 64) + f" WHERE workspace_id = '{{ws_{i}}}'"
        for i in range(n_ws)
    )
    return [
        Option(
            "exact",
            (),
            (Variant("exact", note="no vector index: the btree on workspace_id, then a sort"),),
            description="no vector index (the ground truth; insert rate without HNSW)",
        ),
        Option(
            "hnsw_m16_ef64",
            (hnsw_ddl("idx_bi_hnsw", 16, 64),),
            (
                Variant("seed ef_search=40"),
                Variant("seed ef_search=100", settings={"hnsw.ef_search": "100"}),
                Variant(
                    "seed ef_search=40, generic plan",
                    settings={"plan_cache_mode": "force_generic_plan"},
                    note="the plan a prepared statement may settle on after 5 executions",
                ),
                Variant("seed ef_search=40, relaxed_order", settings=RELAXED),
                Variant("seed ef_search=40, forced", settings=FORCED),
                Variant("seed ef_search=100, forced", settings=FORCED | {"hnsw.ef_search": "100"}),
                Variant("seed ef_search=40, forced, relaxed_order", settings=FORCED | RELAXED),
                Variant("seed ef_search=40, forced, strict_order", settings=FORCED | STRICT),
            ),
            ("idx_bi_hnsw",),
            description="the seed default: vector HNSW, m 16, ef_construction 64",
        ),
        Option(
            "hnsw_m16_ef32",
            (hnsw_ddl("idx_bi_hnsw", 16, 32),),
            (
                Variant("m16/ef_c32 ef_search=40"),
                Variant("m16/ef_c32 ef_search=40, forced", settings=FORCED),
                Variant(
                    "m16/ef_c32 ef_search=40, forced, relaxed_order", settings=FORCED | RELAXED
                ),
            ),
            ("idx_bi_hnsw",),
            description="vector HNSW, m 16, ef_construction 32",
        ),
        Option(
            "hnsw_m8_ef32",
            (hnsw_ddl("idx_bi_hnsw", 8, 32),),
            (
                Variant("m8/ef_c32 ef_search=40"),
                Variant("m8/ef_c32 ef_search=40, forced", settings=FORCED),
                Variant(
                    "m8/ef_c32 ef_search=100, forced", settings=FORCED | {"hnsw.ef_search": "100"}
                ),
                Variant("m8/ef_c32 ef_search=40, forced, relaxed_order", settings=FORCED | RELAXED),
            ),
            ("idx_bi_hnsw",),
            description="vector HNSW, m 8, ef_construction 32",
        ),
        Option(
            "halfvec_m16_ef64",
            (hnsw_ddl("idx_bi_half", 16, 64, "(embedding::halfvec(1536)) halfvec_cosine_ops"),),
            (
                Variant("halfvec ef_search=40", sql=SQL_HALFVEC),
                Variant(
                    "halfvec ef_search=100", sql=SQL_HALFVEC, settings={"hnsw.ef_search": "100"}
                ),
                Variant("halfvec ef_search=40, forced", sql=SQL_HALFVEC, settings=FORCED),
                Variant(
                    "halfvec ef_search=100, forced",
                    sql=SQL_HALFVEC,
                    settings=FORCED | {"hnsw.ef_search": "100"},
                ),
                Variant(
                    "halfvec ef_search=40, forced, relaxed_order",
                    sql=SQL_HALFVEC,
                    settings=FORCED | RELAXED,
                ),
            ),
            ("idx_bi_half",),
            pgvector="0.7",
            description="halfvec expression HNSW (m 16, ef_construction 64)",
        ),
        Option(
            "bq_m16_ef64",
            (
                hnsw_ddl(
                    "idx_bi_bq", 16, 64, "(binary_quantize(embedding)::bit(1536)) bit_hamming_ops"
                ),
            ),
            (
                Variant(
                    "bq 100 re-ranked", sql=sql_binary(100), settings={"hnsw.ef_search": "100"}
                ),
                Variant(
                    "bq 150 re-ranked", sql=sql_binary(150), settings={"hnsw.ef_search": "150"}
                ),
                Variant(
                    "bq 100 re-ranked, relaxed_order",
                    sql=sql_binary(100),
                    settings={"hnsw.ef_search": "100"} | RELAXED,
                ),
                Variant(
                    "bq 40 re-ranked, forced",
                    sql=sql_binary(40),
                    settings=FORCED | {"hnsw.ef_search": "40"},
                ),
                Variant(
                    "bq 100 re-ranked, forced",
                    sql=sql_binary(100),
                    settings=FORCED | {"hnsw.ef_search": "100"},
                ),
                Variant(
                    "bq 200 re-ranked, forced",
                    sql=sql_binary(200),
                    settings=FORCED | {"hnsw.ef_search": "200"},
                ),
                Variant(
                    "bq 100 re-ranked, forced, relaxed_order",
                    sql=sql_binary(100),
                    settings=FORCED | {"hnsw.ef_search": "100"} | RELAXED,
                ),
            ),
            ("idx_bi_bq",),
            pgvector="0.7",
            description="binary-quantized HNSW (bit_hamming_ops), exact cosine re-ranking",
        ),
        Option(
            "bq_ivfflat",
            (
                f"CREATE INDEX idx_bi_bq_ivf ON {{t}} USING ivfflat "
                f"((binary_quantize(embedding)::bit(1536)) bit_hamming_ops) WITH (lists = {lists})",
            ),
            tuple(
                Variant(
                    f"bq ivfflat probes={p} {n} re-ranked, relaxed_order",
                    sql=sql_binary(n),
                    settings={"ivfflat.probes": str(p), "ivfflat.iterative_scan": "relaxed_order"},
                )
                for p, n in ((5, 100), (10, 100), (10, 150), (20, 150))
            )
            + (
                Variant(
                    "bq ivfflat probes=10 100 re-ranked, forced, relaxed_order",
                    sql=sql_binary(100),
                    settings=FORCED
                    | {"ivfflat.probes": "10", "ivfflat.iterative_scan": "relaxed_order"},
                ),
            ),
            ("idx_bi_bq_ivf",),
            pgvector="0.8",
            description=f"binary-quantized IVFFlat built after the load (lists {lists}), "
            "exact cosine re-ranking",
        ),
        bq_option(12, 64),
        bq_option(12, 48),
        bq_option(16, 48),
        Option(
            "ivfflat",
            (
                f"CREATE INDEX idx_bi_ivf ON {{t}} USING ivfflat (embedding vector_cosine_ops) "
                f"WITH (lists = {lists})",
            ),
            (
                Variant(f"ivfflat lists={lists} probes=5", settings={"ivfflat.probes": "5"}),
                Variant(f"ivfflat lists={lists} probes=10", settings={"ivfflat.probes": "10"}),
                Variant(
                    f"ivfflat lists={lists} probes=5, forced",
                    settings=FORCED | {"ivfflat.probes": "5"},
                ),
                Variant(
                    f"ivfflat lists={lists} probes=10, forced",
                    settings=FORCED | {"ivfflat.probes": "10"},
                ),
                Variant(
                    f"ivfflat lists={lists} probes=20, forced",
                    settings=FORCED | {"ivfflat.probes": "20"},
                ),
                Variant(
                    f"ivfflat lists={lists} probes=40, forced",
                    settings=FORCED | {"ivfflat.probes": "40"},
                ),
                Variant(
                    f"ivfflat lists={lists} probes=10, forced, relaxed_order",
                    settings=FORCED
                    | {"ivfflat.probes": "10", "ivfflat.iterative_scan": "relaxed_order"},
                ),
            ),
            ("idx_bi_ivf",),
            description=f"IVFFlat built after the load, lists = rows/1000 = {lists}",
        ),
        Option(
            "partitioned_hnsw",
            (hnsw_ddl("idx_bi_part", 16, 64),),
            (
                Variant("partitioned ef_search=40"),
                Variant("partitioned ef_search=40, forced", settings=FORCED),
            ),
            ("idx_bi_part",),
            table="partitioned",
            description="LIST-partitioned by workspace (one partition each), seed HNSW per partition",
        ),
        Option(
            "partial_hnsw",
            partial_ddl,
            (
                Variant(
                    "partial ef_search=40",
                    note="a partial index is chosen only when the plan sees the workspace value",
                ),
                Variant("partial ef_search=40, forced", settings=FORCED),
            ),
            tuple(f"idx_bi_partial_{i}" for i in range(n_ws)),
            description="one partial seed HNSW per workspace (WHERE workspace_id = ...)",
        ),
    ]
