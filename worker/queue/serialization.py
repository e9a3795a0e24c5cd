"""JSON for job payloads in Redis instead of arq's default pickle.

Unpickling bytes from Redis executes code chosen by whoever can write to Redis;
JSON cannot, and lets connectors in any language enqueue jobs.
"""

from __future__ import annotations

import json
from typing import Any


class QuietPayload(dict[str, Any]):
    """A job argument whose ``repr`` is ``…``.

    arq formats ``repr(args)`` for its start log line before any filter can drop it, and
    only then truncates it to 80 characters: for a 20 MB transcript that repr took 0.2 s
    of the event loop and 60 MB at its peak (measured), and its first characters may be
    a message body (``log.HideJobArguments`` blanks them as well). Otherwise a plain dict.
    """

    def __repr__(self) -> str:
        return "…"


#: Keys of a finished job's record (arq's ``serialize_result``), which a job has not.
_RESULT_KEYS = frozenset(["r", "s", "ft"])


def dumps(data: Any) -> bytes:
    """A job, or a finished job's result. A result is stored without the job's argument
    (arq keeps it for ``keep_result`` and nothing reads it back): a 20 MB payload is
    otherwise serialized again as the job ends (two more copies in the worker at once,
    with its rows being written) and held in Redis for an hour."""
    if isinstance(data, dict) and data.keys() >= _RESULT_KEYS and data.get("a"):
        data = {**data, "a": ["…"]}
    return json.dumps(data, default=str, separators=(",", ":")).encode("utf-8")


def loads(raw: bytes) -> Any:
    """A job (or result) as arq stores it: ``{"f": function, "a": args, ...}``; dict
    arguments come back as ``QuietPayload``."""
    data = json.loads(raw.decode("utf-8", errors="replace"))
    if isinstance(data, dict) and isinstance(data.get("a"), list):
        data["a"] = [QuietPayload(a) if isinstance(a, dict) else a for a in data["a"]]
    return data
