"""What a maintenance pass did: its actions, its report (the CLI's ``--json``), and the
run row and events that record it (``ops.maintenance_runs``, aggregate ``maintenance_run``).

Apart from ``run.py`` (which decides and acts) so the record of a run reads on its own.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from worker.db.ledger import NewEvent, append_events
from worker.db.queries import Q
from worker.maintenance import slow_queries
from worker.maintenance.index_size import expected_pages
from worker.maintenance.reindex import ReindexDecision


@dataclass
class ActionRecord:
    """One thing the run did (or, in a dry run, would do), timed."""

    kind: str  # analyze | reindex | baseline | drop_invalid | ledger_retention | slow_queries
    target: str
    status: str = "done"  # done | planned (dry run) | failed | skipped
    reason: str | None = None
    duration_ms: int = 0
    started_at: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class MaintenanceReport:
    """Outcome of a run; ``to_dict()`` is JSON-ready (the CLI's ``--json``).

    To render it for a terminal: a header line (status, trigger, dry run, duration),
    one line per action (``kind target status reason duration_ms error``), the
    ``indexes`` table (why each vector index was or was not rebuilt), ``slow_queries``
    (mean_ms, calls, regression flag, query), then ``warnings``. Exit code: 0 for
    ``succeeded``/``skipped``, 1 for ``partial``/``failed``.

    ``server`` is what the run found the server able to do (version, MAINTAIN, the
    extensions; :mod:`worker.maintenance.capabilities`) and ``slow_query_source`` whether
    the slow-query report could be made and, if not, why and how to enable it: what an
    older or differently set-up server leaves out is said here, not failed on.
    """

    run_id: uuid.UUID | None
    status: str
    trigger: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    duration_ms: int = 0
    actions: list[ActionRecord] = field(default_factory=list)
    slow_queries: list[slow_queries.SlowQuery] = field(default_factory=list)
    indexes: list[dict[str, Any]] = field(default_factory=list)
    tables_considered: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    server: dict[str, Any] = field(default_factory=dict)
    slow_query_source: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Actions by ``kind_status``, plus slow-query totals and the ledger payloads the
        retention dropped (a dry run's count is in its ``planned`` action): the summary."""
        out: dict[str, int] = {"tables_considered": self.tables_considered}
        for a in self.actions:
            out[f"{a.kind}_{a.status}"] = out.get(f"{a.kind}_{a.status}", 0) + 1
        out["slow_queries"] = len(self.slow_queries)
        out["regressions"] = sum(1 for q in self.slow_queries if q.regression)
        out["ledger_payloads_pruned"] = sum(
            int(a.details.get("rows", 0)) for a in self.actions_of("ledger_retention", "done")
        )
        return out

    def actions_of(self, kind: str, status: str | None = None) -> list[ActionRecord]:
        """Actions of one kind (and status), e.g. ``actions_of("reindex", "done")``."""
        return [a for a in self.actions if a.kind == kind and status in (None, a.status)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": None if self.run_id is None else str(self.run_id),
            "status": self.status,
            "trigger": self.trigger,
            "dry_run": self.dry_run,
            "started_at": self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "duration_ms": self.duration_ms,
            "counts": self.counts(),
            "actions": [asdict(a) for a in self.actions],
            "indexes": self.indexes,
            "slow_queries": [q.to_dict() for q in self.slow_queries],
            "slow_query_source": self.slow_query_source,
            "warnings": self.warnings,
            "server": self.server,
            "error": self.error,
        }


class Recorder:
    """Writes the run row and its events (aggregate ``maintenance_run``)."""

    def __init__(self, conn: asyncpg.Connection, report: MaintenanceReport) -> None:
        self.conn = conn
        self.report = report
        self.run_id = uuid.uuid4()
        self._seq = 0

    async def _write(self, sql: str, args: tuple[Any, ...], event: str, payload: Any) -> None:
        self._seq += 1
        new = NewEvent(
            aggregate_id=self.run_id,
            aggregate_type="maintenance_run",
            event_type=event,
            idempotency_key=f"maintenance_run:{self.run_id}:{self._seq}",
            payload=payload,
        )
        async with self.conn.transaction():
            await self.conn.execute(sql, *args)
            await append_events(self.conn, [new])

    async def start(self, status: str, summary: dict[str, Any]) -> uuid.UUID:
        r = self.report
        payload = {"trigger": r.trigger, "dry_run": r.dry_run, **summary}
        event = "maintenance.skipped" if status == "skipped" else "maintenance.started"
        args = (self.run_id, status, r.trigger, r.dry_run, json.dumps(summary))
        await self._write(Q.maintenance_run_insert, args, event, payload)
        return self.run_id

    async def action(self, action: ActionRecord) -> None:
        data = asdict(action)
        await self._write(
            Q.maintenance_run_append_action,
            (self.run_id, json.dumps(data)),
            "maintenance.action",
            data,
        )

    async def finish(self) -> None:
        r = self.report
        summary = {
            "counts": r.counts(),
            "duration_ms": r.duration_ms,
            "indexes": r.indexes,
            "warnings": r.warnings,
            "slow_query_source": r.slow_query_source,
        }
        args = (self.run_id, r.status, json.dumps(summary), r.error)
        await self._write(
            Q.maintenance_run_finish, args, "maintenance.finished", {"status": r.status, **summary}
        )


def describe_index(decision: ReindexDecision, deferred: bool) -> dict[str, object]:
    """The decision as a report row (why each index was or was not rebuilt)."""
    return {
        "index": decision.index.name,
        "decision": "deferred_by_cap" if deferred else decision.action,
        "reason": decision.reason,
        "live_rows": decision.index.live_rows,
        "dead_rows": decision.index.dead_rows,
        "rows_at_build": decision.rows_at_build,
        "pages": decision.index.pages,
        "expected_pages": expected_pages(decision.index),
        "growth": None if decision.growth is None else round(decision.growth, 3),
        "bloat": round(decision.bloat, 3),
        "dead_ratio": round(decision.dead_ratio, 3),
        "inserted_total": decision.index.inserted_total,
        "deleted_total": decision.index.deleted_total,
        "churn": None if decision.churn is None else round(decision.churn, 3),
        "recall": None if decision.probe is None else decision.probe.recall,
        "recall_after_build": decision.recall_after_build,
        "probe": None if decision.probe is None else decision.probe.to_dict(),
        "why": decision.why,
        "access": "allowed" if decision.index.access.allowed else decision.index.access.reason,
    }
