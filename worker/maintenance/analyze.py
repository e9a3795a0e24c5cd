"""Which tables need fresh planner statistics, and ANALYZE them.

Autovacuum's autoanalyze already runs, but its trigger (50 rows + 10 % of the table)
is tuned for the general case and runs whenever it likes; a nightly pass with our own
threshold makes sure the bulk-ingested tables have current statistics before the
morning's queries, and leaves a record. The choice comes from ``pg_stat_user_tables``:

* ``n_mod_since_analyze >= max(analyze_min_changed_rows,
  analyze_min_changed_fraction * n_live_tup)`` — enough rows changed, in absolute
  terms (so tiny tables are not re-analyzed for every few rows) and relative to the
  table (so big tables are not re-analyzed for a rounding error);
* or the table has rows but was never analyzed (manually or by autovacuum);
* ``force`` takes every table of the project's schemas.

Only plain ``ANALYZE``: it takes a SHARE UPDATE EXCLUSIVE lock, which does not block
reads or writes. Never ``VACUUM FULL`` (ACCESS EXCLUSIVE: it would stall ingestion).
Tables we may not maintain are reported, not attempted: ANALYZE would only print a
warning and skip them, silently. Who may is the server's rule, by version
(:func:`worker.maintenance.capabilities.analyze_access`): the ``MAINTAIN`` privilege from
PostgreSQL 17, ownership of the table before, the database's owner always.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from worker.core.settings import Settings
from worker.db.queries import Q
from worker.maintenance.capabilities import Access, Capabilities, analyze_access

PROJECT_SCHEMAS: tuple[str, ...] = ("core", "ops", "comms", "meetings", "media", "work", "intel")


@dataclass(frozen=True)
class TableStats:
    """One row of ``pg_stat_user_tables`` as far as the policy is concerned."""

    schema: str
    table: str
    qualified: str
    live_rows: int
    modified_since_analyze: int
    ever_analyzed: bool
    access: Access

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class AnalyzeDecision:
    """A table and why it will be analyzed (``reason`` is ``None`` when it will not)."""

    stats: TableStats
    reason: str | None
    threshold: int


def threshold_for(stats: TableStats, settings: Settings) -> int:
    """Modified rows needed before the table is due: absolute floor or table fraction."""
    fractional = int(settings.analyze_min_changed_fraction * stats.live_rows)
    return max(settings.analyze_min_changed_rows, fractional)


def decide(stats: TableStats, settings: Settings, *, force: bool = False) -> AnalyzeDecision:
    """The policy, as a pure function of the counters (unit-testable without a server)."""
    threshold = threshold_for(stats, settings)
    if force:
        return AnalyzeDecision(stats, "forced", threshold)
    if not stats.ever_analyzed and stats.live_rows > 0:
        return AnalyzeDecision(stats, "never_analyzed", threshold)
    if stats.modified_since_analyze > 0 and stats.modified_since_analyze >= threshold:
        return AnalyzeDecision(stats, "changed_rows", threshold)
    return AnalyzeDecision(stats, None, threshold)


async def table_stats(conn: asyncpg.Connection, caps: Capabilities) -> list[TableStats]:
    """Current counters for every table of the project's schemas, and who may analyze."""
    rows = await conn.fetch(Q.analyze_table_stats, list(PROJECT_SCHEMAS), caps.maintain_privilege)
    return [
        TableStats(
            schema=r["schemaname"],
            table=r["relname"],
            qualified=r["qualified"],
            live_rows=int(r["n_live_tup"] or 0),
            modified_since_analyze=int(r["n_mod_since_analyze"] or 0),
            ever_analyzed=r["last_analyzed"] is not None,
            access=analyze_access(
                caps,
                has_maintain=r["has_maintain"],
                owns_table=r["owns_table"],
                owns_database=r["owns_database"],
                schema_usage=r["schema_usage"],
            ),
        )
        for r in rows
    ]


async def plan(
    conn: asyncpg.Connection, settings: Settings, caps: Capabilities, *, force: bool = False
) -> list[AnalyzeDecision]:
    """Every table with its decision; callers act on those with a ``reason``."""
    return [decide(s, settings, force=force) for s in await table_stats(conn, caps)]


async def analyze_table(conn: asyncpg.Connection, stats: TableStats) -> None:
    """``ANALYZE`` one table (the name comes from the catalog, already quoted)."""
    await conn.execute(Q.analyze_table.format(table=stats.qualified))
