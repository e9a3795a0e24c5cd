"""A worker process for live items only: the live lane (``cos-worker live-lane``).

Why a process: a worker ingesting a backfill runs thousands of item coroutines on one
event loop, and a fresh e-mail's coroutine waits its turn behind them (asyncio has no
priorities): measured, its p50 latency was 2.4-3.1x that of an idle worker even with every
queue inside the worker putting it first. In a process of its own it runs when it
arrives: the operating system schedules it, and its loop is idle otherwise.

It reads the same arq queue and takes only the jobs the client scored as live
(``worker.core.priority``: scored ``LIVE_SCORE_LEAD_MS`` early, so they sort first); the
other workers take live jobs too when they get to them first. It shares the fleet's
embedding budget, where live requests use the live reserve.
"""

from __future__ import annotations

from typing import Any

from arq.utils import timestamp_ms
from arq.worker import Worker

from worker.core.priority import LIVE_SCORE_LEAD_MS


class LiveLaneWorker(Worker):
    """An arq worker that starts only live jobs."""

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq offers the queue's first jobs by score (live ones sort first); keep the
        live ones."""
        if not job_ids:
            return
        ids = [j.decode() for j in job_ids]
        scores: list[Any] = await self.pool.zmscore(self.queue_name, ids)
        cutoff = timestamp_ms() - LIVE_SCORE_LEAD_MS // 2
        live = [j for j, s in zip(job_ids, scores, strict=True) if s is not None and s <= cutoff]
        await super().start_jobs(live)
