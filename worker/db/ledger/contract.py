"""What an ingestion event may hold: identifiers and counts, never personal content.

``ops.events`` is append-only: nothing written there can ever be erased. So an event of an
ingestion job holds ids (job, source row, workspace), kind, source name, content hash,
field names, cap names, counts, sizes, statuses and reasons that do not quote the input;
the detail (external id, the error as raised, the payload) stays in the ledger row
(``ops.ingestion_jobs``), which erasure deletes. ``docs/events.md`` lists every event
type and its keys (``EVENT_KEYS``; a test scans real events against it).

Every ingestion event passes through ``clean`` on its way into the store
(``events.append_events``), whoever built it: a key the contract does not know is dropped,
a string is kept only in the shape its key allows. That holds for events a future step
adds without reading this file: their counts pass, their text does not.
"""

from __future__ import annotations

import re
from typing import Any

from worker.core.redact import (
    HIDDEN,
    MAX_REASON_CHARS,
    digest,
    safe_arq_id,
    safe_field,
    safe_reason,
    safe_source,
)

__all__ = [
    "EVENT_KEYS",
    "HIDDEN",
    "MAX_REASON_CHARS",
    "METADATA_KEYS",
    "RESULT_KEYS",
    "clean",
    "clean_metadata",
    "digest",
    "safe_arq_id",
    "safe_field",
    "safe_reason",
    "safe_source",
]

_TOKEN = re.compile(r"[A-Za-z0-9_.:+-]{1,100}")

# -- the contract: event type -> the payload keys it may carry ----------------------------

_RESULT = "result"
EVENT_KEYS: dict[str, frozenset[str]] = {
    "job.received": frozenset({"kind", "source", "content_hash"}),
    "job.started": frozenset({"attempt"}),
    "content.pulled": frozenset({"format", "fetched_bytes", "chars"}),
    "content.chunked": frozenset({"chunks", "tokens"}),
    "content.embedded": frozenset({"model", "embedded", "reused", "tokens", "attachments"}),
    "content.warning": frozenset({"message", "attachment", "type", "status", "reason"}),
    "content.stored": frozenset({"source_id", "chunks", "contacts", "participants", "attachments"}),
    "job.completed": frozenset({_RESULT}),
    "job.noop": frozenset({"reason", "via"}),
    "job.skipped": frozenset({_RESULT}),
    "job.retrying": frozenset({_RESULT, "error", "field"}),
    "job.failed": frozenset({_RESULT, "error", "field"}),
    "job.requeued": frozenset({"reason", "status", "arq_job_id"}),
    "content.deleted": frozenset(
        {
            "found",
            "vectors",
            "attachments",
            "threads_deleted",
            "contacts_deleted",
            "ledger_rows_deleted",
        }
    ),
}
#: Keys of the ``result`` object of job.completed / skipped / retrying / failed.
RESULT_KEYS = frozenset(
    {
        "source_id",
        "chunks",
        "contacts",
        "participants",
        "attachments",
        "tokens",
        "embedded_chunks",
        "embedded_tokens",
        "attachment_tokens",
        "windows",
        "reason",
        # a deletion's (worker/db/delete.py): counts and flags
        "deleted",
        "found",
        "vectors",
        "threads_deleted",
        "contacts_deleted",
        "ledger_rows_deleted",
    }
)
#: Keys of every ingestion event's ``metadata``.
METADATA_KEYS = frozenset({"attempt", "arq_job_id"})

#: Keys whose values are identifying input whatever their shape: never kept.
_NEVER = frozenset(
    {"external_id", "subject", "filename", "url", "content_url", "address", "name", "title"}
)
_REASON_KEYS = frozenset({"reason", "error", "message"})
_TOKEN_KEYS = frozenset(
    {"kind", "content_hash", "via", "status", "format", "model", "type", "source_id"}
)


def _value(key: str, value: Any) -> tuple[bool, Any]:
    """(keep, value) for one key of an event payload, by the shape the key allows."""
    if key in _NEVER:
        return False, None
    if value is None or isinstance(value, bool | int | float):
        return True, value
    if isinstance(value, dict):
        keys = RESULT_KEYS if key == _RESULT else None
        return True, _clean_dict(value, keys)
    if not isinstance(value, str):
        return False, None
    if key in _REASON_KEYS:
        return True, safe_reason(value)
    if key == "field":
        return True, safe_field(value)
    if key == "source":
        return True, safe_source(value)
    if key == "arq_job_id":
        return True, safe_arq_id(value)
    if key in _TOKEN_KEYS and _TOKEN.fullmatch(value) and "@" not in value:
        return True, value
    return False, None


def _clean_dict(data: dict[str, Any], allowed: frozenset[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if allowed is not None and key not in allowed:
            continue
        keep, cleaned = _value(str(key), value)
        if keep:
            out[str(key)] = cleaned
    return out


def clean(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """An ingestion event's payload as the contract allows it (see the module doc). An
    event type the contract does not list keeps what the value rules allow (counts)."""
    return _clean_dict(payload, EVENT_KEYS.get(event_type))


def clean_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    return _clean_dict(metadata, METADATA_KEYS)
