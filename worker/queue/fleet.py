"""This worker as one of a fleet: its id, the record it keeps in Redis, and what
``cos-worker status`` reads back.

Why: an operator running N workers on M machines needs to see them as one system: who
is alive, what each is working on, how much of the account's embedding budget the
fleet spends and how often the API said 429. Each worker process keeps a small JSON record
(jobs in flight, tokens and requests in the last window, 429s, its budget) that expires
when the worker stops writing it: a killed worker drops out within three beats. arq's
health-check key (one per queue by default) is one per ``WORKER_NAME`` (default: the
host name, i.e. one per container), so ``arq --check worker.main.WorkerSettings`` run
beside a worker still finds it, and the report shows each worker's arq line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog
from arq.connections import ArqRedis
from arq.constants import health_check_key_suffix

from worker.queue import keys

log = structlog.get_logger("worker.queue.fleet")

_ids: dict[int, str] = {}


def worker_id() -> str:
    """This process's id in the fleet: host, pid and a random tag (a pid is reused)."""
    pid = os.getpid()
    if pid not in _ids:
        _ids[pid] = f"{socket.gethostname()}-{pid}-{secrets.token_hex(3)}"
    return _ids[pid]


def worker_name(configured: str | None) -> str:
    """``WORKER_NAME``, else the host name (a container's id under Docker)."""
    return configured or socket.gethostname()


def health_check_key(queue: str, name: str) -> str:
    """arq's health-check key of the worker(s) named ``name`` (arq's: one per queue)."""
    return f"{queue}{health_check_key_suffix}:{name}"


def record_key(queue: str, wid: str | None = None) -> str:
    """The fleet record of worker ``wid`` (this process when None) on ``queue``."""
    return f"{keys.FLEET_PREFIX}{queue}:{worker_id() if wid is None else wid}"


@dataclass
class Activity:
    """What this worker is doing: runs in flight, and its embedding requests over the
    last window (tokens sent, requests, 429 answers), fed by the batcher's observers."""

    window_s: float = 60.0
    in_flight: int = 0
    started_at: float = field(default_factory=time.time)
    _requests: deque[tuple[float, int, bool]] = field(default_factory=deque)

    def observe(self, outcome: str, tokens: int, inputs: int) -> None:
        """A batcher observer: one request's outcome (``ok`` or ``rate_limited``)."""
        self._requests.append((time.monotonic(), tokens, outcome == "rate_limited"))
        self._trim()

    def _trim(self) -> None:
        cutoff = time.monotonic() - self.window_s
        while self._requests and self._requests[0][0] < cutoff:
            self._requests.popleft()

    def window(self) -> dict[str, int]:
        self._trim()
        return {
            "tokens": sum(n for _, n, _ in self._requests),
            "requests": sum(1 for _, _, limited in self._requests if not limited),
            "rate_limited": sum(1 for _, _, limited in self._requests if limited),
        }


async def heartbeat(
    redis: ArqRedis,
    queue: str,
    every_s: float,
    report: Any,
) -> None:
    """Write this worker's record every ``every_s`` until cancelled (``report()`` makes it);
    it expires after three missed beats. Redis errors are logged and retried."""
    key = record_key(queue)
    ttl_ms = int(every_s * 3000)
    warned = False
    try:
        while True:
            try:
                await redis.set(key, json.dumps(report()), px=ttl_ms)
                warned = False
            except Exception as exc:  # noqa: BLE001 - the record must never stop the worker
                if not warned:
                    warned = True
                    log.warning("fleet.record_failed", error_type=type(exc).__name__)
            await asyncio.sleep(every_s)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(redis.delete(key))


async def read_fleet(redis: ArqRedis, queue: str) -> list[dict[str, Any]]:
    """The workers alive on ``queue`` (their record has not expired), in id order, each
    with its arq health-check line when its name has one."""
    prefix = record_key(queue, "")
    found = sorted(
        [
            k.decode() if isinstance(k, bytes) else k
            async for k in redis.scan_iter(match=prefix + "*")
        ]
    )
    if not found:
        return []
    workers = []
    for key, raw in zip(found, await redis.mget(found), strict=True):
        if not raw:
            continue  # expired between the scan and the read
        record: dict[str, Any] = json.loads(raw)
        record["id"] = key[len(prefix) :]
        workers.append(record)
    names = sorted({w["name"] for w in workers if w.get("name")})
    if names:
        checks = await redis.mget([health_check_key(queue, n) for n in names])
        lines = {
            n: c.decode() if isinstance(c, bytes) else c
            for n, c in zip(names, checks, strict=True)
            if c
        }
        for w in workers:
            w["arq"] = lines.get(w.get("name", ""))
    return workers


def summarize(workers: list[dict[str, Any]], now: float | None = None) -> dict[str, Any]:
    """The fleet as ``cos-worker status`` prints it: each worker's figures per minute, and
    per budget (account) the fleet's tokens per minute against its limit and its 429s."""
    now = now or time.time()
    rows = []
    budgets: dict[str, dict[str, Any]] = {}
    for w in workers:
        per_minute = 60.0 / float(w.get("window_s") or 60.0)
        row = {
            "id": w["id"],
            "pid": w.get("pid"),
            "up_s": round(now - w["started_at"], 1) if w.get("started_at") else None,
            "name": w.get("name"),
            "in_flight": w.get("in_flight"),
            "arq_health_check": w.get("arq"),
            "tokens_per_minute": round(w.get("tokens", 0) * per_minute),
            "requests_per_minute": round(w.get("requests", 0) * per_minute),
            "rate_limited_last_window": w.get("rate_limited", 0),
            "budget": w.get("budget"),
            "budget_degraded": w.get("budget_degraded", False),
        }
        rows.append(row)
        if not w.get("budget"):
            continue  # alive, no record yet
        b = budgets.setdefault(
            w["budget"],
            {"workers": 0, "tokens_per_minute": 0, "limit": 0, "rate_limited_last_window": 0},
        )
        b["workers"] += 1
        b["tokens_per_minute"] += row["tokens_per_minute"]
        b["rate_limited_last_window"] += row["rate_limited_last_window"]
        b["limit"] = max(b["limit"], int(w.get("tokens_per_minute_limit") or 0))
    for b in budgets.values():
        b["share_of_limit"] = round(b["tokens_per_minute"] / b["limit"], 3) if b["limit"] else None
    return {"workers": rows, "budgets": budgets}
