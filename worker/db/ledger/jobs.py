"""One job's ledger transitions, each with its events in the caller's transaction.

Every status change of an ingestion job is an event in ``ops.events`` (aggregate = the job
id) written in the same transaction as the ledger row it projects to, so the ledger can
always be rebuilt from the events alone. Idempotency keys are derived from the job id, the
attempt and the step, so a re-run of the same step of the same attempt appends nothing
twice. The write paths (``worker.ingest.write``) call these around the rows they write
and never write the ledger themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from worker.core.field_checks import clean_text, jsonb_text
from worker.db.ledger.events import NewEvent, append_events
from worker.db.ledger.model import (
    CONTENT_STORED,
    FINISHED,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_NOOP,
    JOB_REQUEUED,
    JOB_SKIPPED,
    JOB_STARTED,
    MAX_REJECTED_BYTES,
    STATUS_BY_EVENT,
    JobRef,
    Pickup,
    Start,
    received_event,
)
from worker.db.queries import Q


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
    one event append. A failed job whose payload retention dropped gets it back here.

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
        if not pickup.finished and row.get("payload_missing"):
            # A failed job run again after retention dropped its payload: the reconciler
            # needs it back while the job is unfinished.
            await conn.execute(Q.ledger_restore_payloads, [ref.job_id], [jsonb_text(payload)])
        events: list[NewEvent] = []
        if pickup.created:
            events.append(
                received_event(
                    ref, source=source, external_id=external_id, content_hash=content_hash
                )
            )
        if pickup.finished:
            events.append(ref.event(JOB_NOOP, noop_key, reason="already " + pickup.status))
        else:
            this_attempt = replace(ref, attempt=pickup.attempt)
            events.append(this_attempt.event(JOB_STARTED, attempt=pickup.attempt))
        await append_events(conn, events, locked=True)  # the ledger statement locked it
    return pickup


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
        received = received_event(ref, source=source, external_id=external_id, content_hash=None)
        await append_events(
            conn,
            [
                received,
                ref.event(JOB_STARTED, attempt=ref.attempt),
                ref.event(JOB_FAILED, error=reason, field=field, result={}),
            ],
        )


async def claim(
    conn: asyncpg.Connection, ref: JobRef, item_key: str, progress: Sequence[NewEvent]
) -> str | None:
    """Open an item's final transaction: take the item's lock and the job's row lock.

    Returns None when this delivery may write; otherwise another delivery of the same job
    finished it first (its write stands), and this one is recorded as a no-op here, with
    its progress events; the reason is returned.
    """
    finished = await lock_unfinished(conn, ref, item_lock=item_key)
    if finished is None:
        return None
    reason = f"already {finished}"
    noop = ref.event(JOB_NOOP, "noop:concurrent", reason=reason)
    await append_events(conn, [*progress, noop])
    return reason


async def skip(
    conn: asyncpg.Connection, ref: JobRef, reason: str, progress: Sequence[NewEvent]
) -> None:
    """A claimed job that writes nothing (older than what is stored, or nothing to read
    in it): skipped with ``reason``, its rows untouched."""
    await finish(
        conn, ref, JOB_SKIPPED, result={"reason": reason}, extra_events=progress, locked=True
    )


async def complete(
    conn: asyncpg.Connection,
    ref: JobRef,
    written: Mapping[str, Any],
    result: Mapping[str, Any],
    progress: Sequence[NewEvent],
) -> None:
    """A claimed job's rows are written: ``content.stored`` (what was ``written``), its
    progress events and ``job.completed`` with ``result``, in the rows' transaction."""
    stored = ref.event(CONTENT_STORED, **written)
    await finish(
        conn, ref, JOB_COMPLETED, result=result, extra_events=[*progress, stored], locked=True
    )


async def name_retry_job(conn: asyncpg.Connection, job_id: UUID, arq_job_id: str) -> None:
    """The job's retry was enqueued under a new transport id: the row names it, so the
    reconciler finds the job alive."""
    await conn.execute(Q.ledger_set_arq_job_id, job_id, arq_job_id)


async def lost_candidates(
    conn: asyncpg.Connection, grace_s: float, limit: int
) -> list[asyncpg.Record]:
    """Unfinished rows untouched for ``grace_s`` (the reconciler checks their transport)."""
    rows: list[asyncpg.Record] = await conn.fetch(Q.reconcile_candidates, grace_s, limit)
    return rows


async def lock_unchanged(
    conn: asyncpg.Connection, job_id: UUID, updated_at: datetime
) -> asyncpg.Record | None:
    """Lock a row the reconciler read, if nobody moved it since (``updated_at``); its
    payload, or None."""
    row: asyncpg.Record | None = await conn.fetchrow(Q.reconcile_lock_unchanged, job_id, updated_at)
    return row


async def record_requeue(
    conn: asyncpg.Connection, ref: JobRef, step: str, status: str, arq_id: str, reason: str
) -> None:
    """Touch the row (the grace period starts over) and append ``job.requeued``."""
    await conn.execute(Q.reconcile_touch, ref.job_id, arq_id)
    event = ref.event(JOB_REQUEUED, step, reason=reason, status=status, arq_job_id=arq_id)
    await append_events(conn, [event])


async def workspace_known(conn: asyncpg.Connection, workspace_id: UUID) -> bool:
    """Whether a job may be recorded under this workspace (the ledger row's foreign key)."""
    return bool(await conn.fetchval(Q.workspace_exists, workspace_id))


async def start(conn: asyncpg.Connection, s: Start) -> Pickup:
    """``receive_and_start`` for one delivery as the receive stage describes it."""
    return await receive_and_start(
        conn,
        s.ref,
        source=s.source,
        external_id=s.external_id,
        content_hash=s.content_hash,
        payload=s.payload,
        noop_key=s.noop_key,
    )


async def forget_earlier(
    conn: asyncpg.Connection, ref: JobRef, source: str, external_id: str, before: datetime
) -> int:
    """A deleted item's finished ingest jobs recorded before its deletion ``ref`` (queued
    at ``before``) leave the ledger: their payloads hold its content, and while their
    rows stand the same content sent again would be a no-op. Returns how many."""
    rows = await conn.fetch(
        Q.delete_earlier_ledger_rows,
        ref.workspace_id,
        ref.kind,
        source,
        external_id,
        ref.job_id,
        before,
    )
    return len(rows)


async def payload_of(conn: asyncpg.Connection, job_id: UUID) -> str | None:
    """The job's payload as the ledger holds it (JSON text); None without a row or payload."""
    text: str | None = await conn.fetchval(Q.ledger_payload, job_id)
    return text
