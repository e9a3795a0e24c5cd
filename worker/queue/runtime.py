"""What a worker process holds while it runs: pool, embedding batcher, pipeline.

Built once at startup and closed at shutdown; the arq hooks in ``app.py``, the demo
and the tests all use the same ``Runtime.open``/``close`` pair.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import structlog

from worker.core.settings import Settings
from worker.db.migrate import Migrator
from worker.db.pool import create_pool, worker_statements
from worker.embedding import EmbeddingBatcher, make_provider
from worker.ingest.pipeline import Pipeline
from worker.queue.handoff import Handoffs
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
        provider = make_provider(settings)
        await provider.warm_up()
        batcher = EmbeddingBatcher(provider, settings)
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
        return cls(settings, services, database_url, pool, batcher, pipeline, model, handoffs)

    async def close(self) -> None:
        # Handed-off jobs need the batcher and the pool to finish: they go first.
        await self.handoffs.drain(self.settings.handoff_drain_s)
        await self.pipeline.aclose()
        await self.batcher.aclose()
        await self.pool.close()
        log.info(
            "worker.stopped",
            **self.batcher.stats.as_dict(),
            pickup_groups=self.pipeline.pickups.writer.stats.as_dict(),
            store_groups=self.pipeline.comm_writer.stats.as_dict(),
        )
