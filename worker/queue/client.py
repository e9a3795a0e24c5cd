"""Enqueueing for connectors: ``enqueue_many`` for a page of items (the fast path),
``enqueue`` / ``enqueue_communication`` / ``_transcript`` / ``_media`` for one.

The job id is deterministic from (workspace, kind, source, external id, content hash),
so a connector that sends the same thing twice makes one job: arq refuses a second
job with an id it still knows, and the worker's ledger turns any later re-delivery
into a recorded no-op. Payloads are validated here first, so a connector learns about
a bad field at once instead of from the dead-letter log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.core.payloads import (
    AnyPayload,
    CommunicationPayload,
    DeletionPayload,
    EmailPayload,
    MediaPayload,
    PayloadError,
    TranscriptPayload,
    content_hash,
    job_id,
    parse_payload,
)
from worker.core.priority import Priority, is_live
from worker.core.settings import Settings, get_settings
from worker.db import ledger, sync
from worker.queue import keys, serialization
from worker.queue.sending import Send, send
from worker.queue.status import QueueStatus, queue_status  # noqa: F401 - where callers find it

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
    model = payload if isinstance(payload, _MODELS) else parse_payload(payload)  # PayloadError
    if isinstance(model, DeletionPayload) and model.deleted_at is None:
        # each deletion is a job of its own (its id is its content's): see DeletionPayload
        model = model.model_copy(update={"deleted_at": datetime.now(UTC)})
    return model


_MODELS = (CommunicationPayload, TranscriptPayload, MediaPayload, EmailPayload, DeletionPayload)


@dataclass(frozen=True)
class _Job:
    model: AnyPayload
    job_id: str
    content_hash: str
    data: dict[str, Any]
    text: str  # ``data`` as the model dumped it (jsonb-safe: the model cleaned every string)
    live: bool = False  # ahead of bulk work (worker.core.priority)

    @property
    def size(self) -> int:  # payload JSON characters, for paging
        return len(self.text)


def _pages(jobs: list[_Job], items: int, size: int) -> Iterator[list[_Job]]:
    page: list[_Job] = []
    used = 0
    for job in jobs:
        if page and (len(page) >= items or used + job.size > size):
            yield page
            page, used = [], 0
        page.append(job)
        used += job.size
    if page:
        yield page


async def enqueue_many(
    redis: ArqRedis,
    payloads: Sequence[AnyPayload | dict[str, Any]],
    *,
    db: asyncpg.Pool | None = None,
    settings: Settings | None = None,
    cursor: sync.Cursor | None = None,
    full_sync: sync.FullSync | None = None,
    priority: Priority = "auto",
) -> list[str | PayloadError]:
    """Validate and enqueue a connector's page of items; returns, in order, each item's
    (deterministic) job id or the ``PayloadError`` that names its bad field.

    An invalid item harms nothing else: the others are enqueued. With ``db`` the valid
    ones are recorded in the ledger first, a page (``enqueue_page_items`` /
    ``enqueue_page_bytes``) per transaction, so they survive a Redis that loses its data;
    items the ledger already holds as finished (done/skipped) become ``job.noop`` events
    right there and never reach Redis, and an unknown workspace is reported as an error
    on ``workspace_id``. Each page then costs one Redis call. A page is the unit of
    work: it costs a few round trips where one-by-one enqueueing costs about nine per
    item, which is what a re-sent, unchanged mailbox is made of.

    The items a ledger page *creates* travel together, ``enqueue_job_items`` (and
    ``enqueue_job_bytes``) to an ``ingest_page`` job, whose id their ledger rows name.
    An item the ledger already held unfinished is re-sent alone, under its own job id
    (which arq refuses while that job is still queued), unless its row names a page
    job: that page carries it, and if Redis lost the page the reconciler re-sends the
    item (re-sending it here could run it twice). Without ``db`` every item is a job of
    its own (nothing could tell a new item from a re-sent one).

    ``cursor`` (with ``db``): where the connector's stream has got to once this page is
    taken. The call's ledger rows and the cursor's move commit in one transaction, so a
    connector restarted from :func:`read_cursor` sends every item once (invalid items
    are returned here, not recorded: the cursor moves past them). Every item must be of
    the cursor's workspace and source. ``full_sync`` (with ``db``): the page belongs to
    that running full sync of its source (``worker.client.begin_full_sync``); its items
    are noted as seen in the same transaction.

    ``priority``: ``auto`` (the default) queues recent, small items ahead of bulk work
    and everything else (a full sync's pages too) behind it (``worker.core.priority``);
    ``live`` or ``bulk`` says so for every item of the call.
    """
    settings = settings or get_settings()
    now = datetime.now(UTC)
    results: list[str | PayloadError] = []
    jobs: list[_Job] = []
    seen: set[str] = set()
    for payload in payloads:
        try:
            model = _as_model(payload)
        except PayloadError as exc:
            results.append(exc)
            continue
        chash = content_hash(model)
        jid = job_id(model, chash)
        results.append(jid)
        if jid in seen:  # the same item twice in one call: one job
            continue
        seen.add(jid)
        text = model.model_dump_json()
        live = priority == "live" or (
            priority == "auto"
            and full_sync is None
            and is_live(
                model,
                len(text),
                max_age=settings.live_item_max_age,
                max_bytes=settings.live_item_max_bytes,
                now=now,
            )
        )
        jobs.append(_Job(model, jid, chash, json.loads(text), text, live))
    pages = list(_pages(jobs, settings.enqueue_page_items, settings.enqueue_page_bytes))
    if db is None:
        if cursor is not None or full_sync is not None:
            raise ValueError("a cursor or full sync is recorded with the page's jobs: pass db")
        for page in pages:
            await send(redis, [_single(j) for j in page], settings.queue_name)
        return results
    if cursor is None and full_sync is None:
        for page in pages:
            async with db.acquire() as conn:
                sends = await _record(conn, page, results, settings)
            await send(redis, sends, settings.queue_name)
        return results
    # The whole call's jobs, the cursor's move and what a full sync saw commit together,
    # then go to Redis: a crash after the commit leaves queued rows that the reconciler
    # sends (worker.db.sync).
    for scope in (cursor, full_sync):
        if scope is not None:
            _check_scope(scope.workspace_id, scope.source, jobs)
    async with db.acquire() as conn, conn.transaction():
        planned = [await _record(conn, page, results, settings) for page in pages]
        if full_sync is not None:
            carried = [
                (j.model.item_kind, j.model.external_id)
                for j in jobs
                if not isinstance(j.model, DeletionPayload)
            ]
            await sync.mark_seen(conn, full_sync, carried)
        if cursor is not None:
            await sync.advance(conn, cursor)
    for sends in planned:
        await send(redis, sends, settings.queue_name)
    return results


def _check_scope(workspace_id: UUID, source: str, jobs: Sequence[_Job]) -> None:
    for j in jobs:
        if j.model.workspace_id != workspace_id or j.model.source != source:
            raise ValueError(
                "a cursor or full sync takes its own source's items only: an item of "
                f"{j.model.source!r} in workspace {j.model.workspace_id} is in the page"
            )


def _single(job: _Job, fresh: bool = False, by_ref: bool = False) -> Send:
    """An item's own job; ``by_ref``: its payload stays in its ledger row and the job names
    the row (``keys.LEDGER_PAYLOAD``; see ``INLINE_PAYLOAD_MAX_BYTES``)."""
    arg = {keys.LEDGER_PAYLOAD: job.job_id} if by_ref else job.data
    return Send(job.job_id, keys.INGEST, arg, fresh, job.live)


async def _record(
    conn: asyncpg.Connection,
    page: list[_Job],
    results: list[str | PayloadError],
    settings: Settings,
) -> list[Send]:
    """Ledger first (one transaction, or a savepoint in the caller's); returns the arq
    jobs that still have to reach Redis. The items the ledger *creates* travel together
    (page jobs); an item it already held unfinished is re-sent alone unless its row names
    a page job; an unknown workspace is reported on ``workspace_id`` in ``results``."""
    groups = list(_pages(page, settings.enqueue_job_items, settings.enqueue_job_bytes))
    arq_ids: dict[str, str] = {}
    for group in groups:
        page_id = keys.PAGE_JOB_PREFIX + uuid4().hex
        arq_ids.update((j.job_id, page_id if len(group) > 1 else j.job_id) for j in group)
    created: set[UUID] = set()
    holders: dict[UUID, str | None] = {}
    receipts = [
        ledger.Receipt(
            ledger.JobRef(
                UUID(j.job_id),
                j.model.workspace_id,
                j.model.item_kind,
                arq_job_id=arq_ids[j.job_id],
            ),
            source=j.model.source,
            external_id=j.model.external_id,
            content_hash=j.content_hash,
            payload=j.data,
            payload_json=j.text,
        )
        for j in page
    ]
    statuses = await ledger.receive_many(conn, receipts, created=created, holders=holders)
    unknown = PayloadError("workspace_id", "no such workspace")
    for j in page:
        if statuses[UUID(j.job_id)] is None:
            for k, r in enumerate(results):  # every position that carried this item
                if r == j.job_id:
                    results[k] = unknown
    todo = {
        j.job_id
        for j in page
        if statuses[UUID(j.job_id)] not in (None, *ledger.FINISHED)
        # a page job carries its queued and running items; a failed one it no longer runs
        and not (
            statuses[UUID(j.job_id)] != "failed" and keys.is_page_job(holders.get(UUID(j.job_id)))
        )
    }
    sends: list[Send] = []
    big = settings.inline_payload_max_bytes
    for group in groups:
        new = [j for j in group if UUID(j.job_id) in created]
        if len(group) > 1 and new:
            items = {"items": [j.data for j in new]}
            live = all(j.live for j in new)
            sends.append(Send(arq_ids[new[0].job_id], keys.INGEST_PAGE, items, live=live))
        else:
            sends += [_single(j, fresh=True, by_ref=j.size > big) for j in new]
        sends += [
            # a failed row's payload may have been dropped (retention): it travels again
            _single(j, by_ref=j.size > big and statuses[UUID(j.job_id)] != "failed")
            for j in group
            if j.job_id in todo and UUID(j.job_id) not in created
        ]
    return sends


async def enqueue(
    redis: ArqRedis,
    payload: AnyPayload | dict[str, Any],
    *,
    db: asyncpg.Pool | None = None,
    settings: Settings | None = None,
    priority: Priority = "auto",
) -> str:
    """Validate and enqueue one payload; returns its (deterministic) job id. Raises
    ``PayloadError`` for an invalid one. ``enqueue_many`` of one item: see there."""
    result = (await enqueue_many(redis, [payload], db=db, settings=settings, priority=priority))[0]
    if isinstance(result, PayloadError):
        raise result
    return result


async def enqueue_communication(
    redis: ArqRedis, payload: CommunicationPayload | dict[str, Any], **kw: Any
) -> str:
    return await enqueue(redis, _typed(payload, "communication"), **kw)


async def enqueue_transcript(
    redis: ArqRedis, payload: TranscriptPayload | dict[str, Any], **kw: Any
) -> str:
    return await enqueue(redis, _typed(payload, "transcript"), **kw)


async def enqueue_media(redis: ArqRedis, payload: MediaPayload | dict[str, Any], **kw: Any) -> str:
    return await enqueue(redis, _typed(payload, "media"), **kw)


async def enqueue_email(redis: ArqRedis, payload: EmailPayload | dict[str, Any], **kw: Any) -> str:
    """A raw RFC 5322 message (base64 ``raw`` or ``content_url``); see ``EmailPayload``."""
    return await enqueue(redis, _typed(payload, "email"), **kw)


def _typed(payload: Any, kind: str) -> Any:
    if isinstance(payload, dict):
        return {**payload, "kind": kind}
    if payload.kind != kind:
        raise ValueError(f"expected a {kind} payload, got {payload.kind}")
    return payload


async def enqueue_embed_pending(redis: ArqRedis, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    await redis.enqueue_job(keys.EMBED_PENDING, _queue_name=settings.queue_name)
