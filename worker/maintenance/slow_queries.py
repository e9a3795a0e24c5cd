"""Slow-query report from ``pg_stat_statements``, with regressions flagged.

The extension needs ``shared_preload_libraries = 'pg_stat_statements'`` (server
restart) and ``CREATE EXTENSION pg_stat_statements`` in this database; both are the
operator's call, so when it is unavailable the run goes on: :func:`resolve` says why
(``extension_missing``: not installed here, and whether the server has it at all;
``not_preloaded``: installed but its library is not loaded, known from
``shared_preload_libraries`` or from the scan's error; ``unsupported_version``: a view
without the columns we read), the report carries it as ``slow_query_source`` and one
warning is logged.

The view's columns differ by extension version (PostgreSQL 13 renamed ``mean_time``
to ``mean_exec_time``; 17 renamed ``blk_read_time`` to ``shared_blk_read_time`` and
added ``stats_since``), and a database upgraded without ``ALTER EXTENSION ... UPDATE``
keeps its old view, so the columns are chosen by name from the catalog
(:data:`COLUMNS`), not by server version.

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
or more is a regression. Where the view has ``stats_since`` (17+), an entry whose
counters started after the previous report was reset in between, whatever its totals
say, and its own mean is compared instead. Reading other roles' query text needs ``pg_read_all_stats``
(or superuser) for the maintenance connection's login role.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from worker.core.settings import Settings
from worker.db.queries import Q
from worker.maintenance.capabilities import Capabilities

log = structlog.get_logger(__name__)

QUERY_TEXT_LIMIT = 2_000

ENABLE_HINT = (
    "add pg_stat_statements to shared_preload_libraries (postgresql.conf, restart the "
    "server), then run CREATE EXTENSION pg_stat_statements; in this database"
)
INSTALL_HINT = (
    "install the server's contrib package (pg_stat_statements ships with PostgreSQL's "
    "contrib modules), then " + ENABLE_HINT
)
PRELOAD_HINT = (
    "add pg_stat_statements to shared_preload_libraries (postgresql.conf or ALTER SYSTEM) "
    "and restart the server; the extension is already installed in this database"
)

# The view column holding each figure, newest name first (see the module docstring).
# The only names ever formatted into slow_top_statements; an absent optional one is NULL.
COLUMNS: dict[str, tuple[str, ...]] = {
    "mean": ("mean_exec_time", "mean_time"),
    "total": ("total_exec_time", "total_time"),
    "read_time": ("shared_blk_read_time", "blk_read_time"),
    "stats_since": ("stats_since",),
}
REQUIRED = frozenset({"mean", "total"})
ABSENT = "NULL"


def choose_columns(available: Iterable[str]) -> dict[str, str] | None:
    """The column for each figure of :data:`COLUMNS`; None when a required one is missing."""
    names = set(available)
    chosen: dict[str, str] = {}
    for figure, candidates in COLUMNS.items():
        found = next((c for c in candidates if c in names), None)
        if found is None and figure in REQUIRED:
            return None
        chosen[figure] = found or ABSENT
    return chosen


@dataclass
class Source:
    """Can the report be made here (the report's ``slow_query_source``), and if not, why."""

    available: bool
    reason: str | None = None  # extension_missing | not_preloaded | unsupported_version
    explanation: str = ""
    hint: str = ""
    extension_version: str | None = None
    schema: str | None = None
    columns: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NotLoaded(RuntimeError):
    """The view answered "must be loaded via shared_preload_libraries"."""


def not_preloaded(caps: Capabilities) -> Source:
    return Source(
        False,
        "not_preloaded",
        f"pg_stat_statements {caps.pg_stat_statements_version} is installed in this database "
        "but its library is not loaded (not in shared_preload_libraries): it records nothing",
        PRELOAD_HINT,
        caps.pg_stat_statements_version,
        caps.pg_stat_statements_schema,
    )


def source(caps: Capabilities) -> Source:
    """What the capabilities already say, before reading the view."""
    if caps.pg_stat_statements_version is None:
        if caps.pg_stat_statements_available:
            why = "pg_stat_statements is not installed in this database"
            hint = ENABLE_HINT
        else:
            why = (
                f"this server (PostgreSQL {caps.server_version}) has no pg_stat_statements "
                "extension to install"
            )
            hint = INSTALL_HINT
        return Source(False, "extension_missing", why, hint)
    if caps.pg_stat_statements_preloaded is False:
        return not_preloaded(caps)
    return Source(
        True,
        extension_version=caps.pg_stat_statements_version,
        schema=caps.pg_stat_statements_schema,
    )


async def resolve(conn: asyncpg.Connection, caps: Capabilities) -> Source:
    """:func:`source`, with the view's columns chosen from the catalog."""
    found = source(caps)
    if not found.available:
        return found
    rows = await conn.fetch(Q.slow_statement_columns, found.schema)
    columns = choose_columns(r["attname"] for r in rows)
    if columns is None:
        return Source(
            False,
            "unsupported_version",
            f"the pg_stat_statements view (extension {found.extension_version}) has none of "
            f"{'/'.join(COLUMNS['mean'])} or {'/'.join(COLUMNS['total'])}",
            "run ALTER EXTENSION pg_stat_statements UPDATE; in this database",
            found.extension_version,
            found.schema,
        )
    found.columns = columns
    return found


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
    read_time_ms: float | None = None  # block reads (shared, 17+), with track_io_timing
    stats_since: datetime | None = None  # when this entry's counters started (17+)
    previous_mean_ms: float | None = None
    interval_mean_ms: float | None = None
    regression: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stats_since"] = None if self.stats_since is None else self.stats_since.isoformat()
        return data


@dataclass(frozen=True)
class _Previous:
    calls: int
    mean_ms: float
    total_ms: float
    captured_at: datetime | None = None


async def top_statements(
    conn: asyncpg.Connection, found: Source, settings: Settings
) -> list[SlowQuery]:
    """The slowest statements by mean time (see module docstring for the filters)."""
    quoted = await conn.fetchval(Q.quote_ident, found.schema)
    sql = Q.slow_top_statements.format(schema=quoted, **found.columns)
    try:
        rows = await conn.fetch(
            sql, settings.slow_query_min_mean_ms, settings.slow_query_top_n, QUERY_TEXT_LIMIT
        )
    except asyncpg.ObjectNotInPrerequisiteStateError as exc:
        if "shared_preload_libraries" not in str(exc):
            raise
        raise NotLoaded(str(exc)) from exc
    return [
        SlowQuery(
            queryid=r["queryid"],
            query=r["query"],
            calls=int(r["calls"]),
            mean_ms=float(r["mean_ms"]),
            total_ms=float(r["total_ms"]),
            rows=int(r["rows"]),
            hit_ratio=None if r["hit_ratio"] is None else float(r["hit_ratio"]),
            read_time_ms=None if r["read_time_ms"] is None else float(r["read_time_ms"]),
            stats_since=r["stats_since"],
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
        reset = (  # the entry's counters started after that report (stats_since, 17+)
            entry.stats_since is not None
            and before.captured_at is not None
            and entry.stats_since > before.captured_at
        )
        if reset:
            current = entry.mean_ms
        elif new_calls > 0 and entry.total_ms >= before.total_ms:
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
            captured_at=r["captured_at"],
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
    found: Source,
    run_id: UUID,
    settings: Settings,
    *,
    store_report: bool,
) -> list[SlowQuery]:
    """Collect, compare with the previous report, log each entry, store (unless dry run).
    Raises :class:`NotLoaded` when the library turns out not to be preloaded."""
    entries = await top_statements(maint, found, settings)
    ids = [e.queryid for e in entries if e.queryid is not None]
    previous = await previous_entries(record, ids, run_id)
    flag_regressions(entries, previous, settings.slow_query_regression_factor)
    for entry in entries:
        log.info("maintenance.slow_query", run_id=str(run_id), **entry.to_dict())
    if store_report:
        await store(record, run_id, entries)
    return entries
