"""One maintenance pass: drop invalid leftovers, ledger payload retention, ANALYZE,
REINDEX, slow-query report.

Called by the nightly arq cron job (``trigger="cron"``) and by ``cos-worker
maintenance [--dry-run] [--json] [--force-analyze]``; ``MaintenanceReport.to_dict()``
is the ``--json`` output. The policy is in ``docs/maintenance.md``.

**Privileges.** Maintenance statements run on a dedicated connection that keeps the
DSN's *login role* (``connect(..., as_role=False)``): ANALYZE/REINDEX need ownership
or the ``MAINTAIN`` privilege (PostgreSQL 17+, ``GRANT pg_maintain TO <login>``), and
full ``pg_stat_statements`` text needs ``pg_read_all_stats``, which the NOLOGIN
``service_role`` lacks. Objects we may not maintain are reported as skipped, with why.
The bookkeeping (run row, events, ``ops.index_builds``, slow-query reports) is written
on a second connection under ``settings.database_role``, like every worker write; so is
the ledger retention (:mod:`worker.maintenance.retention`): it writes the ledger, which
is the worker's to write, not a maintenance statement. It runs before ANALYZE, so the
rows it changed count toward this pass's statistics decision.

**Older servers.** The run first reads what the server can do
(:mod:`worker.maintenance.capabilities`: version, MAINTAIN, pg_stat_statements,
pgvector) and every phase adapts to it: ownership decides before PostgreSQL 17, the
slow-query view's columns are chosen from the catalog, and a missing or unloaded
pg_stat_statements skips the report with the reason (``slow_query_source``). None of
these makes a run ``partial`` or ``failed``; the report and the logs say what was left out.

**Single flight.** The dedicated connection holds ``pg_try_advisory_lock
(MAINTENANCE_LOCK_KEY)`` (``worker.db.locks``) for the pass; a pass that cannot get it logs
``maintenance.skipped``, records a ``skipped`` run and returns. A dead worker's
connection closes and releases the lock.

**Session settings**, on the dedicated connection only (never on the pool):
``maintenance_work_mem`` (an HNSW build that fits in memory is many times faster),
``max_parallel_maintenance_workers`` (parallel build, bounded so ingestion keeps CPU),
``lock_timeout`` (rather than queue behind a long transaction — and make others queue
behind us — the action fails, is recorded and retried next pass) and
``statement_timeout`` (bound on one rebuild), from the ``maintenance_*`` settings.

A failed action is recorded with its error and the pass goes on (status ``partial``).
``dry_run`` decides and reports but changes nothing (no ANALYZE/REINDEX/DROP, no
baseline or slow-query rows, no payload dropped: the retention only counts); only the run
row (``dry_run``) and its events are written.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import asyncpg
import structlog

from worker.core.settings import Settings
from worker.db.pool import connect
from worker.db.queries import Q
from worker.maintenance import analyze, capabilities, recall, reindex, retention, slow_queries
from worker.maintenance.capabilities import Access, Capabilities
from worker.maintenance.report import ActionRecord, MaintenanceReport, Recorder, describe_index
from worker.maintenance.slow_queries import Source as SlowQuerySource

log = structlog.get_logger(__name__)

ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
#: Actions whose work runs in a dry run too: it reads only, or honours ``dry_run`` itself.
DRY_RUN_WORK = ("slow_queries", "ledger_retention")


def session_settings(settings: Settings) -> dict[str, str]:
    """The GUCs set on the maintenance connection for the run (see module docstring)."""
    return {
        "maintenance_work_mem": settings.maintenance_work_mem,
        "max_parallel_maintenance_workers": str(settings.maintenance_parallel_workers),
        "lock_timeout": settings.maintenance_lock_timeout,
        "statement_timeout": settings.maintenance_statement_timeout,
    }


class _Run:
    """The phases of a run that holds the lock."""

    def __init__(
        self, settings: Settings, maint: asyncpg.Connection, rec: Recorder, caps: Capabilities
    ) -> None:
        self.settings = settings
        self.maint = maint
        self.rec = rec
        self.report = rec.report
        self.caps = caps
        self.denied: dict[str, list[str]] = {}  # why (in words) -> what it left out

    def deny(self, action: ActionRecord, access: Access) -> None:
        """Skip an action the login role may not do; the warnings summarize them."""
        action.status, action.reason = "skipped", access.reason
        action.details["why"] = access.why
        self.denied.setdefault(access.why or "", []).append(f"{action.kind} {action.target}")

    def summarize_denied(self) -> None:
        for why, what in self.denied.items():
            shown = ", ".join(what[:5]) + (f" and {len(what) - 5} more" if len(what) > 5 else "")
            self.report.warnings.append(f"skipped {len(what)} action(s) ({shown}): {why}")

    async def act(self, action: ActionRecord, work: Callable[[], Awaitable[Any]] | None) -> None:
        """Time ``work`` (not run in a dry run), record the outcome; never raises."""
        action.started_at = datetime.now(UTC).isoformat()
        begin = time.monotonic()
        if action.status == "done" and self.report.dry_run and action.kind not in DRY_RUN_WORK:
            action.status = "planned"
        elif action.status == "done" and work is not None:
            try:
                await work()
            except ERRORS as exc:
                action.status, action.error = "failed", f"{type(exc).__name__}: {exc}"
        action.duration_ms = round((time.monotonic() - begin) * 1000)
        self.report.actions.append(action)
        fields = {
            "target": action.target,
            "status": action.status,
            "reason": action.reason,
            "duration_ms": action.duration_ms,
            "error": action.error,
            **action.details,
        }
        if action.status == "failed":
            log.error(f"maintenance.{action.kind}", **fields)
        else:
            log.info(f"maintenance.{action.kind}", **fields)
        await self.rec.action(action)

    async def drop_invalid(self) -> None:
        for idx in await reindex.invalid_indexes(self.maint):
            action = ActionRecord(
                "drop_invalid",
                idx.name,
                reason=idx.leftover_kind,
                details={"table": idx.table_name, "bytes": idx.bytes},
            )
            if idx.build_in_progress:
                action.status, action.reason = "skipped", "build_in_progress"
            elif not idx.owned:
                self.deny(action, Access(False, "not_owner", capabilities.DROP_NEEDS_OWNER))
            await self.act(action, partial(reindex.drop_invalid, self.maint, idx))

    async def ledger_retention(self) -> None:
        """Drop finished jobs' payloads past ``LEDGER_PAYLOAD_RETENTION`` (a dry run
        counts them: status ``planned``); ``details`` hold the rows and bytes."""
        keep = self.settings.ledger_payload_retention
        action = ActionRecord(
            "ledger_retention",
            "ops.ingestion_jobs",
            reason="finished_payload_retention",
            details={"retention_s": keep.total_seconds()},
        )

        async def work() -> None:
            outcome = await retention.prune(self.rec.conn, keep, dry_run=self.report.dry_run)
            action.details.update(outcome.to_dict())
            if self.report.dry_run:
                action.status = "planned"

        await self.act(action, work)

    async def analyze(self, force: bool) -> None:
        decisions = await analyze.plan(self.maint, self.settings, self.caps, force=force)
        self.report.tables_considered = len(decisions)
        for d in decisions:
            if d.reason is None:
                continue
            s = d.stats
            action = ActionRecord(
                "analyze",
                s.name,
                reason=d.reason,
                details={
                    "modified_rows": s.modified_since_analyze,
                    "live_rows": s.live_rows,
                    "threshold": d.threshold,
                },
            )
            if not s.access.allowed:
                self.deny(action, s.access)
            await self.act(action, partial(analyze.analyze_table, self.maint, s))

    async def reindex(self) -> None:
        decisions, chosen = await reindex.plan(self.maint, self.settings, self.caps, self.rec.conn)
        denied = [d for d in decisions if d.action == "rebuild" and not d.index.access.allowed]
        for d in decisions:
            deferred = d.action == "rebuild" and d not in chosen and d not in denied
            self.report.indexes.append(describe_index(d, deferred))
            if d.action == "baseline":
                rows = d.index.live_rows
                await self.act(
                    ActionRecord(
                        "reindex_baseline",
                        d.index.name,
                        reason=d.reason,
                        details={"rows_at_build": rows},
                    ),
                    partial(reindex.record_build, self.rec.conn, d.index, rows, "baseline", None),
                )
        for d in chosen + denied:
            idx = d.index
            action = ActionRecord(
                "reindex",
                idx.name,
                reason=d.reason,
                details={
                    "table": idx.table_name,
                    "rows_before": d.rows_at_build,
                    "rows_now": idx.live_rows,
                    "growth": round(d.growth or 0.0, 3),
                    "bloat": round(d.bloat, 3),
                    "dead_ratio": round(d.dead_ratio, 3),
                    "pages_before": idx.pages,
                    "lists_before": idx.lists,
                    "lists_after": d.lists,
                    "recall_before": None if d.probe is None else d.probe.recall,
                    "policy": d.why,
                },
            )
            if not idx.access.allowed:
                self.deny(action, idx.access)

            async def work(d: reindex.ReindexDecision = d, action: ActionRecord = action) -> None:
                begin = time.monotonic()
                await reindex.rebuild(self.maint, d)
                ms = round((time.monotonic() - begin) * 1000)
                await reindex.record_build(self.rec.conn, d.index, d.index.live_rows, d.reason, ms)
                if d.probe is not None and d.probe.recall is not None:
                    # What the rebuild bought, and the next runs' yardstick (recall_at_build).
                    after = await recall.measure(
                        self.maint,
                        d.index.name,
                        d.index.live_rows,
                        self.caps,
                        reindex.PROBE_QUERIES,
                        reindex.PROBE_TIMEOUT_MS,
                    )
                    action.details["recall_after"] = after.recall

            await self.act(action, work)

    async def slow_queries(self) -> None:
        found = await slow_queries.resolve(self.maint, self.caps)
        if not found.available:
            await self.act(self.no_slow_queries(found), None)
            return
        self.report.slow_query_source = found.to_dict()
        action = ActionRecord(
            "slow_queries", "pg_stat_statements", details={"columns": found.columns}
        )

        async def work() -> None:
            try:
                self.report.slow_queries = await slow_queries.scan(
                    self.maint,
                    self.rec.conn,
                    found,
                    self.rec.run_id,
                    self.settings,
                    store_report=not self.report.dry_run,
                )
            except slow_queries.NotLoaded:
                # The role may not read shared_preload_libraries: the view told us instead.
                skipped = self.no_slow_queries(slow_queries.not_preloaded(self.caps))
                action.status, action.reason = skipped.status, skipped.reason
                action.details = skipped.details
                return
            action.details.update(
                entries=len(self.report.slow_queries),
                regressions=sum(q.regression for q in self.report.slow_queries),
            )

        # The scan is read-only, so it runs in a dry run too (only storing is skipped).
        await self.act(action, work)

    def no_slow_queries(self, found: SlowQuerySource) -> ActionRecord:
        """The report cannot be made here: say why and how to enable it (not a failure)."""
        self.report.slow_query_source = found.to_dict()
        self.report.warnings.append(f"no slow-query report: {found.explanation}; {found.hint}")
        event = (
            "maintenance.pg_stat_statements_missing"
            if found.reason == "extension_missing"
            else "maintenance.pg_stat_statements_unavailable"
        )
        log.warning(event, reason=found.reason, explanation=found.explanation, hint=found.hint)
        return ActionRecord(
            "slow_queries",
            "pg_stat_statements",
            status="skipped",
            reason=found.reason,
            details={"why": found.explanation, "hint": found.hint},
        )


async def run_maintenance(
    settings: Settings,
    dsn: str,
    *,
    dry_run: bool = False,
    force_analyze: bool = False,
    trigger: str = "manual",
) -> MaintenanceReport:
    """Run maintenance once, single flight across workers (see the module docstring)."""
    begin = time.monotonic()
    report = MaintenanceReport(None, "running", trigger, dry_run, datetime.now(UTC))
    maint = await connect(settings, dsn, as_role=False)
    try:
        record_conn = await connect(settings, dsn)
        try:
            rec = Recorder(record_conn, report)
            if not await maint.fetchval(Q.maintenance_try_lock):
                report.status = "skipped"
                reason = "another maintenance run holds the lock"
                report.run_id = await rec.start("skipped", {"reason": reason})
                report.finished_at = datetime.now(UTC)
                log.info(
                    "maintenance.skipped", run_id=str(report.run_id), trigger=trigger, reason=reason
                )
                return report
            try:
                await _locked_run(settings, maint, rec, force_analyze)
            finally:
                if not maint.is_closed():
                    await maint.fetchval(Q.maintenance_unlock)
            report.duration_ms = round((time.monotonic() - begin) * 1000)
            await rec.finish()
            report.finished_at = datetime.now(UTC)
            log.info(
                "maintenance.finished",
                run_id=str(report.run_id),
                status=report.status,
                dry_run=dry_run,
                duration_ms=report.duration_ms,
                **report.counts(),
            )
            return report
        finally:
            await record_conn.close()
    finally:
        await maint.close()


async def _locked_run(
    settings: Settings, maint: asyncpg.Connection, rec: Recorder, force_analyze: bool
) -> None:
    """Session settings, then the phases in order; an unexpected error means ``failed``."""
    report = rec.report
    gucs = session_settings(settings)
    for name, value in gucs.items():
        await maint.fetchval(Q.maintenance_set_config, name, value)
    caps = await capabilities.detect(maint)
    report.server = caps.to_dict()
    report.run_id = await rec.start(
        "running", {"session": gucs, "force_analyze": force_analyze, "server": report.server}
    )
    log.info(
        "maintenance.started",
        run_id=str(report.run_id),
        trigger=report.trigger,
        dry_run=report.dry_run,
        force_analyze=force_analyze,
        **gucs,
    )
    log.info("maintenance.capabilities", run_id=str(report.run_id), **report.server)
    run = _Run(settings, maint, rec, caps)
    try:
        await run.drop_invalid()
        await run.ledger_retention()
        await run.analyze(force_analyze)
        await run.reindex()
        await run.slow_queries()
        run.summarize_denied()
    except ERRORS as exc:
        report.status, report.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("maintenance.failed", run_id=str(report.run_id), error=report.error)
        return
    report.status = "partial" if any(a.status == "failed" for a in report.actions) else "succeeded"
