"""One delivery of one item, as it moves through the stages.

What every stage needs to know about the item travels in a ``Job``: the payload and the
object for its kind, its ledger identity, the content hash, when it was queued (to
detect a newer stored version), its log context, its flow state and the progress events
that commit with its rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from worker.core.payloads import (
    CommunicationPayload,
    DeletionPayload,
    EmailPayload,
    MediaPayload,
    TranscriptPayload,
)
from worker.db import ledger
from worker.db.store import item_lock_key
from worker.ingest.document import document_info
from worker.ingest.flow import Flow
from worker.ingest.normalize import Pulled
from worker.text.chunking import Chunk

if TYPE_CHECKING:
    from worker.ingest.kinds import Kind

ItemPayload = (
    CommunicationPayload | TranscriptPayload | MediaPayload | EmailPayload | DeletionPayload
)


@dataclass
class Job:
    payload: ItemPayload
    kind: Kind
    ref: ledger.JobRef
    content_hash: str
    queued_at: datetime
    log: Any  # structlog's bound logger: job_id, workspace_id, kind, item, attempt
    flow: Flow
    started: float = field(default_factory=time.perf_counter)
    # Progress events (pulled, chunked, embedded), stamped when their step ended, appended
    # with the final transaction's events (three fewer transactions per item); if the item
    # fails, with its failure.
    progress: list[ledger.NewEvent] = field(default_factory=list)
    # A document's reading (type, status, reason, pages...): kept in its asset's metadata
    document: dict[str, Any] | None = None

    def become(self, payload: ItemPayload) -> None:
        """A raw e-mail, once parsed, is the communication it holds: from the chunk stage
        on, the stages see that (the ledger identity and the item lock do not change:
        they were the communication's from the start, ``payload.item_kind``)."""
        self.payload = payload

    def step(self, event_type: str, **data: Any) -> None:
        event = self.ref.event(event_type, **data)
        self.progress.append(replace(event, occurred_at=datetime.now(UTC)))

    def read(self, pulled: Pulled) -> str | None:
        """Take in what the fetch stage found: a raw message becomes its communication;
        each part left out is a ``content.warning``; a document's reading is kept for its
        asset. Returns why the item is skipped when it holds nothing to read."""
        if pulled.communication is not None:
            self.become(pulled.communication)
        for i, warning in enumerate(pulled.warnings):
            self.step(ledger.CONTENT_WARNING, step_key=f"{ledger.CONTENT_WARNING}:{i}", **warning)
        document = pulled.document
        if document is None:
            return None
        self.document = document_info(document)
        if document.status == "skipped":
            kind = "" if document.type == "other" else f"{document.type} "
            return f"{kind}document: {document.reason}"
        return None

    def chunked(self, pulled: Pulled, chunks: list[Chunk]) -> None:
        """Record the fetch and chunk steps of an item chunked at once."""
        self.step(
            ledger.CONTENT_PULLED,
            format=pulled.fmt,
            fetched_bytes=pulled.fetched_bytes,
            chars=pulled.size,
        )
        self.step(
            ledger.CONTENT_CHUNKED, chunks=len(chunks), tokens=sum(c.token_count for c in chunks)
        )

    @property
    def item_key(self) -> str:
        p = self.payload
        return item_lock_key(p.item_kind, p.workspace_id, p.source, p.external_id)

    def finished(self, result: dict[str, Any]) -> dict[str, Any]:
        """Log the outcome; what ``Pipeline.run`` returns."""
        status = result.pop("status", "done")
        if status in ("noop", "skipped"):
            self.log.info(f"job.{status}", reason=result.get("reason"))
        seconds = round(time.perf_counter() - self.started, 3)
        self.log.info("job.done", seconds=seconds, status=status, **result)
        return {"status": status, "job_id": str(self.ref.job_id), **result}


def outcome(status: str, **result: Any) -> dict[str, Any]:
    """A job's result as ``Pipeline.run`` returns it (``status``: done, noop or skipped)."""
    return {"status": status, **result}
