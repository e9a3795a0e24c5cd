"""Deterministic identities of payloads: re-sending unchanged content yields the same job
id (arq de-duplicates it, the ledger turns it into a no-op), any change yields a new one."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from json.encoder import encode_basestring as _escape
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from worker.core.payloads import AnyPayload

#: Namespace of :func:`job_id` (fixed forever: changing it changes every job id).
JOB_NAMESPACE = uuid.UUID("6f1c9a52-3d4e-5b8a-9c71-2e0d4b6a8f13")

#: Fields added after schema 1 shipped: left out of the hash while unset, so the job ids of
#: payloads that do not use them stay what they were.
_LATER_FIELDS = ("body_html", "content_type")


#: Characters of a string encoded and hashed at a time (see :func:`_feed`).
_SLICE_CHARS = 1 << 20


def _canonical_data(payload: BaseModel) -> Any:
    data = payload.model_dump(mode="json", exclude={"schema_version"})
    for name in _LATER_FIELDS:
        if name in data and data[name] is None:
            del data[name]
    return data


def _canonical(payload: BaseModel) -> bytes:
    """The canonical JSON, whole: what :func:`content_hash` hashes (kept for reference
    and the tests that prove the streamed hash equal to it)."""
    data = _canonical_data(payload)
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _feed(update: Callable[[bytes], object], value: Any) -> None:
    """Feed ``value`` as ``json.dumps(sort_keys=True, ensure_ascii=False,
    separators=(",", ":"))`` would write it, without ever holding it whole.

    Why: a payload may carry 20 MB of inline text; dumping it whole and encoding that
    cost two more copies of it (40 MB at once, measured) in a worker whose memory is
    budgeted. JSON string escaping is per character, so a long string is escaped and
    encoded a slice at a time; everything else is small and goes through ``json``."""
    if isinstance(value, str):
        if len(value) <= _SLICE_CHARS:
            update(_escape(value).encode())
            return
        update(b'"')
        for start in range(0, len(value), _SLICE_CHARS):
            update(_escape(value[start : start + _SLICE_CHARS])[1:-1].encode())
        update(b'"')
    elif isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):  # json's key coercion: rare, small
            update(
                json.dumps(
                    value, sort_keys=True, ensure_ascii=False, separators=(",", ":")
                ).encode()
            )
            return
        update(b"{")
        for i, key in enumerate(sorted(value)):
            update(b"," if i else b"")
            update(_escape(key).encode() + b":")
            _feed(update, value[key])
        update(b"}")
    elif isinstance(value, list | tuple):
        update(b"[")
        for i, item in enumerate(value):
            update(b"," if i else b"")
            _feed(update, item)
        update(b"]")
    else:
        update(json.dumps(value, ensure_ascii=False).encode())


def content_hash(payload: BaseModel) -> str:
    """sha256 hex over canonical JSON of every field but ``schema_version``."""
    digest = hashlib.sha256()
    _feed(digest.update, _canonical_data(payload))
    return digest.hexdigest()


def job_id_for(
    workspace_id: uuid.UUID | str, kind: str, source: str, external_id: str, content_hash: str
) -> str:
    """Deterministic job id: same content from the same source = same id (arq dedupes)."""
    name = f"{workspace_id}|{kind}|{source}|{external_id}|{content_hash}"
    return str(uuid.uuid5(JOB_NAMESPACE, name))


def job_id(payload: AnyPayload, chash: str | None = None) -> str:
    """:func:`job_id_for` of a validated payload; ``chash``: its :func:`content_hash`, if
    the caller has it already (hashing walks the whole payload)."""
    return job_id_for(
        payload.workspace_id,
        payload.kind,
        payload.source,
        payload.external_id,
        chash if chash is not None else content_hash(payload),
    )
