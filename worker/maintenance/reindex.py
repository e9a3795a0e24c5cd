"""Vector-index rebuilds by policy, and cleanup of invalid leftovers.

Policy (per HNSW/IVFFlat index in the project's schemas), from measured drift
(``python -m bench.index --drift``, bench/INDEX.md "Drift"): growing a table 3x through
its index or deleting half its rows (+ VACUUM) changed recall@10 by no more than the
measurement's noise against a fresh build of the same rows; replacing a third or more
of them cost 0.01-0.03. What a rebuild restores is a graph that answers badly, so that is
what is measured, where it can be:

* **Lists** (IVFFlat, :mod:`worker.maintenance.ivfflat`): lists off for the rows now
  (``ops.ivfflat_lists``) re-create the index with the rule's (reason ``lists``), first.
* **Recall** (``reindex_recall_target``, 0.90; 0: off). The probe
  (:mod:`worker.maintenance.recall`) runs ``PROBE_QUERIES`` sampled queries through the
  index's own query shape and exactly; below the target: rebuild (reason ``recall``).
  A rebuild records the recall it restored (``recall_after``); when that was below the
  target too, or while recall stays within ``RECALL_TOLERANCE`` of it, rebuilding again
  would not help and is not done
  (``recall_below_target_since_build``: the index's options or search's settings fall
  short, not the graph).
* **Churn** (``CHURN_REBUILD``): rows both deleted and inserted since the build (the
  table's ``n_tup_del``/``n_tup_ins`` against the first run after the build) reaching a
  third of the rows then: rebuild (reason ``churn``). New rows written into the slots
  VACUUM freed cost the shipped query 0.01-0.03 recall@10 — real, but below what 20 probe
  samples resolve, so this rule stands in for the probe there.
* **Growth** (``reindex_growth_factor`` x the live rows of the last build, kept in
  ``ops.index_builds``) rebuilds only where recall was not measured (probe off, shape
  unknown, timed out): there it stands in for the measurement. The first time an index
  is seen it gets a baseline row and no rebuild, unless its recall is measured short.
* **Bloat** (``reindex_bloat_ratio``) gives space back: ``1 - expected_pages /
  actual_pages``, the expected size from pgvector's page layout (a 72-byte element
  header + the value, ``vector``/``halfvec``/``bit`` — the binary-quantized index's
  ``bit(1536)`` is 192 bytes + 8 — and a neighbour tuple of ``(2 + 1/(m-1)) * m`` item
  pointers per row, in 8 kB pages). VACUUM never shrinks an HNSW index, so after a large
  delete it stays big while live rows drop (inserts then refill it). Dead tuples are
  reported (``dead_ratio``) but rebuild nothing: measured, they cost no recall, and
  VACUUM removes them. ``n_live_tup`` counts unembedded rows too, so the estimate errs
  toward not rebuilding.
* Tables under ``MIN_ROWS_FOR_REBUILD`` live rows are neither probed nor rebuilt; nor
  are indexes the role may not rebuild probed. At most ``reindex_max_per_run`` rebuilds
  per run: recall shortfalls first, then the largest overshoot.

Every decision has a ``reason`` (a code) and a ``why`` (the numbers, in words).

Rebuilds use ``REINDEX INDEX CONCURRENTLY`` (cannot run inside a transaction block,
so the caller's connection must be in autocommit, which asyncpg is outside
``transaction()``): reads and writes continue while the new index is built. If it is
interrupted (cancel, lock/statement timeout, crash) it leaves an INVALID index
named ``<name>_ccnew`` (or ``_ccold``) that every write still has to maintain;
:func:`invalid_indexes` finds such leftovers and :func:`drop_invalid` removes them
with ``DROP INDEX CONCURRENTLY``. An invalid index whose table has an index build in
progress (``pg_stat_progress_create_index``) is left alone: it may be someone's
running ``CREATE INDEX CONCURRENTLY``.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from worker.core.settings import Settings
from worker.db.queries import Q
from worker.maintenance import ivfflat, recall
from worker.maintenance.analyze import PROJECT_SCHEMAS
from worker.maintenance.capabilities import Access, Capabilities, reindex_access
from worker.maintenance.index_size import bloat_estimate

MIN_ROWS_FOR_REBUILD = 1_000
PROBE_QUERIES = 20  # sampled queries per index and run (recall probe)
PROBE_TIMEOUT_MS = 10_000  # bound on each of the probe's statements
#: rows deleted and as many inserted since the build, as a share of the rows then: the
#: freed graph slots refilled cost 0.01-0.03 recall@10 (bench/INDEX.md, Drift)
CHURN_REBUILD = 0.33
#: a recall this close to the one measured right after the last rebuild is not drift
RECALL_TOLERANCE = 0.05  # the probe's noise at 20 samples (bench/INDEX.md, Drift)


@dataclass(frozen=True)
class VectorIndex:
    """A vector index with the table counters the policy needs."""

    name: str  # schema.index, unquoted: the key in ops.index_builds
    qualified: str  # quoted, for statements
    table_name: str
    method: str
    pages: int
    live_rows: int
    dead_rows: int
    column_type: str
    m: int
    access: Access  # may the login role REINDEX it (MAINTAIN on 17+, ownership before)
    inserted_total: int = 0  # the table's cumulative n_tup_ins / n_tup_del
    deleted_total: int = 0
    lists: int | None = None  # an IVFFlat index's lists option


@dataclass(frozen=True)
class ReindexDecision:
    """What to do with one index: ``baseline``, ``rebuild`` or ``none``; ``reason`` a code,
    ``why`` the same in words with the numbers."""

    index: VectorIndex
    action: str
    reason: str
    rows_at_build: int | None
    growth: float | None
    bloat: float
    why: str = ""
    probe: recall.Probe | None = None
    recall_after_build: float | None = None
    dead_ratio: float = 0.0
    churn: float | None = None
    #: an IVFFlat rebuild's new lists (re-created, not REINDEXed); None: REINDEX as it is
    lists: int | None = None


@dataclass(frozen=True)
class InvalidIndex:
    """An INVALID index left behind by an interrupted concurrent (re)build."""

    name: str
    qualified: str
    table_name: str
    bytes: int
    build_in_progress: bool
    owned: bool  # DROP INDEX needs ownership of the table, on every version

    @property
    def leftover_kind(self) -> str:
        if "_ccnew" in self.name:
            return "interrupted_reindex_new"
        if "_ccold" in self.name:
            return "interrupted_reindex_old"
        return "invalid"


def _m_option(reloptions: list[str] | None) -> int:
    for option in reloptions or []:
        key, _, value = option.partition("=")
        if key == "m" and value.isdigit():
            return int(value)
    return 16  # pgvector's default


def dead_ratio(index: VectorIndex) -> float:
    """Dead tuples' share of the table (deleted/updated rows VACUUM has not removed)."""
    total = index.live_rows + index.dead_rows
    return index.dead_rows / total if total else 0.0


def _measured(probe: recall.Probe | None, target: float) -> str:
    if probe is None:
        return "recall not probed"
    if probe.recall is None:
        return f"recall not measured ({probe.note})"
    sign = "<" if probe.recall < target else ">="
    return f"recall@10 {probe.recall:.2f} {sign} {target:.2f} on {probe.answered} sampled queries"


def decide(
    index: VectorIndex,
    rows_at_build: int | None,
    settings: Settings,
    *,
    min_rows: int = MIN_ROWS_FOR_REBUILD,
    probe: recall.Probe | None = None,
    recall_after_build: float | None = None,
    churn: float | None = None,
    lists_target: int | None = None,
) -> ReindexDecision:
    """The policy as a pure function (see module docstring). ``lists_target``: for an
    IVFFlat index, ``ops.ivfflat_lists`` of its rows now."""
    bloat = bloat_estimate(index)
    dead = dead_ratio(index)
    growth = None if rows_at_build is None else index.live_rows / max(rows_at_build, 1)
    target = settings.reindex_recall_target
    measured = _measured(probe, target)
    facts = [measured]
    if growth is not None:
        facts.append(f"{growth:.1f}x the rows of the last build ({rows_at_build})")
    if churn is not None:
        facts.append(f"{churn:.0%} of the rows replaced since the build")
    facts.append(f"dead tuples {dead:.0%}, estimated bloat {bloat:.0%}")
    relist = ivfflat.lists_off(index.lists, lists_target)  # (None but for IVFFlat)

    def out(action: str, reason: str, lead: str) -> ReindexDecision:
        why = "; ".join([lead, *[f for f in facts if not lead.startswith(f)]])
        return ReindexDecision(
            index, action, reason, rows_at_build, growth, bloat, why, probe,
            recall_after_build, dead, churn, lists_target if relist else None,
        )  # fmt: skip

    if index.live_rows < min_rows:
        if rows_at_build is None:
            return out("baseline", "first_seen", "first seen: its build is not known")
        return out("none", "table_too_small", f"{index.live_rows} rows < {min_rows}")
    if relist is not None:  # before recall: one list answers well, but reads every row
        return out("rebuild", "lists", relist)
    value = None if probe is None else probe.recall
    low = value is not None and value < target
    if (
        low
        and recall_after_build is not None
        # the last rebuild could not reach the target either (a weak graph's probe varies
        # by more than the tolerance: 0.235 then < 0.185), or this is within the noise
        and (recall_after_build < target or (value or 0.0) >= recall_after_build - RECALL_TOLERANCE)
    ):
        return out(
            "none",
            "recall_below_target_since_build",
            f"{measured}, but {recall_after_build:.2f} right after the last rebuild: not "
            "drift, a rebuild would not restore it (the index's options and search's decide)",
        )
    if low:
        return out("rebuild", "recall", measured)
    if rows_at_build is None:
        return out("baseline", "first_seen", "first seen: its build is not known")
    # IVFFlat: neither churn nor growth measured a drift (bench/INDEX.md, Drift); the lists
    # rule above re-creates it as it grows
    graph = index.method != "ivfflat"
    if graph and churn is not None and churn >= CHURN_REBUILD:  # a drift the probe misses
        return out("rebuild", "churn", f"{churn:.0%} of the rows replaced since the build "
                   f">= {CHURN_REBUILD:.0%}")  # fmt: skip
    if graph and growth is not None and growth >= settings.reindex_growth_factor:
        if value is None:  # growth stands in for the recall it could not measure
            lead = f"{growth:.1f}x growth >= {settings.reindex_growth_factor}"
            return out("rebuild", "growth", lead)
        facts.append("growth measured harmless: no rebuild for it")
    if bloat >= settings.reindex_bloat_ratio:
        return out("rebuild", "bloat", f"estimated bloat {bloat:.0%} >= "
                   f"{settings.reindex_bloat_ratio:.0%}")  # fmt: skip
    return out("none", "within_policy", "within policy")


def cap(decisions: list[ReindexDecision], limit: int) -> list[ReindexDecision]:
    """Keep the ``limit`` most urgent rebuilds; the rest are deferred to a later run.
    A measured recall shortfall comes first (largest first), then growth and bloat."""

    def urgency(d: ReindexDecision) -> float:
        if d.reason == "recall" and d.probe is not None and d.probe.recall is not None:
            return 100 + (1 - d.probe.recall)
        return max(d.growth or 0.0, 1 + d.bloat, 1 + (d.churn or 0.0))

    rebuilds = sorted((d for d in decisions if d.action == "rebuild"), key=urgency, reverse=True)
    return rebuilds[:limit]


async def vector_indexes(conn: asyncpg.Connection, caps: Capabilities) -> list[VectorIndex]:
    """Valid vector indexes in the project's schemas with their table's counters."""
    rows = await conn.fetch(
        Q.reindex_vector_indexes, list(PROJECT_SCHEMAS), caps.maintain_privilege
    )
    return [
        VectorIndex(
            name=f"{r['schema']}.{r['index']}",
            qualified=r["qualified"],
            table_name=r["table_name"],
            method=r["method"],
            pages=int(r["pages"]),
            live_rows=int(r["live_rows"]) or int(r["reltuples"]),
            dead_rows=int(r["dead_rows"]),
            inserted_total=int(r["inserted_total"]),
            deleted_total=int(r["deleted_total"]),
            column_type=r["column_type"] or "",
            m=_m_option(r["reloptions"]),
            lists=ivfflat.lists_option(r["reloptions"]),
            access=reindex_access(caps, has_maintain=r["has_maintain"], owns_table=r["owns_table"]),
        )
        for r in rows
    ]


async def build_records(conn: asyncpg.Connection) -> dict[str, int]:
    """``index_name -> rows_at_build`` from ``ops.index_builds``."""
    return {
        r["index_name"]: int(r["rows_at_build"]) for r in await conn.fetch(Q.reindex_build_records)
    }


async def record_build(
    conn: asyncpg.Connection,
    index: VectorIndex,
    rows: int,
    reason: str,
    duration_ms: int | None,
) -> None:
    """Remember the table size at this (re)build: the next growth check compares to it."""
    await conn.execute(
        Q.reindex_upsert_build, index.name, index.table_name, rows, reason, duration_ms
    )


async def rebuild(conn: asyncpg.Connection, decision: ReindexDecision) -> None:
    """``REINDEX INDEX CONCURRENTLY``, or for new IVFFlat lists a concurrent build beside
    it and a swap (:mod:`worker.maintenance.ivfflat`); ``conn`` outside a transaction."""
    index = decision.index
    if decision.lists is not None:
        bare = index.name.split(".", 1)[1]
        await ivfflat.recreate(conn, index.qualified, bare, decision.lists, index.table_name)
    else:
        await conn.execute(Q.reindex_rebuild.format(index=index.qualified))


async def invalid_indexes(conn: asyncpg.Connection) -> list[InvalidIndex]:
    """INVALID indexes in the project's schemas (leftovers of interrupted builds)."""
    rows = await conn.fetch(Q.reindex_invalid_indexes, list(PROJECT_SCHEMAS))
    return [
        InvalidIndex(
            name=r["name"],
            qualified=r["qualified"],
            table_name=r["table_name"],
            bytes=int(r["bytes"]),
            build_in_progress=bool(r["build_in_progress"]),
            owned=bool(r["owns_table"]),
        )
        for r in rows
    ]


async def drop_invalid(conn: asyncpg.Connection, index: InvalidIndex) -> None:
    """``DROP INDEX CONCURRENTLY``: does not block writes to the table."""
    await conn.execute(Q.reindex_drop_invalid.format(index=index.qualified))


def churn(
    index: VectorIndex, rows_at_build: int | None, then: tuple[int, int] | None
) -> float | None:
    """Rows both deleted and inserted since the build (the smaller count), as a share of
    the rows at the build; None when unknown (no baseline, counters reset)."""
    if rows_at_build is None or then is None:
        return None
    inserted, deleted = index.inserted_total - then[0], index.deleted_total - then[1]
    if inserted < 0 or deleted < 0:
        return None
    return min(inserted, deleted) / max(rows_at_build, 1)


def should_probe(index: VectorIndex, settings: Settings, min_rows: int) -> bool:
    """Probe only what a rebuild could follow: enabled, big enough, ours to rebuild."""
    return (
        settings.reindex_recall_target > 0 and index.live_rows >= min_rows and index.access.allowed
    )


async def plan(
    conn: asyncpg.Connection,
    settings: Settings,
    caps: Capabilities,
    bookkeeping: asyncpg.Connection | None = None,
) -> tuple[list[ReindexDecision], list[ReindexDecision]]:
    """Every vector index's decision, and the capped list of rebuilds to do now.
    ``bookkeeping`` reads the past runs (``ops.maintenance_runs``), ``conn`` the rest."""
    indexes = await vector_indexes(conn, caps)
    records = await build_records(conn)
    after = await recall.at_build(bookkeeping or conn)
    counters = await recall.counters_at_build(bookkeeping or conn)
    decisions = []
    for i in indexes:
        target = await ivfflat.target_lists(conn, i.live_rows) if i.method == "ivfflat" else None
        measured = None
        if should_probe(i, settings, MIN_ROWS_FOR_REBUILD):
            measured = await recall.measure(
                conn, i.name, i.live_rows, caps, PROBE_QUERIES, PROBE_TIMEOUT_MS
            )
        decisions.append(
            decide(
                i,
                records.get(i.name),
                settings,
                min_rows=MIN_ROWS_FOR_REBUILD,
                probe=measured,
                recall_after_build=after.get(i.name),
                churn=churn(i, records.get(i.name), counters.get(i.name)),
                lists_target=target,
            )
        )
    # Only indexes we may rebuild compete for the cap: one we may not would take the slot
    # every night and starve the others. The caller reports those as skipped.
    allowed = [d for d in decisions if d.index.access.allowed]
    return decisions, cap(allowed, settings.reindex_max_per_run)
