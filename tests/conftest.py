"""Session-wide real servers: PostgreSQL 18 + pgvector (embedded wheel) and redis-server;
PostgreSQL 16 + pgvector 0.6 (pgserver wheel) for the tests marked ``pg16``.

Nothing here is mocked: each test session starts its own servers in a temp dir on free
ports and stops them at the end. Databases are cheap, so tests that change the schema
get a database of their own from ``new_database``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest

from tests.support.servers import running_postgres, running_postgres16, running_redis
from worker.servers.embedded import EmbeddedPostgres, EmbeddedRedis


def run_sql(dsn: str, sql: str) -> None:
    """Run SQL on a short-lived connection from synchronous fixtures."""

    async def _go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    # Callable from inside a running event loop (async tests use the factories below).
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _go()).result()


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    with running_postgres(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture(scope="session")
def pg16(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """PostgreSQL 16.2 + pgvector 0.6.2 (pgserver wheel), started on first use; tests that
    use it are marked ``pg16`` (see ``pytest_collection_modifyitems``)."""
    with running_postgres16(tmp_path_factory.mktemp("pg16")) as server:
        yield server


@pytest.fixture(scope="session")
def pg16_dsn(pg16: EmbeddedPostgres) -> str:
    """A superuser DSN to the PostgreSQL 16 cluster's ``postgres`` database."""
    return pg16.dsn()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``-m pg16`` selects every test that runs on the PostgreSQL 16 server."""
    for item in items:
        if "pg16" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.pg16)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def new_database(pg: EmbeddedPostgres) -> Iterator[Callable[[], str]]:
    """Factory for empty databases (dropped after the test); returns their DSN."""
    created: list[str] = []

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        run_sql(pg.dsn(), f'CREATE DATABASE "{name}" TEMPLATE template0')
        created.append(name)
        return pg.dsn(name)

    yield make
    for name in created:
        run_sql(pg.dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_dsn(pg: EmbeddedPostgres) -> str:
    """A database with every migration applied by the runner, shared by the session."""
    from worker.db.migrate import Migrator

    run_sql(pg.dsn(), 'CREATE DATABASE "cos_test"')
    dsn = pg.dsn("cos_test")
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, Migrator(dsn).up()).result()
    return dsn
