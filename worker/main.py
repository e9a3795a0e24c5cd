"""``arq worker.main.WorkerSettings``: the deployable worker, where deployments name it
(built in ``worker.queue.main``; importing this starts the embedded redis-server when
``REDIS_URL`` is unset)."""

from worker.queue.main import WorkerSettings

__all__ = ["WorkerSettings"]
