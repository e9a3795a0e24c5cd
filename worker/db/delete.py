"""The store stage of a deletion: an item deleted upstream leaves no rows behind.

One transaction, under the item's lock (``ledger.claim``, as every write of the item):
the item's own rows go (a message with its participants, attachment rows and asset links;
a transcript with its meeting, chunks and participants; a media asset with its chunks),
then what only it held: attachment documents no other message carries, its thread when it
was the last message (else the thread is recounted), contacts nothing else references and
nobody curated; and the item's finished ingest jobs recorded before the deletion (their
payloads hold its content). The deletion's own ledger row, ``done`` with ``{"deleted":
true}`` in its result, is the item's tombstone: an ingest recorded before it that runs
later is skipped as superseded (``store.newer_version_stored``); one recorded after it
creates the item again. Counts only go into the result and the ``content.deleted`` event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from worker.core.payloads import DeletionPayload
from worker.db import ledger
from worker.db.people import refresh_threads
from worker.db.queries import Q


@dataclass
class Deleted:
    """What one deletion removed: counts for the ledger's result and the event."""

    kind: str
    found: bool = False
    vectors: int = 0  # rows with a vector: a message's one, or its chunks
    attachments: int = 0
    threads_deleted: int = 0
    contacts_deleted: int = 0
    ledger_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "deleted": True,
            "found": self.found,
            "vectors": self.vectors,
            "attachments": self.attachments,
            "threads_deleted": self.threads_deleted,
            "contacts_deleted": self.contacts_deleted,
            "ledger_rows_deleted": self.ledger_rows,
        }


async def delete_item(
    conn: asyncpg.Connection, ref: ledger.JobRef, payload: DeletionPayload, queued_at: datetime
) -> Deleted:
    """Remove the item ``payload`` names; the caller holds its lock and records the job."""
    ws, source, ext = payload.workspace_id, payload.source, payload.external_id
    kind = payload.item_kind
    done = Deleted(kind)
    contacts: list[UUID] = []
    if kind == "communication":
        rows = await conn.fetch(Q.delete_communication, ws, source, ext)
        for row in rows:
            done.found = True
            done.vectors += 1  # a message is one vector
            contacts += row["contact_ids"]
            if row["asset_ids"]:
                gone = await conn.fetch(Q.delete_orphan_attachment_assets, ws, row["asset_ids"])
                done.attachments += len(gone)
            if row["thread_id"] is not None:
                if await conn.fetchval(Q.delete_thread_if_empty, ws, row["thread_id"]):
                    done.threads_deleted += 1
                else:
                    await refresh_threads(conn, {(ws, row["thread_id"]): None})
    elif kind == "transcript":
        for row in await conn.fetch(Q.delete_meeting, ws, source, ext):
            done.found = True
            done.vectors += row["chunks"]
            contacts += row["contact_ids"]
    else:
        for row in await conn.fetch(Q.delete_media_asset, ws, source, ext):
            done.found = True
            done.vectors += row["chunks"]
    if contacts:
        gone = await conn.fetch(Q.delete_unreferenced_contacts, ws, sorted(set(contacts)))
        done.contacts_deleted = len(gone)
    done.ledger_rows = await ledger.forget_earlier(conn, ref, source, ext, queued_at)
    return done
