"""JSON for job payloads in Redis instead of arq's default pickle.

Unpickling bytes from Redis executes code chosen by whoever can write to Redis;
JSON cannot, and lets connectors in any language enqueue jobs.
"""

from __future__ import annotations

import json
from typing import Any


def dumps(data: Any) -> bytes:
    return json.dumps(data, default=str, separators=(",", ":")).encode("utf-8")


def loads(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8", errors="replace"))
