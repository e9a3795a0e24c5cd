"""Rebuilding ledger rows from the event store: the ledger is a projection of the events,
and a test proves it (``tests/acceptance``) by comparing the two.

What the events determine: kind, source, content hash, status, attempts, error field, and
the error as the event contract words it (``contract.safe_reason``). The ledger's
``external_id``, ``last_error`` (as raised) and ``payload`` are detail the events never
hold (personal content; docs/events.md): the ledger row is erasable, the events are not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from uuid import UUID

from worker.db.ledger.model import (
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_RECEIVED,
    JOB_RETRYING,
    JOB_SKIPPED,
    JOB_STARTED,
    STATUS_BY_EVENT,
)


@dataclass
class ProjectedJob:
    """The ledger columns that the events determine."""

    kind: str | None = None
    source: str | None = None
    content_hash: str | None = None
    status: str | None = None
    attempts: int = 0
    error_field: str | None = None
    error: str | None = None  # the contract's wording of last_error: not a column
    extra: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> tuple[Any, ...]:
        """The ledger columns the events determine, in the table's order (as declared):
        kind, source, content_hash, status, attempts, error_field."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name not in _NOT_COLUMNS)


_NOT_COLUMNS = ("error", "extra")


def project(events: Iterable[Mapping[str, Any]]) -> dict[UUID, ProjectedJob]:
    """Rebuild ledger rows from events (ordered by aggregate version)."""
    jobs: dict[UUID, ProjectedJob] = {}
    for ev in events:
        job = jobs.setdefault(ev["aggregate_id"], ProjectedJob())
        data = ev["payload"]
        if isinstance(data, str):
            data = json.loads(data)
        kind = ev["event_type"]
        if kind == JOB_RECEIVED:
            job.kind = data.get("kind")
            job.source = data.get("source")
            job.content_hash = data.get("content_hash")
        elif kind == JOB_STARTED:
            job.attempts = max(job.attempts, int(data.get("attempt", job.attempts + 1)))
        if kind in (
            JOB_RETRYING,
            JOB_FAILED,
            JOB_COMPLETED,
            JOB_SKIPPED,
        ):  # ledger_finish sets both
            job.error = data.get("error")
            job.error_field = data.get("field")
        if kind in STATUS_BY_EVENT:
            job.status = STATUS_BY_EVENT[kind]
    return jobs
