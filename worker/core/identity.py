"""Deterministic identities of payloads: re-sending unchanged content yields the same job
id (arq de-duplicates it, the ledger turns it into a no-op), any change yields a new one."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from worker.core.payloads import AnyPayload

#: Namespace of :func:`job_id` (fixed forever: changing it changes every job id).
JOB_NAMESPACE = uuid.UUID("6f1c9a52-3d4e-5b8a-9c71-2e0d4b6a8f13")

#: Fields added after schema 1 shipped: left out of the hash while unset, so the job ids of
#: payloads that do not use them stay what they were.
_LATER_FIELDS = ("body_html", "content_type")


def _canonical(payload: BaseModel) -> bytes:
    data = payload.model_dump(mode="json", exclude={"schema_version"})
    for name in _LATER_FIELDS:
        if name in data and data[name] is None:
            del data[name]
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def content_hash(payload: BaseModel) -> str:
    """sha256 hex over canonical JSON of every field but ``schema_version``."""
    return hashlib.sha256(_canonical(payload)).hexdigest()


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
