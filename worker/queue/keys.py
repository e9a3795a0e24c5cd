"""Redis names this project uses, in one place (arq's own keys are arq.constants)."""

from __future__ import annotations

from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

from worker.core.payloads import LEDGER_PAYLOAD_KEY

JOB_KEY_PREFIX = job_key_prefix
IN_PROGRESS_KEY_PREFIX = in_progress_key_prefix
RESULT_KEY_PREFIX = result_key_prefix
RETRY_KEY_PREFIX = retry_key_prefix
# Set while a job handed off by arq (worker.queue.handoff) still runs: arq has no key for it then.
HANDED_OFF_KEY_PREFIX = "cos:handed-off:"
# Per queue: the handed-off jobs still running, scored by when their marker expires (ms),
# so ``cos-worker status`` can count them (a crashed worker's entries age out).
HANDED_OFF_SET_PREFIX = "cos:handed-off-jobs:"

# Job function names: the contract between connectors (worker.queue.client) and the worker.
INGEST = "ingest"
INGEST_PAGE = "ingest_page"  # the items of one connector page (client.enqueue_many)
# arq ids of page jobs start with this; their items' ledger rows name the page's id.
PAGE_JOB_PREFIX = "page:"


def is_page_job(arq_id: str | None) -> bool:
    """Whether ``arq_id`` names a page job (whose items share it)."""
    return bool(arq_id) and str(arq_id).startswith(PAGE_JOB_PREFIX)


# Per queue and worker: the worker's fleet record (worker.queue.fleet, cos-worker status).
FLEET_PREFIX = "cos:fleet:"
# Per account: the fleet's shared embedding budget (worker.embedding.budget).
BUDGET_PREFIX = "cos:budget:"

EMBED_PENDING = "embed_pending"
RECONCILE = "reconcile"

#: The one key of a job argument that names its ledger row instead of carrying the payload
#: (a large item: ``INLINE_PAYLOAD_MAX_BYTES``); the worker reads the payload from the row.
LEDGER_PAYLOAD = LEDGER_PAYLOAD_KEY
