"""The Redis side of an erasure (``cos-worker erase``; the database side is
``worker.db.erase``): the scope's queued jobs leave the queue before its rows are deleted,
so no worker picks one up and writes it back, and again after, for what a connector sent
meanwhile.

A queued job names its workspace and source in its payload (``ingest``); a page job
(``ingest_page``) carries items of several scopes: only the scope's items are dropped from
it, the others stay queued. A job a worker has started (arq's in-progress key) cannot be
taken back: it is counted as in flight, and the erasure's second pass deletes what it
wrote. Each change is a WATCH/MULTI transaction on the job's keys, so a worker that picks
the job up at the same moment either gets it whole or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from redis.exceptions import WatchError

from worker.queue import keys
from worker.queue.serialization import dumps, loads

_SCAN = 500


@dataclass
class Swept:
    """What a sweep removed: whole jobs, items of page jobs, and jobs left in flight."""

    jobs: int = 0
    items: int = 0
    in_flight: int = 0
    keys: int = 0

    def add(self, other: Swept) -> None:
        self.jobs += other.jobs
        self.items += other.items
        self.in_flight += other.in_flight
        self.keys += other.keys

    def as_dict(self) -> dict[str, int]:
        return {
            "jobs": self.jobs,
            "items": self.items,
            "in_flight": self.in_flight,
            "keys": self.keys,
        }


def in_scope(
    payload: Any, workspace_id: uuid.UUID, source: str | None, job_ids: Collection[str] = ()
) -> bool:
    """Whether a queued item belongs to the scope (its payload names workspace and source;
    a large item's names its ledger row, one of the scope's ``job_ids``)."""
    if not isinstance(payload, Mapping):
        return False
    if keys.LEDGER_PAYLOAD in payload:
        return payload[keys.LEDGER_PAYLOAD] in job_ids
    try:
        ws = uuid.UUID(str(payload.get("workspace_id")))
    except ValueError:
        return False
    return ws == workspace_id and (source is None or payload.get("source") == source)


def _rewrite(
    job: dict[str, Any],
    workspace_id: uuid.UUID,
    source: str | None,
    job_ids: Collection[str] = (),
) -> tuple[int, Any]:
    """(items of the scope in ``job``, the job without them or None when none is left)."""
    args = job.get("a") or []
    if job.get("f") == keys.INGEST_PAGE and args and isinstance(args[0], Mapping):
        items = list(args[0].get("items") or [])
        keep = [i for i in items if not in_scope(i, workspace_id, source, job_ids)]
        dropped = len(items) - len(keep)
        if not dropped:
            return 0, job
        if not keep:
            return dropped, None
        return dropped, {**job, "a": [{**args[0], "items": keep}, *args[1:]]}
    if job.get("f") == keys.INGEST and args and in_scope(args[0], workspace_id, source, job_ids):
        return 1, None
    return 0, job


async def sweep_queue(
    redis: ArqRedis,
    queue_name: str,
    workspace_id: uuid.UUID,
    source: str | None,
    job_ids: Collection[str] = (),
) -> Swept:
    """Remove the scope's queued jobs (and items of page jobs) from ``queue_name``."""
    swept = Swept()
    ids = [
        i.decode() if isinstance(i, bytes) else str(i)
        for i in await redis.zrange(queue_name, 0, -1)
    ]
    for start in range(0, len(ids), _SCAN):
        chunk = ids[start : start + _SCAN]
        raws = await redis.mget([keys.JOB_KEY_PREFIX + i for i in chunk])
        for arq_id, raw in zip(chunk, raws, strict=True):
            if raw is None:
                continue
            try:
                job = loads(raw)
            except ValueError:
                continue
            if isinstance(job, dict) and _rewrite(job, workspace_id, source, job_ids)[0]:
                swept.add(await _take(redis, queue_name, arq_id, workspace_id, source, job_ids))
    return swept


async def _take(
    redis: ArqRedis,
    queue_name: str,
    arq_id: str,
    workspace_id: uuid.UUID,
    source: str | None,
    job_ids: Collection[str] = (),
) -> Swept:
    job_key, running = keys.JOB_KEY_PREFIX + arq_id, keys.IN_PROGRESS_KEY_PREFIX + arq_id
    for _ in range(5):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(job_key, running)
                if await pipe.exists(running):
                    return Swept(in_flight=1)
                raw = await pipe.get(job_key)
                if raw is None:
                    return Swept()
                dropped, rest = _rewrite(loads(raw), workspace_id, source, job_ids)
                pipe.multi()
                if rest is None:
                    pipe.delete(job_key, keys.RETRY_KEY_PREFIX + arq_id)
                    pipe.zrem(queue_name, arq_id)
                else:
                    pipe.set(job_key, dumps(rest), keepttl=True)
                await pipe.execute()
                whole = rest is None
                return Swept(jobs=int(whole), items=0 if whole else dropped)
            except WatchError:
                continue  # a worker touched it: look again
    return Swept(in_flight=1)


async def forget_results(redis: ArqRedis, arq_ids: Iterable[str]) -> int:
    """Delete what Redis keeps of finished jobs of the scope (results, retry counters,
    hand-off markers); a page job's result names its items' statuses only."""
    names = [
        prefix + arq_id
        for arq_id in dict.fromkeys(arq_ids)
        for prefix in (keys.RESULT_KEY_PREFIX, keys.RETRY_KEY_PREFIX, keys.HANDED_OFF_KEY_PREFIX)
    ]
    deleted = 0
    for start in range(0, len(names), _SCAN):
        deleted += int(await redis.delete(*names[start : start + _SCAN]))
    return deleted
