"""Text that may hold input, made safe to keep where it cannot be erased: the event store
(``worker.db.ledger.contract``) and the logs (``worker.core.log``).

Personal data must never reach either: an event can never be deleted, and a log line is
beyond any erasure's reach. The ledger row keeps the detail (erasable); these shapes keep
what an operator needs: our own wording, numbers, cap names, field names, our own ids.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from worker.core import payloads

# -- value shapes ---------------------------------------------------------------------------

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
