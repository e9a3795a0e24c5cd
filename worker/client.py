"""Enqueueing for connectors: ``enqueue_communication`` / ``_transcript`` / ``_media``.

The job id is deterministic from (workspace, kind, source, external id, content hash),
so a connector that sends the same thing twice makes one job: arq refuses a second
job with an id it still knows, and the worker's ledger turns any later re-delivery
into a recorded no-op. Payloads are validated here first, so a connector learns about
a bad field at once instead of from the dead-letter log.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker import keys, ledger, serialization
from worker.payloads import (
    CommunicationPayload,
    MediaPayload,
    TranscriptPayload,
    content_hash,
    job_id,
    parse_payload,
)
from worker.settings import Settings, get_settings

AnyPayload = CommunicationPayload | TranscriptPayload | MediaPayload
#: Retries of one Redis command on connection errors (backoff 0.1 s doubling, capped at 2 s).
REDIS_RETRIES = 20


def redis_settings_for(url: str) -> RedisSettings:
    """Settings that ride out a Redis restart: commands retry on connection errors with
    capped exponential backoff (~30 s in all) instead of killing the worker's poll loop."""
    settings = RedisSettings.from_dsn(url)
    settings.retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=REDIS_RETRIES)
    # OSError: a refused connect surfaces raw (ConnectionRefusedError) inside the retry.
    settings.retry_on_error = [RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError]
    return settings


async def connect(redis_url: str) -> ArqRedis:
    """An arq Redis pool that speaks our JSON job format."""
    return await create_pool(
        redis_settings_for(redis_url),
        job_serializer=serialization.dumps,
        job_deserializer=serialization.loads,
    )


def _as_model(payload: AnyPayload | dict[str, Any]) -> AnyPayload:
    if isinstance(payload, (CommunicationPayload, TranscriptPayload, MediaPayload)):
        return payload
    return parse_payload(payload)  # raises PayloadError(field, reason)


async def enqueue(
    redis: ArqRedis, payload: AnyPayload | dict[str, Any], *, db: asyncpg.Pool | None = None,
    settings: Settings | None = None,
) -> str:  # fmt: skip
    """Validate and enqueue one payload; returns its (deterministic) job id.

    With ``db`` the job is recorded in the ledger before it reaches Redis, so it
    survives a Redis that loses its data; and content the ledger already holds as
    finished (done/skipped) is recorded as a ``job.noop`` right here instead of making
    a round trip through Redis and a worker: re-sending an unchanged corpus costs one
    transaction per item.
    """
    settings = settings or get_settings()
    model = _as_model(payload)
    jid = job_id(model)
    data = json.loads(model.model_dump_json())
    if db is not None:
        ref = ledger.JobRef(UUID(jid), model.workspace_id, model.kind, arq_job_id=jid)
        async with db.acquire() as conn:
            status = await ledger.receive(conn, ref, source=model.source,
                                          external_id=model.external_id,
                                          content_hash=content_hash(model), payload=data)  # fmt: skip
        if status in ledger.FINISHED:
            return jid  # recorded as a no-op; Redis and the workers never see it
    await redis.enqueue_job(keys.INGEST, data, _job_id=jid, _queue_name=settings.queue_name)
    return jid


async def enqueue_communication(redis: ArqRedis, payload: CommunicationPayload | dict[str, Any],
                                **kw: Any) -> str:  # fmt: skip
    return await enqueue(redis, _typed(payload, "communication"), **kw)


async def enqueue_transcript(redis: ArqRedis, payload: TranscriptPayload | dict[str, Any],
                             **kw: Any) -> str:  # fmt: skip
    return await enqueue(redis, _typed(payload, "transcript"), **kw)


async def enqueue_media(redis: ArqRedis, payload: MediaPayload | dict[str, Any], **kw: Any) -> str:
    return await enqueue(redis, _typed(payload, "media"), **kw)


def _typed(payload: Any, kind: str) -> Any:
    if isinstance(payload, dict):
        return {**payload, "kind": kind}
    if payload.kind != kind:
        raise ValueError(f"expected a {kind} payload, got {payload.kind}")
    return payload


async def enqueue_embed_pending(redis: ArqRedis, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    await redis.enqueue_job(keys.EMBED_PENDING, _queue_name=settings.queue_name)
