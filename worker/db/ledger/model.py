"""The ledger's vocabulary: event names, the statuses they move a job to, and the
records the ledger's calls take and return.

Event names are defined here once; the status each one sets is what
``ops.ingestion_jobs`` holds, so the ledger can be rebuilt from the events
(``projection.project``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from worker.db.ledger.events import NewEvent

# Event types; the comment says how each one moves the ledger row.
JOB_RECEIVED = "job.received"  # status queued; carries kind/source/external_id/hash
JOB_STARTED = "job.started"  # status running; attempts = payload.attempt
CONTENT_PULLED = "content.pulled"  # no status change
CONTENT_CHUNKED = "content.chunked"  # no status change
CONTENT_EMBEDDED = "content.embedded"  # no status change
# no status change: part of the content was left out (a cap, a damaged or encrypted
# attachment, an undecodable charset); carries part numbers, types, counts, never content
CONTENT_WARNING = "content.warning"
CONTENT_STORED = "content.stored"  # no status change (same transaction as completed)
CONTENT_DELETED = "content.deleted"  # no status change: a deletion's counts (with completed)
JOB_COMPLETED = "job.completed"  # status done
JOB_NOOP = "job.noop"  # no status change: re-delivery of a finished job
JOB_SKIPPED = "job.skipped"  # status skipped: superseded, or nothing to read (reason)
JOB_RETRYING = "job.retrying"  # status queued, last_error
JOB_FAILED = "job.failed"  # status failed, last_error, error_field
JOB_REQUEUED = "job.requeued"  # no status change: the reconciler re-enqueued a lost job

STATUS_BY_EVENT = {
    JOB_RECEIVED: "queued",
    JOB_STARTED: "running",
    JOB_COMPLETED: "done",
    JOB_SKIPPED: "skipped",
    JOB_RETRYING: "queued",
    JOB_FAILED: "failed",
}


#: A rejected payload is kept for diagnosis up to this size; bigger ones are summarised.
MAX_REJECTED_BYTES = 256 * 1024
FINISHED = ("done", "skipped")


@dataclass(frozen=True)
class JobRef:
    """Identity of one delivery of a job: what events and log lines are keyed on."""

    job_id: UUID
    workspace_id: UUID | None
    kind: str | None
    attempt: int = 1
    arq_job_id: str | None = None

    def event(self, event_type: str, step_key: str | None = None, **payload: Any) -> NewEvent:
        key = f"{self.job_id}:{self.attempt}:{step_key or event_type}"
        return NewEvent(
            aggregate_id=self.job_id,
            aggregate_type="ingestion_job",
            workspace_id=self.workspace_id,
            event_type=event_type,
            idempotency_key=key,
            payload=payload,
            metadata={"attempt": self.attempt, "arq_job_id": self.arq_job_id},
        )


def received_event(
    ref: JobRef, *, source: str | None, external_id: str | None, content_hash: str | None
) -> NewEvent:
    """``job.received``: once per job whoever records it first (client or worker)."""
    event = ref.event(
        JOB_RECEIVED,
        kind=ref.kind,
        source=source,
        external_id=external_id,
        content_hash=content_hash,
    )
    return replace(event, idempotency_key=f"{ref.job_id}:received")


@dataclass(frozen=True)
class Receipt:
    """One job of a connector's page, as the ledger records it on arrival."""

    ref: JobRef
    source: str
    external_id: str
    content_hash: str
    payload: Mapping[str, Any]
    # ``payload`` as JSON text that jsonb accepts as is, when the caller has it: a validated
    # model's dump (its strings are cleaned, its metadata finite and shallow). Making an
    # untrusted payload storable walks every value (``jsonb_text``): ~0.17 ms per item.
    payload_json: str | None = None


@dataclass(frozen=True)
class Pickup:
    """What a worker's pickup of a delivery found: the job finished, or now running."""

    status: str
    attempt: int
    queued_at: Any
    created: bool

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class Start:
    """One delivery to pick up (``receive_and_start``'s arguments)."""

    ref: JobRef
    source: str
    external_id: str
    content_hash: str
    payload: Mapping[str, Any]
    noop_key: str
