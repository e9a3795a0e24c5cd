"""What a worker process holds while it runs: pool, embedding batcher, pipeline.

Built once at startup and closed at shutdown; the arq hooks in ``app.py``, the demo
and the tests all use the same ``Runtime.open``/``close`` pair.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import cast

import asyncpg
import structlog
from redis.asyncio import Redis

from worker.core.settings import Settings
from worker.db.migrate import Migrator
from worker.db.pool import RoutedPool, create_pool, worker_statements
from worker.embedding import EmbeddingBatcher, make_provider
from worker.embedding.budget import Limits, SharedBudget, budget_id
from worker.ingest.pipeline import Pipeline
from worker.queue import keys
from worker.queue.admission import Admission
from worker.queue.fleet import Activity, worker_id, worker_name
from worker.queue.handoff import Handoffs
from worker.queue.metrics import Metrics
from worker.servers.services import Services
from worker.text.tokens import get_encoding

#: Modules a parsing child needs before its first task when ``arq`` runs the worker.
PARSER_PRELOAD = ("arq.cli", "arq.worker", "worker.main")

log = structlog.get_logger("worker.queue.runtime")


@dataclass
class Runtime:
    settings: Settings
    services: Services
    database_url: str
    pool: asyncpg.Pool
    batcher: EmbeddingBatcher
    pipeline: Pipeline
    model: str
    handoffs: Handoffs
    activity: Activity
    metrics: Metrics
    admission: Admission
    shared_budget: SharedBudget | None = None  # None: the batcher paces this process alone

    @classmethod
    async def open(cls, settings: Settings, services: Services | None = None) -> Runtime:
        services = services or Services(settings)
        database_url = await services.ensure_database()
        if not settings.database_url:
            # Embedded mode is for demos and development: keep its schema current.
            await Migrator(database_url, settings.migrations_dir).up()
        # Load the tokenizer now (~0.3 s), not inside the first job's event-loop turn.
        await asyncio.to_thread(get_encoding)
        pool = await create_pool(settings, database_url, prepare=worker_statements())
        if settings.db_pool_live:
            live = await create_pool(
                settings,
                database_url,
                min_size=1,
                max_size=settings.db_pool_live,
                prepare=worker_statements(),
            )
            pool = cast(asyncpg.Pool, RoutedPool(pool, live))  # (closes both)
        provider = make_provider(settings)
        await provider.warm_up()
        shared = await _shared_budget(settings, services)
        batcher = EmbeddingBatcher(provider, settings, budget=shared)
        activity = Activity(window_s=settings.embed_rate_period_s)
        metrics = Metrics(
            settings,
            worker_id(),
            in_flight=lambda: activity.in_flight,
            degraded=lambda: float(shared is not None and shared.degraded),
        )
        batcher.observers += [activity.observe, metrics.request]
        await batcher.start()
        model = settings.effective_model
        # arq's CLI is the usual __main__: parsing children re-run it (see Parser)
        pipeline = Pipeline(settings, pool, batcher, model, preload=PARSER_PRELOAD)
        log.info(
            "worker.started",
            model=model,
            provider=settings.provider,
            concurrency=settings.worker_concurrency,
        )
        handoffs = Handoffs(settings.handoff_max_rows)
        return cls(
            settings,
            services,
            database_url,
            pool,
            batcher,
            pipeline,
            model,
            handoffs,
            activity,
            metrics,
            Admission(settings.page_items_in_flight),
            shared,
        )

    def report(self) -> dict[str, object]:
        """This worker's fleet record (``worker.queue.fleet``, ``cos-worker status``)."""
        shared = self.shared_budget
        return {
            "name": worker_name(self.settings.worker_name),
            "pid": os.getpid(),
            "started_at": round(self.activity.started_at, 1),
            "in_flight": self.activity.in_flight,
            "pages_waiting": self.admission.waiting,
            "handed_off_rows": self.handoffs.rows,
            "window_s": self.activity.window_s,
            **self.activity.window(),
            "tokens_per_minute_limit": self.settings.embed_tokens_per_minute,
            "budget": shared.key.removeprefix(keys.BUDGET_PREFIX) if shared else "local",
            "budget_degraded": shared.degraded if shared else False,
        }

    async def close(self) -> None:
        # Handed-off jobs need the batcher and the pool to finish: they go first.
        await self.handoffs.drain(self.settings.handoff_drain_s)
        await self.pipeline.aclose()
        await self.batcher.aclose()
        if self.shared_budget is not None:
            await self.shared_budget.aclose()
        self.metrics.close()
        await self.pool.close()
        log.info(
            "worker.stopped",
            **self.batcher.stats.as_dict(),
            pickup_groups=self.pipeline.pickups.writer.stats.as_dict(),
            store_groups=self.pipeline.comm_writer.stats.as_dict(),
        )


async def _shared_budget(settings: Settings, services: Services) -> SharedBudget | None:
    """The fleet's budget in Redis for a rate-limited provider (None: the batcher paces
    this process alone: the local provider, or ``EMBED_BUDGET_SHARED=false``)."""
    if settings.provider != "openai" or not settings.embed_budget_shared:
        return None
    url = await services.ensure_redis()
    timeout = settings.embed_budget_timeout_s
    redis = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    name = settings.embed_budget_id or budget_id(
        settings.openai_base_url or "", key, settings.embedding_model
    )
    limits = Limits.from_settings(settings)
    budget = SharedBudget(redis, keys.BUDGET_PREFIX + name, worker_id(), limits, timeout_s=timeout)
    log.info("embedding.budget_shared", budget=name, tokens_per_minute=limits.tokens_per_minute)
    return budget
