"""The receive stage: from a delivery to a started ``Job``, a no-op or a rejection.

Ledger first: the payload is validated, its job identified (a deterministic id from its
content), the job started in the ledger (or recorded, if the client never did), and a
delivery of a finished job becomes a recorded no-op. An invalid payload is recorded with
the field and the reason and is never retried.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import asyncpg
import structlog

from worker.core.payloads import (
    ITEM_KINDS,
    LEDGER_PAYLOAD_KEY,
    PayloadError,
    content_hash,
    decode_json_payload,
    job_id,
    parse_payload,
)
from worker.core.redact import digest
from worker.core.settings import Settings
from worker.db import ledger
from worker.ingest.delivery import Delivery, RetryLater, is_transient, ledger_id_for
from worker.ingest.flow import Announce, Flow
from worker.ingest.job import Job
from worker.ingest.kinds import KINDS
from worker.ingest.pickup import Pickups

log = structlog.get_logger("worker.ingest.receive")


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        return None


class Receiver:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, expect: Announce) -> None:
        self.pool = pool
        self.expect = expect
        # Pickups that arrive together (the items of one page job) share a transaction.
        self.pickups = Pickups(pool, settings)

    async def receive(
        self, raw: Any, delivery: Delivery, backoff: Callable[[int], float]
    ) -> Job | dict[str, Any]:
        """The started job, or the recorded outcome of a delivery that will not run."""
        data: Any = raw
        try:
            data = decode_json_payload(raw)
            if len(data) == 1 and LEDGER_PAYLOAD_KEY in data:
                data = await self._from_ledger(data, delivery, backoff)
            payload = parse_payload(data)
        except PayloadError as exc:
            return await self.reject(data, delivery, exc.field, exc.reason)
        chash = content_hash(payload)  # (hashes the whole payload: once per run)
        jid = uuid.UUID(job_id(payload, chash))
        ref = ledger.JobRef(
            jid, payload.workspace_id, payload.item_kind, arq_job_id=delivery.arq_job_id
        )
        bound = log.bind(
            job_id=str(jid),
            workspace_id=str(payload.workspace_id),
            kind=payload.kind,
            # the external id may embed an address (a Message-ID): its digest tells items apart
            item=f"{payload.source}:{digest(payload.external_id)}",
        )
        start = ledger.Start(
            ref,
            payload.source,
            payload.external_id,
            chash,
            data,
            noop_key=f"noop:{delivery.enqueue_time_ms}",
        )
        try:
            try:
                pickup = await self.pickups.start(start, together=delivery.in_page)
            except asyncpg.ForeignKeyViolationError:
                # the only foreign key of the ledger row: its workspace
                return await self.reject(data, delivery, "workspace_id", "unknown workspace", jid)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # Nothing was recorded yet (or only the received event): the transport retries.
            bound.warning("job.receive_failed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise RetryLater(backoff(delivery.job_try), str(exc)) from exc
        if pickup.finished:
            bound.info("job.noop", reason=f"already {pickup.status}")
            return {"status": "noop", "job_id": str(jid)}
        ref = replace(ref, attempt=pickup.attempt)
        flow = Flow(
            self.expect,
            delivery.arrival or self.expect(),
            delivery.rows_queued,
            together=delivery.in_page,
            live=delivery.live,
        )
        return Job(
            payload,
            KINDS[payload.kind],
            ref,
            chash,
            pickup.queued_at,
            bound.bind(attempt=pickup.attempt),
            flow,
        )

    async def _from_ledger(
        self, ref: dict[str, Any], delivery: Delivery, backoff: Callable[[int], float]
    ) -> dict[str, Any]:
        """The payload a large item's job names instead of carrying (its ledger row's): read
        once, here, rather than copied through Redis and arq's buffers."""
        jid = _uuid_or_none(ref[LEDGER_PAYLOAD_KEY])
        if jid is None:
            raise PayloadError(LEDGER_PAYLOAD_KEY, "is not a job id")
        try:
            async with self.pool.acquire() as conn:
                text = await ledger.payload_of(conn, jid)
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise RetryLater(backoff(delivery.job_try), str(exc)) from exc
        if text is None:
            raise PayloadError(LEDGER_PAYLOAD_KEY, "names no ledger row that holds a payload")
        return decode_json_payload(text)

    async def reject(
        self,
        data: Any,
        delivery: Delivery,
        field: str,
        reason: str,
        ledger_id: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        """Record an invalid payload (a failed ledger row naming the field and reason, and
        its event) and log it; never retried."""
        d = data if isinstance(data, dict) else {}
        ws = _uuid_or_none(d.get("workspace_id"))
        named = d.get("kind")
        if named == "deletion":  # the ledger kind of a deletion is the deleted item's
            named = d.get("deleted_kind")
        kind = ITEM_KINDS.get(named) if isinstance(named, str) else None
        # (the items of a page share its arq id: each is identified by its own payload)
        jid = ledger_id or ledger_id_for(delivery.own_arq_job_id, data)
        async with self.pool.acquire() as conn:
            if ws is not None and not await ledger.workspace_known(conn, ws):
                ws = None
            ref = ledger.JobRef(
                jid, ws, kind, attempt=delivery.job_try, arq_job_id=delivery.arq_job_id
            )
            src, ext = d.get("source"), d.get("external_id")
            await ledger.reject(
                conn,
                ref,
                field=field,
                reason=reason,
                raw=d if d else {"raw": str(data)[:1000]},
                source=src if isinstance(src, str) else None,
                external_id=ext if isinstance(ext, str) else None,
            )
        log.error(
            "job.invalid_payload",
            job_id=str(jid),
            arq_job_id=delivery.arq_job_id,
            workspace_id=str(ws) if ws else None,
            kind=kind,
            field=field,
            reason=reason,
        )
        return {"status": "failed", "job_id": str(jid), "field": field, "reason": reason}

    async def aclose(self) -> None:
        await self.pickups.aclose()
