"""The record stage's one owner: the ingestion ledger (``ops.ingestion_jobs``) and the
event store (``ops.events``) it is a projection of.

Every write to either table goes through this package (a unit test holds it): the write
paths, the job layer, the reconciler and maintenance call the functions below and never
run those statements themselves. Its modules: ``model`` (event names, records),
``events`` (appending to the event store), ``jobs`` (one job's transitions), ``pages``
(the same for many jobs in a few statements), ``projection`` (the ledger rebuilt from
the events), ``retention`` (finished jobs' payloads dropped by the nightly maintenance).
"""

from worker.db.ledger.events import NewEvent, append_events
from worker.db.ledger.jobs import (
    claim,
    complete,
    finish,
    forget_earlier,
    lock_unchanged,
    lock_unfinished,
    lost_candidates,
    name_retry_job,
    payload_of,
    receive_and_start,
    record_requeue,
    reject,
    skip,
    start,
    workspace_known,
)
from worker.db.ledger.model import (
    CONTENT_CHUNKED,
    CONTENT_DELETED,
    CONTENT_EMBEDDED,
    CONTENT_PULLED,
    CONTENT_STORED,
    CONTENT_WARNING,
    FINISHED,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_NOOP,
    JOB_RECEIVED,
    JOB_REQUEUED,
    JOB_RETRYING,
    JOB_SKIPPED,
    JOB_STARTED,
    MAX_REJECTED_BYTES,
    STATUS_BY_EVENT,
    JobRef,
    Pickup,
    Receipt,
    Start,
)
from worker.db.ledger.pages import Finish, claim_many, finish_many, receive_many, start_many
from worker.db.ledger.projection import ProjectedJob, project
from worker.db.ledger.retention import FIRST_ID, PrunedBatch, prunable_payloads, prune_payloads
from worker.db.ledger.syncs import SYNC_COMPLETED, SYNC_FAILED, record_sync_end

__all__ = [
    "SYNC_COMPLETED",
    "SYNC_FAILED",
    "record_sync_end",
    "CONTENT_CHUNKED",
    "CONTENT_EMBEDDED",
    "CONTENT_PULLED",
    "CONTENT_DELETED",
    "CONTENT_STORED",
    "CONTENT_WARNING",
    "FINISHED",
    "FIRST_ID",
    "Finish",
    "JOB_COMPLETED",
    "JOB_FAILED",
    "JOB_NOOP",
    "JOB_RECEIVED",
    "JOB_REQUEUED",
    "JOB_RETRYING",
    "JOB_SKIPPED",
    "JOB_STARTED",
    "MAX_REJECTED_BYTES",
    "STATUS_BY_EVENT",
    "JobRef",
    "NewEvent",
    "Pickup",
    "ProjectedJob",
    "PrunedBatch",
    "Receipt",
    "Start",
    "append_events",
    "claim",
    "claim_many",
    "complete",
    "finish",
    "forget_earlier",
    "finish_many",
    "lock_unchanged",
    "lock_unfinished",
    "lost_candidates",
    "name_retry_job",
    "payload_of",
    "project",
    "prunable_payloads",
    "prune_payloads",
    "receive_and_start",
    "receive_many",
    "record_requeue",
    "reject",
    "skip",
    "start",
    "start_many",
    "workspace_known",
]
