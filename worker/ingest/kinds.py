"""What differs between payload kinds, in one object per kind.

The pipeline's stages are the same for every item; where a kind decides something (the
text its chunks start with, one vector or one per chunk, whether a large item may be
streamed, which write path and which rows), the stage asks the item's ``Kind`` instead of
testing the payload's type. A new kind is a new class here and a line in ``KINDS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar, Protocol

import asyncpg
import numpy as np

from worker.core.payloads import CommunicationPayload, MediaPayload, TranscriptPayload
from worker.db import ledger, store_stream
from worker.db import store as db_store
from worker.db.attachments import AttachmentRows, DocumentRows, write_attachments
from worker.db.store_group import CommWrite
from worker.ingest.document import document_info
from worker.ingest.embed import ItemEmbedder
from worker.ingest.job import ItemPayload, Job
from worker.ingest.normalize import Pulled, text_hash
from worker.text.chunking import Chunk


@dataclass
class ChunkedWrite:
    """A transcript or media item whose chunk vectors are ready: what its transaction needs."""

    job: Job
    fmt: str
    chunks: list[Chunk]
    vectors: np.ndarray
    model: str
    extra: dict[str, Any] = field(default_factory=dict)  # result fields (tokens, ...)

    @property
    def ref(self) -> ledger.JobRef:
        return self.job.ref

    @property
    def payload(self) -> ItemPayload:
        return self.job.payload

    @property
    def queued_at(self) -> datetime:
        return self.job.queued_at

    @property
    def progress(self) -> list[ledger.NewEvent]:
        return self.job.progress

    @property
    def item_key(self) -> str:
        return self.job.item_key


Ready = CommWrite | ChunkedWrite


class ItemPath(Protocol):
    async def write(self, ready: Ready) -> dict[str, Any]: ...


class GroupPath(Protocol):
    async def write(self, ready: CommWrite, *, first: bool = False) -> dict[str, Any]: ...


class Writers(Protocol):
    """The write paths (``worker.ingest.write``), as the kinds choose between them."""

    @property
    def items(self) -> ItemPath: ...
    @property
    def groups(self) -> GroupPath: ...


def _embedded(job: Job, chunks: list[Chunk], fresh: list[Chunk], model: str) -> dict[str, Any]:
    """Record the embed step; the counts the result reports."""
    fresh_tokens = sum(c.token_count for c in fresh)
    reused = len(chunks) - len(fresh)
    job.step(
        ledger.CONTENT_EMBEDDED,
        model=model,
        embedded=len(fresh),
        reused=reused,
        tokens=fresh_tokens,
    )
    tokens = sum(c.token_count for c in chunks)
    return {"tokens": tokens, "embedded_chunks": len(fresh), "embedded_tokens": fresh_tokens}


class Kind:
    """The decisions one payload kind makes; the base is what chunked kinds share."""

    name: ClassVar[str]
    streams: ClassVar[bool] = True  # a large item is embedded and written window by window

    def subject(self, payload: ItemPayload) -> str | None:
        """Text the item's chunks start with (a communication's subject)."""
        return None

    async def embed(
        self, embedder: ItemEmbedder, job: Job, pulled: Pulled, chunks: list[Chunk]
    ) -> Ready:
        """One vector per chunk, reusing the workspace's vectors for identical texts."""
        assert not isinstance(job.payload, CommunicationPayload)
        payload = job.payload
        vectors, fresh = await embedder.chunks(self.name, payload.workspace_id, chunks, job.flow)
        extra = _embedded(job, chunks, fresh, embedder.model)
        return ChunkedWrite(job, pulled.fmt, chunks, vectors, embedder.model, extra)

    async def store(self, writers: Writers, ready: Ready, live: bool = False) -> dict[str, Any]:
        """The write path: one transaction for the item."""
        return await writers.items.write(ready)

    async def write(self, conn: asyncpg.Connection, ready: Ready) -> db_store.Written:
        """The item's own rows."""
        raise NotImplementedError

    async def share(
        self, conn: asyncpg.Connection, payload: ItemPayload, written: db_store.Written
    ) -> None:
        """The rows the item shares with others, after the ledger is recorded."""

    async def open_stream(
        self, conn: asyncpg.Connection, job: Job, fmt: str, model: str
    ) -> store_stream.ChunkTarget:
        raise NotImplementedError(f"{self.name} items are not streamed")

    async def close_stream(
        self, conn: asyncpg.Connection, job: Job, fmt: str, target: store_stream.ChunkTarget
    ) -> db_store.Written:
        raise NotImplementedError(f"{self.name} items are not streamed")


class CommunicationKind(Kind):
    """One vector per message (its chunks' token-weighted mean), written in groups."""

    name = "communication"
    streams = False

    def subject(self, payload: ItemPayload) -> str | None:
        assert isinstance(payload, CommunicationPayload)
        return payload.subject

    async def embed(
        self, embedder: ItemEmbedder, job: Job, pulled: Pulled, chunks: list[Chunk]
    ) -> Ready:
        payload = job.payload
        assert isinstance(payload, CommunicationPayload)
        embedded_hash = text_hash(payload.subject, pulled.text)
        vector, fresh = await embedder.communication(payload, chunks, embedded_hash, job.flow)
        extra = _embedded(job, chunks, fresh, embedder.model)
        model = embedder.model if vector is not None else None
        # Stored as received (an HTML body stays HTML); chunked and embedded: pulled.text.
        body = pulled.received if pulled.received is not None else (pulled.text or "")
        return CommWrite(
            job.ref,
            payload,
            job.queued_at,
            body,
            embedded_hash,
            vector,
            model,
            chunks,
            job.progress,
            extra,
        )

    async def store(self, writers: Writers, ready: Ready, live: bool = False) -> dict[str, Any]:
        """Ready communications are written in groups: one response answers hundreds."""
        assert isinstance(ready, CommWrite)
        return await writers.groups.write(ready, first=live)

    async def write(self, conn: asyncpg.Connection, ready: Ready) -> db_store.Written:
        assert isinstance(ready, CommWrite)
        written = await db_store.write_communication(
            conn,
            ready.ref.job_id,
            ready.payload,
            ready.body,
            ready.content_hash,
            ready.vector,
            ready.model,
            ready.chunks,
        )
        if not ready.attachments:
            return written
        p = ready.payload
        attached = await write_attachments(
            conn,
            ready.ref.job_id,
            p.workspace_id,
            p.source,
            written.result.source_id,
            ready.attachments,
        )
        counts = {
            "rows": attached.attachments,
            "assets": attached.assets,
            "chunks": attached.chunks,
        }
        return replace(written, attached=counts)

    async def share(
        self, conn: asyncpg.Connection, payload: ItemPayload, written: db_store.Written
    ) -> None:
        assert isinstance(payload, CommunicationPayload)
        await db_store.share_communication(conn, payload, written)


class TranscriptKind(Kind):
    """A meeting's transcript: chunks keep speaker turns and times; participants shared."""

    name = "transcript"

    async def write(self, conn: asyncpg.Connection, ready: Ready) -> db_store.Written:
        assert isinstance(ready, ChunkedWrite) and isinstance(ready.payload, TranscriptPayload)
        return await db_store.write_transcript(
            conn,
            ready.ref.job_id,
            ready.payload,
            ready.job.content_hash,
            ready.fmt,
            ready.chunks,
            ready.vectors,
            ready.model,
        )

    async def share(
        self, conn: asyncpg.Connection, payload: ItemPayload, written: db_store.Written
    ) -> None:
        assert isinstance(payload, TranscriptPayload) and written.meeting_id is not None
        await db_store.share_transcript(conn, payload, written.meeting_id)

    async def open_stream(
        self, conn: asyncpg.Connection, job: Job, fmt: str, model: str
    ) -> store_stream.ChunkTarget:
        assert isinstance(job.payload, TranscriptPayload)
        return await store_stream.open_transcript(
            conn, job.ref.job_id, job.payload, job.content_hash, fmt, model
        )

    async def close_stream(
        self, conn: asyncpg.Connection, job: Job, fmt: str, target: store_stream.ChunkTarget
    ) -> db_store.Written:
        assert isinstance(job.payload, TranscriptPayload)
        return await store_stream.close_transcript(
            conn, job.ref.job_id, job.payload, job.content_hash, fmt, target
        )


class MediaKind(Kind):
    """A recording's transcript or extracted text; shares no rows with other items."""

    name = "media"

    async def write(self, conn: asyncpg.Connection, ready: Ready) -> db_store.Written:
        assert isinstance(ready, ChunkedWrite) and isinstance(ready.payload, MediaPayload)
        return await db_store.write_media(
            conn,
            ready.ref.job_id,
            ready.payload,
            ready.job.content_hash,
            ready.chunks,
            ready.vectors,
            ready.model,
            ready.job.document,
        )

    async def open_stream(
        self, conn: asyncpg.Connection, job: Job, fmt: str, model: str
    ) -> store_stream.ChunkTarget:
        assert isinstance(job.payload, MediaPayload)
        return await store_stream.open_media(
            conn, job.ref.job_id, job.payload, job.content_hash, model, job.document
        )

    async def close_stream(
        self, conn: asyncpg.Connection, job: Job, fmt: str, target: store_stream.ChunkTarget
    ) -> db_store.Written:
        return store_stream.close_media(target)


class EmailKind(CommunicationKind):
    """A raw message: parsed at the fetch stage into the communication it is (``Job.
    become``), which it then is in every way, plus its attachments: each document among
    them is embedded chunk by chunk (reusing the workspace's vectors: a file attached
    again down a thread costs no tokens) and written with the message, on the item path
    (a message with attachments is one transaction of its own, not part of a group)."""

    name = "email"

    async def embed(
        self, embedder: ItemEmbedder, job: Job, pulled: Pulled, chunks: list[Chunk]
    ) -> Ready:
        ready = await super().embed(embedder, job, pulled, chunks)
        assert isinstance(ready, CommWrite)
        rows: list[AttachmentRows] = []
        tokens = 0
        for a in pulled.attachments:
            document = None
            if a.document is not None and a.chunks:
                vectors, fresh = await embedder.chunks(
                    "media", job.payload.workspace_id, a.chunks, job.flow
                )
                tokens += sum(c.token_count for c in fresh)
                document = DocumentRows(
                    a.sha256,
                    a.filename,
                    a.document.mime_type,
                    {"document": document_info(a.document), "attachment": True},
                    a.chunks,
                    vectors,
                    embedder.model,
                )
            rows.append(AttachmentRows(a.filename, a.mime_type, a.size_bytes, document))
        ready.attachments = rows
        documents = sum(1 for r in rows if r.document is not None)
        if documents:
            job.step(
                ledger.CONTENT_EMBEDDED,
                step_key=f"{ledger.CONTENT_EMBEDDED}:attachments",
                model=embedder.model,
                attachments=documents,
                tokens=tokens,
            )
            ready.extra["attachment_tokens"] = tokens
        return ready

    async def store(self, writers: Writers, ready: Ready, live: bool = False) -> dict[str, Any]:
        assert isinstance(ready, CommWrite)
        if ready.attachments:
            return await writers.items.write(ready)
        return await writers.groups.write(ready, first=live)


class DeletionKind(Kind):
    """An item deleted upstream: nothing to fetch, chunk or embed; the pipeline hands it
    to ``worker.ingest.delete`` (its store and record stages)."""

    name = "deletion"
    streams = False


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (CommunicationKind(), TranscriptKind(), MediaKind(), EmailKind(), DeletionKind())
}
