"""The recall probe: how well a vector index answers its own query shape, measured.

A REINDEX can only change the graph (or the lists) a vector index searches, so the probe
measures that graph, over the whole table:

1. sample ``samples`` stored rows with an embedding (``TABLESAMPLE BERNOULLI``, random
   order) and perturb each vector with isotropic noise (cosine ~0.9 to the original), so
   a query is near stored content but not a copy of it;
2. per query, in a transaction of its own: the index's query shape with the index forced
   (``enable_seqscan``/``enable_sort`` off, ``SET LOCAL``) and search's settings:

   * ``vector`` column with ``vector_{cosine,l2,ip,l1}_ops``: ``ORDER BY embedding <op> q
     LIMIT 10``, ``hnsw.ef_search`` 100;
   * ``(binary_quantize(embedding)::bit(n)) bit_hamming_ops`` (migration 006): the 100
     nearest by Hamming distance (``hnsw.ef_search`` 100, ``iterative_scan =
     relaxed_order`` on pgvector 0.8; 150 and 150 without iterative scans), re-ranked by
     ``embedding <=> q``, first 10;
   * an IVFFlat index (migration 007's binary-quantized ones): the same, with
     ``ivfflat.probes = ops.ivfflat_probes(lists)`` and ``ivfflat.iterative_scan =
     relaxed_order``, as search_memory runs it;
   then the exact answer, ``ORDER BY embedding <op> q LIMIT 10`` with index scans off;
3. recall@10 = the mean share of the exact 10 the index found.

No workspace filter: what the filter does to recall (a small workspace's rows are few in
a shared graph; the planner sorts them exactly instead) is the search's business, the
same before and after a rebuild, and would make a healthy index look bad.

Cost: 2 statements per sample, the exact one a scan of the table's embeddings (TOAST);
each statement is bounded by ``timeout_ms`` and a timed-out sample is left out
(``timed_out``). Too few answered samples: no recall (``None``).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import numpy as np

from worker.db.queries import Q
from worker.maintenance import ivfflat
from worker.maintenance.capabilities import Capabilities

K = 10
NOISE = 0.5  # norm of the perturbation of a unit vector: cosine ~ 1 / sqrt(1 + 0.25)
MIN_ANSWERED = 0.5  # share of samples that must answer for the recall to count
OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>", "l1": "<+>"}
#: the approximate query must come from the index; the exact one must not
FORCED = {"enable_indexscan": "on", "enable_seqscan": "off", "enable_sort": "off"}
EXACT = {"enable_indexscan": "off", "enable_seqscan": "on", "enable_sort": "on"}
_BIT = re.compile(r'binary_quantize\(("?\w+"?)\)\)?::bit\((\d+)\)')
_COLUMN = re.compile(r'USING \w+ \(("?\w+"?) (?:[\w"]+\.)?vector_(cosine|l2|ip|l1)_ops')


@dataclass(frozen=True)
class Target:
    """An index the probe knows how to query: its table, column and shape."""

    index: str  # as given (schema.index)
    table: str  # quoted
    method: str
    column: str
    operator: str  # exact distance: the index's, or cosine for the re-ranked bit index
    bits: int | None  # the binary-quantized expression's length; None: a vector column
    vector_schema: str  # quoted
    lists: int | None = None  # an IVFFlat index's lists option

    @property
    def shape(self) -> str:
        if self.bits is None:
            return f"{self.column} {self.operator} q"
        return f"hamming(binary_quantize({self.column})) candidates, re-ranked by <=>"


@dataclass(frozen=True)
class Probe:
    """The probe's outcome; ``recall`` None when it could not be measured (``note``)."""

    recall: float | None
    samples: int
    answered: int
    timed_out: int
    ms: int
    shape: str = ""
    note: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def parse(indexdef: str) -> tuple[str, str, int | None] | None:
    """``(column, exact operator, bits)`` from ``pg_get_indexdef``; None: not probed."""
    if m := _BIT.search(indexdef):
        return m[1], "<=>", int(m[2])
    if m := _COLUMN.search(indexdef):
        return m[1], OPERATORS[m[2]], None
    return None


async def target_for(conn: asyncpg.Connection, index: str) -> Target | None:
    """The probe's view of ``index`` (``schema.index``); None if it has no known shape."""
    r = await conn.fetchrow(Q.recall_index_shape, index)
    if r is None or r["vector_schema"] is None:
        return None
    shape = parse(r["indexdef"])
    if shape is None or r["method"] not in ("hnsw", "ivfflat"):
        return None
    column, operator, bits = shape
    return Target(index, r["qualified_table"], r["method"], column, operator, bits,
                  r["vector_schema"], ivfflat.lists_option(r["reloptions"]))  # fmt: skip


def _queries(
    t: Target, iterative: bool, probes: int | None = None
) -> tuple[str, str, dict[str, str], int]:
    """(approximate SQL, exact SQL, approximate settings, candidates); ``$1`` the query
    vector, ``$2`` k, ``$3`` candidates (the bit shape). ``probes``: an IVFFlat index's
    ``ivfflat.probes``, as search_memory sets it for the index's lists (007)."""
    names = {
        "table": t.table,
        "column": t.column,
        "schema": t.vector_schema,
        "operator": t.operator,
        "bits": t.bits,
    }
    exact = Q.recall_exact.format(**names)
    gucs = dict(FORCED)
    if probes is not None:  # an IVFFlat index
        gucs["ivfflat.probes"] = str(probes)
        if iterative:
            gucs["ivfflat.iterative_scan"] = "relaxed_order"
    if t.bits is None:
        if t.method == "hnsw":
            gucs["hnsw.ef_search"] = "100"
        return Q.recall_approx_vector.format(**names), exact, gucs, K
    candidates = 100 if iterative else 150  # as search_memory (migration 006)
    gucs["hnsw.ef_search"] = str(candidates)
    if iterative:
        gucs["hnsw.iterative_scan"] = "relaxed_order"
    return Q.recall_approx_bit.format(**names), exact, gucs, candidates


def perturb(vector: Any, rng: np.random.Generator) -> np.ndarray:
    """A unit copy of ``vector`` (numpy array or pgvector ``Vector``) plus noise."""
    v = np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, np.float32)
    v = v / max(float(np.linalg.norm(v)), 1e-12)
    noise = np.asarray(rng.standard_normal(v.shape[0]), dtype=np.float32)
    return v + NOISE * noise / max(float(np.linalg.norm(noise)), 1e-12)


async def probe(
    conn: asyncpg.Connection,
    target: Target,
    *,
    samples: int,
    iterative: bool,
    timeout_ms: int,
    rows: int | None = None,
    seed: int | None = None,
) -> Probe:
    """Measure recall@10 of ``target`` on ``samples`` perturbed stored vectors (see the
    module docstring). Each sample runs in a transaction of its own (a savepoint inside a
    caller's transaction, whose settings then last until that transaction ends) with
    transaction-local settings: nothing leaks into the session."""
    begin = time.monotonic()
    rng = np.random.default_rng(seed)
    probes = await ivfflat.probes(conn, target.lists) if target.method == "ivfflat" else None
    approx_sql, exact_sql, gucs, candidates = _queries(target, iterative, probes)
    extra = (candidates,) if target.bits is not None else ()
    rows = rows if rows is not None else await conn.fetchval(Q.recall_table_rows, target.table)
    percent = min(100.0, 100.0 * max(20 * samples, 1000) / max(int(rows or 0), 1))
    sample_sql = Q.recall_sample.format(table=target.table, column=target.column)
    async with conn.transaction():
        await conn.execute(Q.recall_set_local, "statement_timeout", str(timeout_ms))
        stored = [r[0] for r in await conn.fetch(sample_sql, percent, samples)]
    recalls: list[float] = []
    timed_out = 0
    for vector in stored:
        q = perturb(vector, rng)
        try:
            async with conn.transaction():
                await conn.execute(Q.recall_set_local, "statement_timeout", str(timeout_ms))
                for name, value in gucs.items():
                    await conn.execute(Q.recall_set_local, name, value)
                found = {r[0] for r in await conn.fetch(approx_sql, q, K, *extra)}
                for name, value in EXACT.items():
                    await conn.execute(Q.recall_set_local, name, value)
                exact = [r[0] for r in await conn.fetch(exact_sql, q, K)]
        except asyncpg.QueryCanceledError:
            timed_out += 1
            continue
        if exact:
            recalls.append(len(found.intersection(exact)) / len(exact))
    ms = round((time.monotonic() - begin) * 1000)
    note: str | None = None
    if not stored:
        note = "no rows with an embedding sampled"
    elif len(recalls) < MIN_ANSWERED * len(stored):
        note = f"{timed_out} of {len(stored)} samples timed out ({timeout_ms} ms each)"
    recall = round(sum(recalls) / len(recalls), 4) if recalls and note is None else None
    return Probe(recall, len(stored), len(recalls), timed_out, ms, target.shape, note)


async def measure(
    conn: asyncpg.Connection,
    index: str,
    rows: int,
    caps: Capabilities,
    samples: int,
    timeout_ms: int,
) -> Probe:
    """:func:`probe` of ``index`` (``schema.index``, ``rows`` in its table) as the server
    allows; a shape it does not know, or an error (a role that may not read the table),
    is a probe without recall, with a note."""
    try:
        target = await target_for(conn, index)
        if target is None:
            return Probe(None, 0, 0, 0, 0, note="index shape not known to the probe")
        return await probe(
            conn,
            target,
            samples=samples,
            iterative=caps.iterative_index_scans,
            timeout_ms=timeout_ms,
            rows=rows,
        )
    except asyncpg.PostgresError as exc:
        return Probe(None, 0, 0, 0, 0, note=f"{type(exc).__name__}: {exc}")


async def at_build(conn: asyncpg.Connection) -> dict[str, float]:
    """``index_name -> recall`` probed right after its last rebuild by this job."""
    rows = await conn.fetch(Q.reindex_recall_at_build)
    return {r["index_name"]: float(r["recall_after"]) for r in rows}


async def counters_at_build(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    """``index_name -> (inserted, deleted)``: the table's cumulative counters as the first
    run after the index's last build saw them (the churn rule's baseline)."""
    rows = await conn.fetch(Q.reindex_counters_at_build)
    return {r["index_name"]: (int(r["inserted_total"]), int(r["deleted_total"])) for r in rows}
