"""Turning untrusted input (JSON text, bytes, dicts from Redis) into a payload model, or a
:class:`PayloadError` naming the first offending field: never anything else, so a poison
message fails its job cleanly instead of the worker (see ``worker.core.payloads``)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from worker.core.payloads import ADAPTER, KINDS, AnyPayload, PayloadError


def decode_json_payload(
    raw: bytes | bytearray | memoryview | str | dict[str, Any],
) -> dict[str, Any]:
    """Decode a payload as read from Redis. Invalid UTF-8 is replaced (U+FFFD), not fatal:
    one bad byte in a long e-mail should not lose the e-mail."""
    try:
        if isinstance(raw, dict):
            return raw
        if isinstance(raw, bytes | bytearray | memoryview):
            raw = bytes(raw).decode("utf-8", errors="replace")
        if not isinstance(raw, str):
            raise PayloadError(
                "payload", f"must be JSON text or an object, not {type(raw).__name__}"
            )
        data = json.loads(raw)
    except PayloadError:
        raise
    except (ValueError, RecursionError) as exc:
        raise PayloadError("payload", f"is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise PayloadError("payload", f"must be a JSON object, not {type(data).__name__}")
    return data


def _error_field(error: Any) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    if loc and loc[0] in KINDS:
        loc = loc[1:]  # the discriminator's branch name is not a field
    extra = (error.get("ctx") or {}).get("field")
    if extra:
        loc.append(str(extra))
    return ".".join(loc)


def _error_reason(error: Any) -> str:
    kind, msg = error.get("type"), str(error.get("msg", "is invalid"))
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "union_tag_not_found":
        return "is required (one of " + ", ".join(KINDS) + ")"
    if kind == "union_tag_invalid":
        tag = (error.get("ctx") or {}).get("tag", "")
        return f"must be one of {', '.join(KINDS)} (got {tag[:64]!r})"
    if kind == "model_attributes_type":
        return "must be a JSON object"
    msg = msg.removeprefix("Value error, ")
    return msg if len(msg) <= 300 else msg[:297] + "..."


def parse_payload(data: Any) -> AnyPayload:
    """Validate ``data`` (dict, JSON text or bytes) into a payload model.

    Raises :class:`PayloadError` - and only that - for every invalid input.
    """
    try:
        if isinstance(data, bytes | bytearray | memoryview | str):
            data = decode_json_payload(data)
        return ADAPTER.validate_python(data)
    except PayloadError:
        raise
    except ValidationError as exc:
        errors = [(_error_field(e) or "payload", _error_reason(e)) for e in exc.errors()]
        if not errors:
            errors = [("payload", "is invalid")]
        field, reason = errors[0]
        if field in ("", "payload") and reason.startswith(("is required (one", "must be one")):
            field = "kind"
        errors[0] = (field, reason)
        raise PayloadError(field, reason, errors) from None
    except Exception as exc:  # RecursionError, MemoryError-adjacent oddities: never escape
        raise PayloadError("payload", f"could not be validated ({type(exc).__name__})") from None
