"""Slow-query report from ``pg_stat_statements``, with regressions flagged.

The extension needs ``shared_preload_libraries = 'pg_stat_statements'`` (server
restart) and ``CREATE EXTENSION pg_stat_statements`` in this database; both are the
operator's call, so when it is missing we log one warning saying how to enable it
and the run goes on.

What is reported: statements of *this* database with a mean execution time of at
least ``slow_query_min_mean_ms``, the ``slow_query_top_n`` slowest by mean, with
calls, mean and total time, rows, shared-buffer hit ratio and the normalized text
(constants replaced by ``$n``) cut to ``QUERY_TEXT_LIMIT`` characters. Statements of
the maintenance run itself (ANALYZE, REINDEX, VACUUM, DROP INDEX) are left out:
they are slow by nature and reported as actions anyway.

Regressions: each statement is compared, by ``queryid``, with its latest entry in an
earlier (non dry-run) report. ``pg_stat_statements`` figures are cumulative since
the last reset, so a statement that got slower yesterday barely moves a mean taken
over months; when the counters were not reset in between we therefore compare the
mean *over the interval since that report* ((total - total_then) / (calls -
calls_then)) with the mean reported then. Growth by ``slow_query_regression_factor``
or more is a regression. Reading other roles' query text needs ``pg_read_all_stats``
(or superuser) for the maintenance connection's login role.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from worker.core.settings import Settings
from worker.db.queries import Q

log = structlog.get_logger(__name__)

QUERY_TEXT_LIMIT = 2_000

ENABLE_HINT = (
    "add pg_stat_statements to shared_preload_libraries (postgresql.conf, restart the "
    "server), then run CREATE EXTENSION pg_stat_statements; in this database"
)


@dataclass
class SlowQuery:
    """One reported statement; ``interval_mean_ms`` is the mean since the previous report."""

    queryid: int | None
    query: str
    calls: int
    mean_ms: float
    total_ms: float
    rows: int
    hit_ratio: float | None
    previous_mean_ms: float | None = None
    interval_mean_ms: float | None = None
    regression: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Previous:
    calls: int
    mean_ms: float
    total_ms: float


async def extension_schema(conn: asyncpg.Connection) -> str | None:
    """Schema of ``pg_stat_statements`` in this database, or None when not installed."""
    schema: str | None = await conn.fetchval(Q.slow_extension_schema)
    return schema


async def top_statements(
    conn: asyncpg.Connection, schema: str, settings: Settings
) -> list[SlowQuery]:
    """The slowest statements by mean time (see module docstring for the filters)."""
    quoted = await conn.fetchval(Q.quote_ident, schema)
    rows = await conn.fetch(
        Q.slow_top_statements.format(schema=quoted),
        settings.slow_query_min_mean_ms,
        settings.slow_query_top_n,
        QUERY_TEXT_LIMIT,
    )
    return [
        SlowQuery(
            queryid=r["queryid"],
            query=r["query"],
            calls=int(r["calls"]),
            mean_ms=float(r["mean_ms"]),
            total_ms=float(r["total_ms"]),
            rows=int(r["rows"]),
            hit_ratio=None if r["hit_ratio"] is None else float(r["hit_ratio"]),
        )
        for r in rows
    ]


def flag_regressions(
    entries: list[SlowQuery], previous: dict[int, _Previous], factor: float
) -> None:
    """Fill ``previous_mean_ms`` / ``interval_mean_ms`` / ``regression`` in place."""
    for entry in entries:
        before = previous.get(entry.queryid) if entry.queryid is not None else None
        if before is None or before.mean_ms <= 0:
            continue
        entry.previous_mean_ms = before.mean_ms
        new_calls = entry.calls - before.calls
        if new_calls > 0 and entry.total_ms >= before.total_ms:
            entry.interval_mean_ms = (entry.total_ms - before.total_ms) / new_calls
            current = entry.interval_mean_ms
        elif new_calls == 0:
            continue  # not executed since: nothing new to judge
        else:  # counters were reset in between: the cumulative mean is all we have
            current = entry.mean_ms
        entry.regression = current >= factor * before.mean_ms


async def previous_entries(
    conn: asyncpg.Connection, queryids: list[int], run_id: UUID
) -> dict[int, _Previous]:
    """Latest earlier report entry per ``queryid`` (dry runs excluded: never stored)."""
    if not queryids:
        return {}
    rows = await conn.fetch(Q.slow_previous_entries, queryids, run_id)
    return {
        int(r["queryid"]): _Previous(
            calls=int(r["calls"] or 0),
            mean_ms=float(r["mean_ms"] or 0.0),
            total_ms=float(r["total_ms"] or 0.0),
        )
        for r in rows
    }


async def store(conn: asyncpg.Connection, run_id: UUID, entries: list[SlowQuery]) -> None:
    """Keep the report with the run: it is the baseline for the next regression check."""
    await conn.executemany(
        Q.slow_insert_report,
        [
            (
                run_id,
                e.queryid,
                e.query,
                e.calls,
                e.mean_ms,
                e.total_ms,
                e.rows,
                e.hit_ratio,
                e.previous_mean_ms,
                e.regression,
            )
            for e in entries
        ],
    )


async def scan(
    maint: asyncpg.Connection,
    record: asyncpg.Connection,
    schema: str,
    run_id: UUID,
    settings: Settings,
    *,
    store_report: bool,
) -> list[SlowQuery]:
    """Collect, compare with the previous report, log each entry, store (unless dry run)."""
    entries = await top_statements(maint, schema, settings)
    ids = [e.queryid for e in entries if e.queryid is not None]
    previous = await previous_entries(record, ids, run_id)
    flag_regressions(entries, previous, settings.slow_query_regression_factor)
    for entry in entries:
        log.info("maintenance.slow_query", run_id=str(run_id), **entry.to_dict())
    if store_report:
        await store(record, run_id, entries)
    return entries
