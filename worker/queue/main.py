"""The deployable worker class behind ``arq worker.main.WorkerSettings`` (see ``worker.queue.app``).

arq reads ``redis_settings`` from this class before any hook runs, so with
``REDIS_URL`` unset the embedded redis-server is started when this module is imported.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from arq.connections import RedisSettings

from worker.core.settings import Settings, get_settings
from worker.queue.app import worker_class, worker_options
from worker.queue.client import redis_settings_for
from worker.servers.services import Services


def _resolve_redis(settings: Settings) -> RedisSettings:
    if settings.redis_url:
        return redis_settings_for(settings.redis_url)
    url = asyncio.run(Services(settings).ensure_redis())
    return redis_settings_for(url)


_settings = get_settings()


class WorkerSettings:
    """Read by ``arq worker.main.WorkerSettings``; attributes come from ``worker_options``."""

    redis_settings: ClassVar[RedisSettings] = _resolve_redis(_settings)


for _name, _value in worker_options(_settings).items():
    setattr(WorkerSettings, _name, _value)


def run_live_lane(settings: Settings) -> None:
    """``cos-worker live-lane``: a worker taking only live jobs (``worker.queue.lanes``)."""
    lane = settings.model_copy(update={"worker_lane": "live"})
    worker = worker_class(lane)(**worker_options(lane), redis_settings=_resolve_redis(lane))
    worker.run()
