"""Helpers to run the real worker against the session's real servers."""

from __future__ import annotations

import copy
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
from arq.worker import Worker
from pgvector.asyncpg import register_vector

from worker.core.settings import Settings
from worker.queue.app import run_bursts

if TYPE_CHECKING:
    from worker.db.search import Mode

DEFAULTS: dict[str, Any] = {
    "openai_api_key": "sk-test-not-a-real-key-1234567890",
    "embedding_provider": "openai",
    "embed_batch_linger_ms": 30,
    "embed_max_retries": 3,
    "embed_request_timeout_s": 2.0,
    "retry_base_delay_s": 0.05,
    "job_max_tries": 3,
    "worker_concurrency": 8,
    "db_pool_max": 10,
    "log_format": "json",
    "fetch_allow_private": True,
    "worker_poll_delay_s": 0.02,
}


def make_settings(
    database_url: str, redis_url: str, openai_base_url: str, **overrides: Any
) -> Settings:
    values = {
        **DEFAULTS,
        "database_url": database_url,
        "redis_url": redis_url,
        "openai_base_url": openai_base_url + "/v1",
        "queue_name": f"test:{uuid.uuid4().hex[:8]}",
        **overrides,
    }
    return Settings(**values)


async def run_worker_burst(settings: Settings, **worker_kw: Any) -> Worker:
    """Run in-process arq Workers until the queue is empty; returns the first for counters."""
    return await run_bursts(settings, {"settings": settings}, **worker_kw)


async def db_fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """One query on a short-lived superuser connection with the vector codec."""
    conn = await asyncpg.connect(dsn)
    await register_vector(conn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def db_val(dsn: str, sql: str, *args: Any) -> Any:
    rows = await db_fetch(dsn, sql, *args)
    return rows[0][0] if rows else None


async def new_workspace(dsn: str, name: str = "test") -> uuid.UUID:
    conn = await asyncpg.connect(dsn)
    try:
        ws: uuid.UUID = await conn.fetchval(
            "INSERT INTO core.workspaces (name) VALUES ($1) RETURNING id", name
        )
        return ws
    finally:
        await conn.close()


def communication(ws: uuid.UUID, external_id: str, body: str, **kw: Any) -> dict[str, Any]:
    return {
        "kind": "communication",
        "workspace_id": str(ws),
        "source": "gmail",
        "external_id": external_id,
        "channel": "email",
        "thread_key": kw.pop("thread_key", "t1"),
        "subject": kw.pop("subject", f"subject {external_id}"),
        "sender": {"name": "Ann Example", "address": "ann@example.com"},
        "recipients": [{"name": "Bob Example", "address": "bob@example.com", "role": "to"}],
        "sent_at": "2026-11-01T10:00:00Z",
        "body": body,
        **kw,
    }


def transcript(
    ws: uuid.UUID, external_id: str, turns: list[tuple[str, int, int, str]], **kw: Any
) -> dict[str, Any]:
    return {
        "kind": "transcript",
        "workspace_id": str(ws),
        "source": "zoom",
        "external_id": external_id,
        "meeting": {
            "title": "Sync",
            "starts_at": "2026-11-01T10:00:00Z",
            "ends_at": "2026-11-01T11:00:00Z",
        },
        "participants": [
            {"name": s, "address": f"{s.lower()}@example.com"}
            for s in sorted({t[0] for t in turns})
        ],
        "segments": [{"speaker": s, "start_ms": a, "end_ms": b, "text": t} for s, a, b, t in turns],
        **kw,
    }


def media(
    ws: uuid.UUID, external_id: str, segments: list[tuple[int, int, str]], **kw: Any
) -> dict[str, Any]:
    return {
        "kind": "media",
        "workspace_id": str(ws),
        "source": "loom",
        "external_id": external_id,
        "asset": {
            "kind": "video",
            "title": "Demo",
            "mime_type": "video/mp4",
            "duration_ms": segments[-1][1] if segments else 0,
        },
        "segments": [{"start_ms": a, "end_ms": b, "text": t} for a, b, t in segments],
        **kw,
    }


def mutate(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    out.update(changes)
    return out


async def search_workspace(
    settings: Settings,
    dsn: str,
    workspace_id: Any,
    text: str,
    limit: int = 3,
    mode: Mode = "hybrid",
) -> list[dict[str, Any]]:
    """``cos-worker search``'s query for ``text`` in one workspace, on a pool of its own
    (``mode="vector"``: what the embeddings alone rank first)."""
    from worker.db.pool import create_pool
    from worker.db.search import search

    pool = await create_pool(settings, dsn, min_size=1, max_size=1)
    try:
        return await search(settings, pool, workspace_id, text, limit=limit, mode=mode)
    finally:
        await pool.close()
