"""Contacts: a sighting the stored row already covers is read, not locked.

A founder's own address is on nearly every message of their mailbox. If every item's
final transaction locked that contact row, the items would commit one after another.
These tests hold the row locked from another connection and show which sightings go
through without waiting, and that the ones that do change the row still change it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from tests.support.harness import new_workspace
from worker.core.payloads import Person
from worker.db.people import upsert_contacts

JAN, FEB, MAR, APR = (datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3, 4))
OWNER = "owner@example.com"


async def _contact(conn: asyncpg.Connection, ws: uuid.UUID) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        "SELECT id, display_name, first_seen_at, last_seen_at, embedding_model "
        "FROM core.contacts WHERE workspace_id = $1 AND primary_address = $2",
        ws,
        OWNER,
    )
    return row


async def _sight(
    conn: asyncpg.Connection,
    ws: uuid.UUID,
    when: datetime | None,
    name: str | None = None,
    lock_timeout_ms: int = 300,
) -> dict[str, uuid.UUID]:
    """One item's sighting, in its own transaction, giving up on a row lock quickly."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{lock_timeout_ms}ms'")
        return await upsert_contacts(conn, ws, [Person(name=name, address=OWNER)], when)


@pytest.fixture
async def conns(migrated_dsn: str):
    holder = await asyncpg.connect(migrated_dsn)
    item = await asyncpg.connect(migrated_dsn)
    try:
        yield holder, item
    finally:
        await holder.close()
        await item.close()


async def test_covered_sightings_do_not_wait_for_a_locked_contact(migrated_dsn, conns) -> None:
    holder, item = conns
    ws = await new_workspace(migrated_dsn)
    first = await _sight(item, ws, JAN, "Owner")
    await _sight(item, ws, MAR)
    contact_id = first[OWNER]

    # Another item's transaction holds the row (as an upsert would until its commit).
    tx = holder.transaction()
    await tx.start()
    await holder.execute("SELECT 1 FROM core.contacts WHERE id = $1 FOR UPDATE", contact_id)
    try:
        # Inside Jan..Mar, no new name: read only, same id, no wait.
        assert await _sight(item, ws, FEB) == {OWNER: contact_id}
        assert await _sight(item, ws, FEB, "Owner") == {OWNER: contact_id}
        assert await _sight(item, ws, JAN) == {OWNER: contact_id}
        # Widening the dates or naming the person differently must update: it waits.
        for when, name in (
            (APR, None),
            (datetime(2025, 12, 1, tzinfo=UTC), None),
            (FEB, "Owner Renamed"),
            (None, None),
        ):
            with pytest.raises(asyncpg.LockNotAvailableError):
                await _sight(item, ws, when, name)
    finally:
        await tx.rollback()

    row = await _contact(item, ws)
    assert (row["first_seen_at"], row["last_seen_at"], row["display_name"]) == (JAN, MAR, "Owner")


async def test_sightings_that_change_the_contact_still_change_it(migrated_dsn, conns) -> None:
    _, item = conns
    ws = await new_workspace(migrated_dsn)
    contact_id = (await _sight(item, ws, FEB, None))[OWNER]
    await item.execute("UPDATE core.contacts SET embedding_model = 'm' WHERE id = $1", contact_id)
    assert await _sight(item, ws, APR) == {OWNER: contact_id}
    assert await _sight(item, ws, JAN) == {OWNER: contact_id}
    row = await _contact(item, ws)
    assert (row["first_seen_at"], row["last_seen_at"]) == (JAN, APR)
    assert row["display_name"] is None and row["embedding_model"] == "m"

    # A first name fills the row and invalidates the profile embedding.
    await _sight(item, ws, FEB, "Owner")
    row = await _contact(item, ws)
    assert row["display_name"] == "Owner" and row["embedding_model"] is None
    # An undated sighting is "seen now".
    before = datetime.now(UTC)
    await _sight(item, ws, None)
    assert (await _contact(item, ws))["last_seen_at"] >= before
    assert (
        await item.fetchval("SELECT count(*) FROM core.contacts WHERE workspace_id = $1", ws) == 1
    )
