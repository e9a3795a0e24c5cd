"""``cos-worker erase``: a workspace, or one source of it, gone from PostgreSQL and Redis.

On top of both sides (``worker.db.erase``, ``worker.queue.erase``), in this order, because
a worker may be ingesting an item of the scope while it runs:

1. the scope's queued jobs leave the queue (page jobs keep their other items), so no
   worker picks one up from now on;
2. the scope's ledger rows go (the reconciler re-enqueues unfinished rows: none is left
   to re-enqueue), their Redis results with them; then every row of the scope, in batches;
3. the queue is swept again (a connector that sent more meanwhile) and what is left of
   the scope counted: a job that was in flight at step 1 may have written rows since.
   Then steps 2-3 run again, up to ``MAX_PASSES`` times, until nothing is left;
4. one ``scope.erased`` event with the counts (the event store keeps its history).

Stop the connector (disconnect the integration) before erasing a source; a workspace
erasure ends by deleting the workspace row, after which no job of it can be recorded.
A run cut anywhere is finished by running it again (see ``worker.db.erase``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from worker.core.settings import Settings
from worker.db import erase as db_erase
from worker.db.ledger import erasure as ledger_erasure
from worker.db.pool import connect
from worker.queue import client
from worker.queue import erase as queue_erase

MAX_PASSES = 3


@dataclass
class ErasureReport:
    """What a run removed, per table and from Redis, and what is left (nothing, normally)."""

    scope: db_erase.Scope
    deleted: Counter[str] = field(default_factory=Counter)
    redis: queue_erase.Swept = field(default_factory=queue_erase.Swept)
    remaining: dict[str, int] = field(default_factory=dict)
    passes: int = 0
    batch_size: int = 0

    @property
    def complete(self) -> bool:
        return not self.remaining and not self.redis.in_flight

    def to_dict(self) -> dict[str, Any]:
        """The report, and the ``scope.erased`` event's payload: counts and names only."""
        out: dict[str, Any] = {"scope": self.scope.kind}
        if self.scope.source is not None:
            out["source"] = self.scope.source
        return {
            **out,
            "workspace_id": str(self.scope.workspace_id),
            "deleted": dict(sorted(self.deleted.items())),
            "redis": self.redis.as_dict(),
            "remaining": self.remaining,
            "passes": self.passes,
            "batch_size": self.batch_size,
        }


async def erase(
    settings: Settings,
    database_url: str,
    redis_url: str,
    scope: db_erase.Scope,
    *,
    after_batch: db_erase.AfterBatch | None = None,
) -> ErasureReport:
    """Erase ``scope`` (the module doc says how); the report of this run."""
    batch = settings.erase_batch_size
    report = ErasureReport(scope, batch_size=batch)
    redis = await client.connect(redis_url)
    conn = await connect(settings, database_url)
    try:
        await db_erase.check_tables(conn)

        async def forgotten(rows: list[tuple[UUID, str | None]]) -> None:
            ids = [str(i) for i, _ in rows] + [a for _, a in rows if a]
            report.redis.keys += await queue_erase.forget_results(redis, ids)

        job_ids: set[str] = set()  # a large item's queued job names only its ledger row

        async def sweep() -> None:
            job_ids.update(await db_erase.scope_job_ids(conn, scope))
            report.redis.add(
                await queue_erase.sweep_queue(
                    redis, settings.queue_name, scope.workspace_id, scope.source, job_ids
                )
            )

        await sweep()
        for _ in range(MAX_PASSES):
            report.passes += 1
            report.redis.in_flight = 0  # what the last sweep found still running counts
            await db_erase.erase_ledger(conn, scope, batch, report.deleted, forgotten, after_batch)
            rows = await db_erase.erase_rows(conn, scope, batch, after_batch)
            report.deleted.update(rows)
            await sweep()
            report.remaining = await db_erase.remaining(conn, scope)
            if report.complete:
                break
        payload = report.to_dict()
        payload.pop("workspace_id")  # the event's own column
        await ledger_erasure.record_erasure(conn, scope.workspace_id, scope.source, payload)
    finally:
        await conn.close()
        await redis.aclose()
    return report
