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

import hashlib
import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from worker.core import payloads

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

# -- value shapes ---------------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z0-9_.:+-]{1,100}")
_SOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_UUID = r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"
_OWN_ARQ_ID = re.compile(rf"(?:(?:page:)?[0-9a-f]{{32}}|{_UUID})(?:~\d+)?")
_EXCEPTION = re.compile(r"([A-Z][A-Za-z0-9]*(?:\.[A-Z][A-Za-z0-9]*)*): ")
_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"|`[^`\n]*`")
_MEDIA_TYPE = re.compile(
    r"\(?(?:text|application|image|audio|video|multipart|message)/[a-z0-9.+-]+[),;:]*"
)
# An address, a URL or path, a host or file name, a query: a token holding any of these
_RISKY = re.compile(r"[@/\\<>=?&%#]|[A-Za-z]\.[A-Za-z]")
MAX_REASON_CHARS = 300
HIDDEN = "…"


def digest(value: str) -> str:
    """A value the contract does not keep, where an operator still needs to tell two apart
    (an arq id a connector chose): a short hash, not reversible in practice for ids."""
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:16]


def safe_reason(text: Any) -> str | None:
    """A reason as our code words it, without what it may quote of the input.

    ``Class: message`` (an exception rendered whole) keeps the class only; quoted parts
    become ``'…'`` (and an unbalanced quote cuts the rest); a word holding ``@``, ``/``,
    ``=``, ``?`` ... or a dotted name (address, URL, host, file name) becomes ``…``. Numbers,
    cap names, part paths and our wording stay: "exceeds 1000 bytes", "HTTP 404", "read 10
    of 30 pages (DOCUMENT_MAX_PAGES)", "part 1.2: left out (ValueError)".
    """
    if text is None:
        return None
    text = str(text)
    if (exc := _EXCEPTION.match(text)) is not None:
        return exc[1]
    text = _QUOTED.sub("\0", text)
    cut = min((i for q in "'\"`" if (i := text.find(q)) >= 0), default=-1)
    if cut >= 0:  # an unbalanced quote: what follows it may be the input
        text = text[:cut] + HIDDEN
    text = text.replace("\0", f"'{HIDDEN}'")
    words = [
        w if _MEDIA_TYPE.fullmatch(w) or not _RISKY.search(w) else HIDDEN for w in text.split()
    ]
    out = " ".join(words)
    return out if len(out) <= MAX_REASON_CHARS else out[: MAX_REASON_CHARS - 1] + HIDDEN


@lru_cache(maxsize=1)
def _field_names() -> frozenset[str]:
    """Every payload model's field names: what a field path may name (an unknown key in
    an object, say ``sender.<an address>``, is the input itself)."""
    names = {"payload", "content", "kind"}
    for value in vars(payloads).values():
        if isinstance(value, type) and issubclass(value, BaseModel):
            names.update(value.model_fields)
    return frozenset(names)


def safe_field(field: Any) -> str | None:
    """A field path with every part that is not a payload field name or an index as ``*``."""
    if field is None:
        return None
    known = _field_names()
    return ".".join(p if p in known or p.isdigit() else "*" for p in str(field).split("."))


def safe_source(source: Any) -> str | None:
    """A source name ("gmail", "google-calendar") as is; anything else (an account's
    address put in it) as its digest."""
    if source is None:
        return None
    text = str(source)
    return text if _SOURCE.fullmatch(text) else digest(text)


def safe_arq_id(arq_id: Any) -> str | None:
    """Our own arq ids (job uuid, ``page:<hex>``, ``<uuid>~<try>``) as they are; an id a
    connector chose (possibly a Message-ID) as its digest."""
    if arq_id is None:
        return None
    text = str(arq_id)
    return text if _OWN_ARQ_ID.fullmatch(text) else digest(text)


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
