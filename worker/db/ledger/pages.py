"""A page of jobs at a time: the same transitions as ``jobs.py``, in a fixed number of
statements however many jobs there are.

A connector's page (``receive_many``), a worker's burst of pickups (``start_many``) and a
group of communications written together (``claim_many``/``finish_many``) would
otherwise cost round trips and commits per job, on the event loop every job waits for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from worker.core.field_checks import jsonb_text
from worker.db.ledger.events import NewEvent, append_events
from worker.db.ledger.model import (
    CONTENT_STORED,
    FINISHED,
    JOB_NOOP,
    JOB_STARTED,
    STATUS_BY_EVENT,
    JobRef,
    Pickup,
    Receipt,
    Start,
    received_event,
)
from worker.db.queries import Q


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
                        received_event(
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


async def start_many(conn: asyncpg.Connection, starts: Sequence[Start]) -> list[Pickup | None]:
    """``receive_and_start`` for a page of deliveries, in one transaction and two statements
    (start the rows, append the events) however many there are: when a worker takes 200
    jobs off the queue at once, their pickups are one transaction, not 200.

    ``None``: the ledger has no row for that job yet (sent straight to Redis); the caller
    records it with ``receive_and_start``. Deliveries must have distinct job ids. A failed
    job whose payload retention dropped gets it back (a third statement, only then).
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
        restore: list[Start] = []
        for s in starts:
            row = rows.get(s.ref.job_id)
            if row is None:
                pickups.append(None)
                continue
            pickup = Pickup(row["status"], int(row["attempts"]), row["queued_at"], False)
            if not pickup.finished and row["payload_missing"]:
                restore.append(s)
            if pickup.finished:
                events.append(s.ref.event(JOB_NOOP, s.noop_key, reason="already " + pickup.status))
            else:
                this_attempt = replace(s.ref, attempt=pickup.attempt)
                events.append(this_attempt.event(JOB_STARTED, attempt=pickup.attempt))
            pickups.append(pickup)
        if restore:  # failed jobs run again after retention dropped their payloads
            await conn.execute(
                Q.ledger_restore_payloads,
                [s.ref.job_id for s in restore],
                [jsonb_text(s.payload) for s in restore],
            )
        await append_events(conn, events, locked=True)  # ledger_start_page locked them
    return pickups


async def claim_many(
    conn: asyncpg.Connection,
    refs: Sequence[JobRef],
    item_keys: Sequence[str],
    progress: Sequence[Sequence[NewEvent]],
) -> dict[int, str]:
    """``jobs.claim`` for a group: the items' locks (in hash order, before any row lock),
    then the rows'. Returns ``{index: reason}`` for the jobs another delivery finished
    first, each recorded as a no-op with its progress events. Item keys must be distinct.
    """
    await conn.fetchval(Q.lock_items_page, list(item_keys))
    status = {
        r["id"]: r["status"] for r in await conn.fetch(Q.ledger_lock_rows, [r.job_id for r in refs])
    }
    noops: dict[int, str] = {}
    events: list[NewEvent] = []
    for i, ref in enumerate(refs):
        if status.get(ref.job_id) in FINISHED:
            noops[i] = f"already {status[ref.job_id]}"
            events += [*progress[i], ref.event(JOB_NOOP, "noop:concurrent", reason=noops[i])]
    await append_events(conn, events)
    return noops


@dataclass(frozen=True)
class Finish:
    """One claimed job's end: its event type and result, the progress events before it,
    and (completed jobs) what its rows were, for ``content.stored``."""

    ref: JobRef
    event_type: str
    result: dict[str, Any]
    progress: Sequence[NewEvent] = ()
    written: Mapping[str, Any] | None = None

    def events(self) -> list[NewEvent]:
        stored = [] if self.written is None else [self.ref.event(CONTENT_STORED, **self.written)]
        return [*self.progress, *stored, self.ref.event(self.event_type, result=self.result)]


async def finish_many(conn: asyncpg.Connection, finishes: Sequence[Finish]) -> None:
    """``jobs.finish`` for claimed jobs: every row in one statement, every event in one
    more."""
    if not finishes:
        return
    await conn.execute(
        Q.ledger_finish_page,
        [f.ref.job_id for f in finishes],
        [STATUS_BY_EVENT[f.event_type] for f in finishes],
        [json.dumps(f.result) for f in finishes],
    )
    events = [e for f in finishes for e in f.events()]
    # ledger_finish_page took every job's event-stream lock.
    await append_events(conn, events, locked=True)
