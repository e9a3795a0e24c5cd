"""A real worker process for fault-injection tests: ``python -m tests.support.worker_proc``.

The same ``arq.worker.Worker`` that ``arq worker.main.WorkerSettings`` runs, built from
``worker_options(Settings())`` - everything (DATABASE_URL, REDIS_URL, OPENAI_API_KEY,
OPENAI_BASE_URL, QUEUE_NAME, ...) comes from the environment - with a short poll delay
so tests are quick. SIGTERM/SIGINT shut it down gracefully; SIGKILL is the test's.
"""

from __future__ import annotations

import os

from worker.client import redis_settings_for
from worker.core.settings import Settings
from worker.queue.app import worker_class, worker_options


def main() -> None:
    settings = Settings()
    options = {
        **worker_options(settings),
        "poll_delay": float(os.environ.get("WORKER_POLL_DELAY", "0.05")),
    }
    worker = worker_class(settings)(
        **options,
        redis_settings=redis_settings_for(settings.redis_url or ""),
        ctx={"settings": settings},
    )
    worker.run()


if __name__ == "__main__":
    main()
