"""What every payload field is checked for, before and after pydantic's own checks.

Payloads come from other services, so every string is cleaned (NUL bytes stripped: PostgreSQL
``text``/``jsonb`` cannot store U+0000; lone UTF-16 surrogates become U+FFFD) and sizes are
capped so one message cannot exhaust a worker. The annotated types below carry these checks
into the models of ``worker.core.payloads``; ``clean_text`` is also used wherever text reaches the
database by another path (the ledger's error fields, the chunker), and ``jsonb_text`` makes
any value a ``jsonb`` column can store (the ledger's copy of a payload, even a rejected one).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError

MAX_ID_CHARS = 512
MAX_URL_CHARS = 4096
MAX_METADATA_DEPTH = 16
#: Inline text cap (``body``, ``text``, all segment texts together): 20 million characters,
#: about 20 MB of mostly-ASCII text. Bigger content must come by ``content_url``, which is
#: fetched with its own byte cap (``fetch_max_bytes``).
MAX_TEXT_CHARS = 20_000_000

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """Strip NUL bytes and replace lone surrogates with U+FFFD (valid surrogate pairs that
    were left split in a Python string are joined into their real character)."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if _SURROGATE.search(value):
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def pre_clean(value: Any) -> Any:
    """Before pydantic's own str check, which rejects lone surrogates outright."""
    return clean_text(value) if isinstance(value, str) else value


def check_size(value: str) -> str:
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"is longer than {MAX_TEXT_CHARS} characters; send it by content_url")
    return value


def check_id(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise ValueError(f"is longer than {MAX_ID_CHARS} characters")
    return value


def check_url(value: str) -> str:
    if len(value) > MAX_URL_CHARS:
        raise ValueError(f"is longer than {MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 32 for c in value):
        raise ValueError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http(s) URL")
    if not host:
        raise ValueError("must include a host")
    return value


def to_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; all are normalised to UTC for stable hashing."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def media_type(value: Any) -> Any:
    """``text/html; charset=utf-8`` -> ``text/html`` (lower-cased, parameters dropped: the
    body arrives decoded); anything but text/plain or text/html is refused."""
    if not isinstance(value, str):
        return value  # pydantic reports the type error
    mime = value.split(";", 1)[0].strip().lower()
    if mime not in BODY_MEDIA_TYPES:
        shown = mime[:64]
        raise ValueError(f"must be one of {', '.join(BODY_MEDIA_TYPES)} (got {shown!r})")
    return mime


BODY_MEDIA_TYPES = ("text/plain", "text/html")

Text = Annotated[str, BeforeValidator(pre_clean)]
LongText = Annotated[str, BeforeValidator(pre_clean), AfterValidator(check_size)]
Identifier = Annotated[str, BeforeValidator(pre_clean), AfterValidator(check_id)]
ShortText = Annotated[str, BeforeValidator(pre_clean), Field(max_length=MAX_ID_CHARS)]
HttpUrl = Annotated[str, BeforeValidator(pre_clean), AfterValidator(check_url)]
UtcDatetime = Annotated[datetime, AfterValidator(to_utc)]
ContentFormat = Literal["vtt", "srt", "plain"]
BodyMediaType = Annotated[str, BeforeValidator(pre_clean), BeforeValidator(media_type)]


def json_depth(value: Any) -> int:
    """Container nesting depth, computed iteratively (no RecursionError on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_METADATA_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def clean_json(value: Any) -> Any:
    """Clean every string (keys too) of a JSON value whose depth is already bounded."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("keys must be strings")
            out[clean_text(key)] = clean_json(item)
        return out
    if isinstance(value, list | tuple):
        return [clean_json(item) for item in value]
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must not contain NaN or infinite numbers (not valid JSON)")
        return value
    raise ValueError(f"must contain only JSON values (found {type(value).__name__})")


_MAX_JSON_DEPTH = 64  # what a ledger record of a payload keeps of its nesting


def _jsonb_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with what PostgreSQL ``jsonb`` refuses made storable: U+0000 is stripped,
    lone surrogates become U+FFFD, NaN/Infinity become strings, nesting is cut off."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (dict, list, tuple)) and depth >= _MAX_JSON_DEPTH:
        return "[nested too deep]"
    if isinstance(value, dict):
        return {clean_text(str(k)): _jsonb_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonb_safe(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return clean_text(str(value))


def jsonb_text(value: Any, *, max_bytes: int | None = None) -> str:
    """JSON text that a ``jsonb`` column accepts, whatever a connector sent.

    Payloads arrive untrusted (a NUL in a subject, a lone surrogate, NaN, 10 000 levels of
    nesting); without this the ledger write itself fails and the job is never recorded.
    """
    text = json.dumps(_jsonb_safe(value), default=str, allow_nan=False)
    if max_bytes is not None and len(text) > max_bytes:
        keys = sorted(map(str, value))[:50] if isinstance(value, dict) else []
        text = json.dumps({"truncated": True, "bytes": len(text), "keys": _jsonb_safe(keys)})
    return text


def one_of(model: BaseModel, names: tuple[str, ...]) -> None:
    """Require exactly one of ``names`` to be set; the error names the first field."""
    present = [name for name in names if getattr(model, name) is not None]
    if len(present) != 1:
        listed = ", ".join(names)
        got = "none" if not present else "both " + " and ".join(present)
        raise PydanticCustomError(
            "exactly_one",
            "exactly one of {fields} is required (got {got})",
            {"field": present[1] if len(present) > 1 else names[0], "fields": listed, "got": got},
        )
