"""Where the servers are: the configured URLs, or embedded servers started on demand.

With ``DATABASE_URL`` / ``REDIS_URL`` unset, PostgreSQL and Redis run from the
project's wheels with their data under ``settings.data_dir``, so a fresh machine with
only Python can run every command. Servers this process started are stopped by
``Services.close()``; servers found already running (another command's) are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog

from worker.core.settings import Settings
from worker.db.admin import create_database
from worker.servers.embedded import EmbeddedPostgres, EmbeddedRedis

log = structlog.get_logger(__name__)

EMBEDDED_DATABASE = "cos"


@dataclass
class Services:
    """Resolved connection URLs plus the embedded servers we own."""

    settings: Settings
    database_url: str = ""
    redis_url: str = ""
    _owned: list[EmbeddedPostgres | EmbeddedRedis] = field(default_factory=list)

    async def ensure_database(self) -> str:
        if self.database_url:
            return self.database_url
        if self.settings.database_url:
            self.database_url = self.settings.database_url
            return self.database_url
        server = EmbeddedPostgres(self.settings.data_dir / "postgres")
        was_running = server.initialized() and (server.pgdata / "postmaster.pid").exists()
        await asyncio.to_thread(server.start)
        if not was_running:
            self._owned.append(server)
            log.info("embedded.postgres_started", port=server.port, data_dir=str(server.pgdata))
        await create_database(server.dsn(), EMBEDDED_DATABASE)
        self.database_url = server.dsn(EMBEDDED_DATABASE)
        return self.database_url

    async def ensure_redis(self) -> str:
        if self.redis_url:
            return self.redis_url
        if self.settings.redis_url:
            self.redis_url = self.settings.redis_url
            return self.redis_url
        server = EmbeddedRedis(self.settings.data_dir / "redis")
        was_running = (server.data_dir / "redis.pid").exists()
        await asyncio.to_thread(server.start)
        if not was_running or server._proc is not None:
            self._owned.append(server)
            log.info("embedded.redis_started", port=server.port)
        self.redis_url = server.url
        return self.redis_url

    async def close(self) -> None:
        """Stop the embedded servers this process started, newest first."""
        while self._owned:
            server = self._owned.pop()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(server.stop)
