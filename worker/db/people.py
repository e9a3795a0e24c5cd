"""Rows that many items share: contacts, participants and thread counters.

Contacts are upserted by address in sorted order, so concurrent jobs naming the same
people take row locks in one order and cannot deadlock. The write paths touch these rows
last in an item's transaction (after the ledger is recorded), so jobs naming the same
people or thread wait on each other for the few statements before the commit only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from worker.core.payloads import CommunicationPayload, Person
from worker.db.queries import Q


def named_addresses(people: Sequence[Person]) -> dict[str, str | None]:
    """``{address: display name}`` of the people who have an address (first name wins)."""
    names: dict[str, str | None] = {}
    for person in people:
        if person.address and (person.address not in names or names[person.address] is None):
            names[person.address] = person.name
    return names


async def upsert_contacts(
    conn: asyncpg.Connection, workspace_id: UUID, people: Sequence[Person], seen_at: datetime | None
) -> dict[str, UUID]:
    """Upsert people as contacts; returns ``{address: contact_id}``.

    Contacts whose row already covers this sighting are read without a lock (see the
    query): on a mailbox the owner is on every message, and locking that row would
    queue every item's final transaction behind the one before it."""
    names = named_addresses(people)
    if not names:
        return {}
    addresses = sorted(names)
    at = seen_at or datetime.now(UTC)  # an undated sighting is seen now
    rows = await conn.fetch(
        Q.upsert_contacts,
        [workspace_id] * len(addresses),
        addresses,
        [names[a] for a in addresses],
        [at] * len(addresses),
        [at] * len(addresses),
    )
    return {r["primary_address"]: r["id"] for r in rows}


def comm_people(payload: CommunicationPayload) -> list[Person]:
    """Everyone a communication names: its recipients, then its sender."""
    people: list[Person] = list(payload.recipients)
    if payload.sender is not None:
        people.append(payload.sender)
    return people


def comm_parts(payload: CommunicationPayload) -> list[tuple[str | None, str, str | None]]:
    """A communication's participant rows, (address, role, name), the sender first."""
    parts: list[tuple[str | None, str, str | None]] = []
    if payload.sender is not None:
        parts.append((payload.sender.address, "from", payload.sender.name))
    return parts + [(r.address, r.role, r.name) for r in payload.recipients]


async def refresh_threads(
    conn: asyncpg.Connection, threads: dict[tuple[UUID, UUID], str | None]
) -> None:
    """Recount ``{(workspace, thread): subject}``, locked in id order first (lock_threads)."""
    if not threads:
        return
    keys = sorted(threads, key=lambda k: k[1])
    await conn.execute(Q.lock_threads, [k[1] for k in keys])
    await conn.execute(
        Q.refresh_threads, [k[0] for k in keys], [k[1] for k in keys], [threads[k] for k in keys]
    )


async def replace_meeting_participants(
    conn: asyncpg.Connection,
    ws: UUID,
    meeting_id: UUID,
    people: Sequence[Person],
    contacts: dict[str, UUID],
) -> int:
    await conn.execute(Q.delete_meeting_participants, ws, meeting_id)
    if not people:
        return 0
    await conn.execute(
        Q.insert_meeting_participants,
        ws,
        meeting_id,
        [contacts.get(p.address) for p in people],
        [p.name for p in people],
        [p.address for p in people],
    )
    return len(people)
