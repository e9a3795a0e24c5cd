"""Real servers for tests: started in a temp dir, always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from worker.servers.embedded import EmbeddedPostgres, EmbeddedRedis

# Tests trade durability for speed; the benchmark keeps fsync on.
FAST_PG = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@contextmanager
def running_postgres(path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(path, extra_conf=dict(FAST_PG)).start()
    try:
        yield server
    finally:
        server.stop(mode="immediate")


@contextmanager
def running_redis(path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(path).start()
    try:
        yield server
    finally:
        server.stop()
