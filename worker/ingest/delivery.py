"""What the transport tells the pipeline about a delivery, and what the pipeline tells it
back: retry later, or a failure that is (not) worth retrying.

Apart from the pipeline so the job layer (``worker.queue.jobs``, arq) and the pipeline share these
without the job layer reaching into the pipeline's stages.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from worker.core.payloads import PayloadError, decode_json_payload, job_id, parse_payload
from worker.ingest.fetch import FetchError
from worker.text.transcripts import TranscriptParseError

_JOB_NAMESPACE = uuid.UUID("8d3a4c1e-6f0b-5c52-9d3e-2a7f1c0b9e41")

TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # "cannot switch to state ...": a connection lost mid-use
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.QueryCanceledError,
    asyncpg.AdminShutdownError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


class RetryLater(Exception):
    """Ask the job layer to run this job again after ``delay_s`` seconds."""

    def __init__(self, delay_s: float, reason: str) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


@dataclass(frozen=True)
class Delivery:
    """What the transport knows about this delivery (arq's job id, try, enqueue time), and
    the two hooks it hands the run (kept by the run's ``Flow``)."""

    arq_job_id: str | None = None
    job_try: int = 1
    enqueue_time_ms: int = 0
    in_page: bool = False  # one item of a page job: the arq id is the page's, shared
    live: bool = False  # queued as live (worker.core.priority): ahead of bulk work
    # The announcement the job layer made to the batcher when the job started (``expect()``):
    # requests may linger for this run until its rows are queued. None: the run announces.
    arrival: Callable[[], None] | None = None
    # Told how many rows each embed call queued: the job layer's hand-off (worker.queue).
    rows_queued: Callable[[int], None] | None = None

    @property
    def own_arq_job_id(self) -> str | None:
        """The arq id that is this item's alone (None for an item of a page job)."""
        return None if self.in_page else self.arq_job_id


def ledger_id_for(arq_job_id: str | None, raw: Any) -> uuid.UUID:
    """Ledger id for a payload that could not be parsed: the arq id when it is a UUID."""
    if arq_job_id:
        try:
            return uuid.UUID(arq_job_id)
        except ValueError:
            return uuid.uuid5(_JOB_NAMESPACE, arq_job_id)
    try:  # by content: a deserialized job argument's repr is "…" (QuietPayload)
        text = json.dumps(raw, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(raw)
    return uuid.uuid5(_JOB_NAMESPACE, text[:100_000])


def pipeline_ledger_id(raw: Any, delivery: Delivery) -> uuid.UUID:
    """The ledger id a run of ``raw`` records under (as ``Pipeline.run`` derives it)."""
    try:
        return uuid.UUID(job_id(parse_payload(decode_json_payload(raw))))
    except PayloadError:
        return ledger_id_for(delivery.own_arq_job_id, raw)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, FetchError):
        return bool(getattr(exc, "transient", False))
    if isinstance(exc, (PayloadError, TranscriptParseError)):
        return False
    return isinstance(exc, TRANSIENT_DB_ERRORS) or exc.__class__.__module__.startswith(
        ("openai", "httpx", "worker.embedding")
    )
