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

from worker.core.payloads import CommunicationPayload, MediaPayload, TranscriptPayload
from worker.db import ledger
from worker.db.store import item_lock_key
from worker.ingest.flow import Flow
from worker.ingest.normalize import Pulled
from worker.text.chunking import Chunk

if TYPE_CHECKING:
    from worker.ingest.kinds import Kind

ItemPayload = CommunicationPayload | TranscriptPayload | MediaPayload


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

    def step(self, event_type: str, **data: Any) -> None:
        event = self.ref.event(event_type, **data)
        self.progress.append(replace(event, occurred_at=datetime.now(UTC)))

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
