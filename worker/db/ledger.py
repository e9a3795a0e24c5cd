"""The record stage: the ingestion ledger and the events it is a projection of.

Every status change of an ingestion job is an event in ``ops.events`` (aggregate =
the job id) written in the same transaction as the ledger row it projects to, so the
ledger can always be rebuilt from the events alone (``project``). Idempotency keys
are derived from the job id, the attempt and the step, so a re-run of the same step
of the same attempt appends nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from worker.core.field_checks import clean_text, jsonb_text
from worker.db.events import NewEvent, append_events
from worker.db.queries import Q

# Event types; the comment says how each one moves the ledger row.
JOB_RECEIVED = "job.received"  # status queued; carries kind/source/external_id/hash
JOB_STARTED = "job.started"  # status running; attempts = payload.attempt
CONTENT_PULLED = "content.pulled"  # no status change
CONTENT_CHUNKED = "content.chunked"  # no status change
CONTENT_EMBEDDED = "content.embedded"  # no status change
CONTENT_STORED = "content.stored"  # no status change (same transaction as completed)
JOB_COMPLETED = "job.completed"  # status done
JOB_NOOP = "job.noop"  # no status change: re-delivery of a finished job
JOB_SKIPPED = "job.skipped"  # status skipped: superseded by newer content
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


FINISHED = ("done", "skipped")


async def _insert(
    conn: asyncpg.Connection,
    ref: JobRef,
    status: str,
    *,
    source: str,
    external_id: str,
    content_hash: str,
    payload: Mapping[str, Any],
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        Q.ledger_insert,
        ref.job_id,
        ref.workspace_id,
        ref.kind,
        source,
        external_id,
        content_hash,
        status,
        1 if status == "running" else 0,
        jsonb_text(payload),
        ref.arq_job_id,
    )


def _received(ref: JobRef, *, source: str, external_id: str, content_hash: str) -> NewEvent:
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


async def receive_many(
    conn: asyncpg.Connection,
    receipts: Sequence[Receipt],
    *,
    via: str = "client",
    created: set[UUID] | None = None,
    holders: dict[UUID, str | None] | None = None,
) -> dict[UUID, str | None]:
    """Record a page of jobs in one transaction and return each job's status.

    A new job gets its row (queued) and ``job.received``; a job already finished
    (done/skipped) gets a ``job.noop`` (one per call: each re-send is its own fact); a job
    queued or running is left alone. ``None``: the job's workspace does not exist
    (nothing recorded). Three statements for the whole page, whatever its size (lock the
    known rows, insert the new ones, append the events): a connector re-sending an
    unchanged mailbox pays a few round trips per page, not per message, and no payload
    is sent for a job the ledger already holds. Receipts must have distinct job ids.
    ``created`` (if given) receives the ids of the rows this call inserted; ``holders``
    the arq job id that each row the ledger already held names.
    """
    by_id = {r.ref.job_id: r for r in receipts}
    if len(by_id) != len(receipts):
        raise ValueError("receive_many needs distinct job ids")
    statuses: dict[UUID, str | None] = {}
    events: list[NewEvent] = []
    async with conn.transaction():
        todo = list(by_id)
        while todo:
            for row in await conn.fetch(Q.ledger_lock_page, todo):
                statuses[row["id"]] = row["status"]
                if holders is not None:
                    holders[row["id"]] = row["arq_job_id"]
                if row["status"] in FINISHED:
                    ref = by_id[row["id"]].ref
                    key = f"noop:{via}:{uuid4().hex}"
                    events.append(ref.event(JOB_NOOP, key, reason="already finished", via=via))
            new = [by_id[i] for i in todo if i not in statuses]
            if not new:
                break
            known = {
                w["id"]
                for w in await conn.fetch(
                    Q.existing_workspaces, list({r.ref.workspace_id for r in new})
                )
            }
            for r in new:
                if r.ref.workspace_id not in known:
                    statuses[r.ref.job_id] = None
            new = [r for r in new if r.ref.workspace_id in known]
            inserted = {
                row["id"]
                for row in await conn.fetch(
                    Q.ledger_insert_page,
                    [r.ref.job_id for r in new],
                    [r.ref.workspace_id for r in new],
                    [r.ref.kind for r in new],
                    [r.source for r in new],
                    [r.external_id for r in new],
                    [r.content_hash for r in new],
                    [r.payload_json or jsonb_text(r.payload) for r in new],
                    [r.ref.arq_job_id for r in new],
                )
            }
            if created is not None:
                created.update(inserted)
            for r in new:
                if r.ref.job_id in inserted:
                    statuses[r.ref.job_id] = "queued"
                    events.append(
                        _received(
                            r.ref,
                            source=r.source,
                            external_id=r.external_id,
                            content_hash=r.content_hash,
                        )
                    )
            # Rows a concurrent transaction inserted since our lookup: lock and read them.
            todo = [r.ref.job_id for r in new if r.ref.job_id not in inserted]
        # ledger_lock_page / ledger_insert_page took the event-stream lock of each of them.
        await append_events(conn, events, locked=True)
    return statuses


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


async def receive_and_start(
    conn: asyncpg.Connection,
    ref: JobRef,
    *,
    source: str,
    external_id: str,
    content_hash: str,
    payload: Mapping[str, Any],
    noop_key: str,
) -> Pickup:
    """Start the job (recording it first if the ledger has no row yet) in one transaction,
    or record a no-op if it is already finished; the worker's first round trips for every
    delivery, so kept to one ledger statement (no payload: the client's row has it) and
    one event append.

    An unknown workspace surfaces as ``asyncpg.ForeignKeyViolationError`` (nothing
    recorded); the caller rejects the payload.
    """
    async with conn.transaction():
        created = False
        while True:
            row = await conn.fetchrow(Q.ledger_start, ref.job_id, ref.arq_job_id)
            if row is not None:
                break
            # A job sent straight to Redis: the first pickup records it, running.
            row = await _insert(
                conn,
                ref,
                "running",
                source=source,
                external_id=external_id,
                content_hash=content_hash,
                payload=payload,
            )
            if row is not None:
                created = True
                break
        pickup = Pickup(row["status"], int(row["attempts"]), row["queued_at"], created)
        events: list[NewEvent] = []
        if pickup.created:
            events.append(
                _received(ref, source=source, external_id=external_id, content_hash=content_hash)
            )
        if pickup.finished:
            events.append(ref.event(JOB_NOOP, noop_key, reason="already " + pickup.status))
        else:
            this_attempt = replace(ref, attempt=pickup.attempt)
            events.append(this_attempt.event(JOB_STARTED, attempt=pickup.attempt))
        await append_events(conn, events, locked=True)  # the ledger statement locked it
    return pickup


@dataclass(frozen=True)
class Start:
    """One delivery to pick up (``receive_and_start``'s arguments)."""

    ref: JobRef
    source: str
    external_id: str
    content_hash: str
    payload: Mapping[str, Any]
    noop_key: str


async def start_many(conn: asyncpg.Connection, starts: Sequence[Start]) -> list[Pickup | None]:
    """``receive_and_start`` for a page of deliveries, in one transaction and two statements
    (start the rows, append the events) however many there are: when a worker takes 200
    jobs off the queue at once, their pickups are one transaction, not 200.

    ``None``: the ledger has no row for that job yet (sent straight to Redis); the caller
    records it with ``receive_and_start``. Deliveries must have distinct job ids.
    """
    async with conn.transaction():
        rows = {
            r["id"]: r
            for r in await conn.fetch(
                Q.ledger_start_page,
                [s.ref.job_id for s in starts],
                [s.ref.arq_job_id for s in starts],
            )
        }
        pickups: list[Pickup | None] = []
        events: list[NewEvent] = []
        for s in starts:
            row = rows.get(s.ref.job_id)
            if row is None:
                pickups.append(None)
                continue
            pickup = Pickup(row["status"], int(row["attempts"]), row["queued_at"], False)
            if pickup.finished:
                events.append(s.ref.event(JOB_NOOP, s.noop_key, reason="already " + pickup.status))
            else:
                this_attempt = replace(s.ref, attempt=pickup.attempt)
                events.append(this_attempt.event(JOB_STARTED, attempt=pickup.attempt))
            pickups.append(pickup)
        await append_events(conn, events, locked=True)  # ledger_start_page locked them
    return pickups


async def lock_unfinished(
    conn: asyncpg.Connection, ref: JobRef, *, item_lock: str | None = None
) -> str | None:
    """Lock the job's ledger row until the transaction ends; returns its status if another
    delivery of the same job already finished it (done/skipped), else None.

    Two deliveries of one job can run at once (a connector that enqueues the same payload
    under two arq ids, a re-enqueue racing a slow worker): the first to finish wins and
    the other must record nothing but a no-op. ``item_lock``: also take the item's
    advisory lock (``store.item_lock_key``) in the same round trip, before the row lock.
    """
    if item_lock is not None:
        row = await conn.fetchrow(Q.ledger_lock_item_and_row, ref.job_id, item_lock)
    else:
        row = await conn.fetchrow(Q.ledger_lock_row, ref.job_id)
    return row["status"] if row is not None and row["status"] in FINISHED else None


async def finish(
    conn: asyncpg.Connection,
    ref: JobRef,
    event_type: str,
    *,
    result: Mapping[str, Any] | None = None,
    error: str | None = None,
    error_field: str | None = None,
    extra_events: Iterable[NewEvent] = (),
    locked: bool = False,
) -> bool:
    """Move the ledger row to the status ``event_type`` implies, with its event(s).

    Call inside the transaction that wrote the item's rows, so rows, events and ledger
    commit together. A row another delivery already finished is left alone and nothing
    is appended (returns False). ``locked``: this transaction already holds the row
    through ``lock_unfinished``, which found it unfinished (saves a round trip).
    """
    if not locked and await lock_unfinished(conn, ref) is not None:
        return False
    status = STATUS_BY_EVENT[event_type]
    await conn.execute(
        Q.ledger_finish, ref.job_id, status, json.dumps(result or {}), error, error_field
    )
    payload: dict[str, Any] = {"result": dict(result or {})}
    if error is not None:
        payload.update(error=error, field=error_field)
    events = [*extra_events, ref.event(event_type, **payload)]
    # ledger_finish took the job's event-stream lock; other aggregates' events lock here.
    await append_events(conn, events, locked=all(e.aggregate_id == ref.job_id for e in events))
    return True


async def reject(
    conn: asyncpg.Connection,
    ref: JobRef,
    *,
    field: str,
    reason: str,
    raw: Mapping[str, Any] | None,
    source: str | None = None,
    external_id: str | None = None,
) -> None:
    """Record an invalid payload as a failed job: ledger row plus events, one transaction."""
    # Straight from an invalid payload: text columns cannot hold what jsonb cannot either.
    source, external_id = (
        clean_text(v)[:1000] if isinstance(v, str) else None for v in (source, external_id)
    )
    field, reason = clean_text(field)[:1000], clean_text(reason)[:2000]
    async with conn.transaction():
        await conn.execute(
            Q.ledger_reject,
            ref.job_id,
            ref.workspace_id,
            ref.kind,
            source,
            external_id,
            reason,
            field,
            jsonb_text(raw, max_bytes=MAX_REJECTED_BYTES) if raw is not None else None,
            ref.arq_job_id,
            ref.attempt,
        )
        received = replace(
            ref.event(
                JOB_RECEIVED,
                kind=ref.kind,
                source=source,
                external_id=external_id,
                content_hash=None,
            ),
            idempotency_key=f"{ref.job_id}:received",
        )
        await append_events(
            conn,
            [
                received,
                ref.event(JOB_STARTED, attempt=ref.attempt),
                ref.event(JOB_FAILED, error=reason, field=field, result={}),
            ],
        )


@dataclass
class ProjectedJob:
    """The ledger columns that the events determine."""

    kind: str | None = None
    source: str | None = None
    external_id: str | None = None
    content_hash: str | None = None
    status: str | None = None
    attempts: int = 0
    last_error: str | None = None
    error_field: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


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
            job.external_id = data.get("external_id")
            job.content_hash = data.get("content_hash")
        elif kind == JOB_STARTED:
            job.attempts = max(job.attempts, int(data.get("attempt", job.attempts + 1)))
        if kind in (
            JOB_RETRYING,
            JOB_FAILED,
            JOB_COMPLETED,
            JOB_SKIPPED,
        ):  # ledger_finish sets both
            job.last_error = data.get("error")
            job.error_field = data.get("field")
        if kind in STATUS_BY_EVENT:
            job.status = STATUS_BY_EVENT[kind]
    return jobs
