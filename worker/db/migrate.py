"""The migration runner behind ``cos-worker migrate``.

Migration files are plain SQL that also work with ``psql -f``: each wraps itself in
BEGIN/COMMIT and records its own row in ``public.schema_migrations``. The runner adds
what psql cannot:

* a session advisory lock, so migrators racing at deploy time apply each file once
  (the loser waits, then finds nothing left to do);
* checksums: an applied file whose content changed is refused with a clear error
  (a row recorded by psql has no checksum yet; the runner adopts the current one);
* ``down --to VERSION`` using ``migrations/rollback/NNN_name.down.sql``.

The runner's own statements (the lock, ``MIGRATION_LOCK_KEY`` in ``worker.db.locks``, and
the bookkeeping table) are named queries in ``worker/db/sql/migrate.sql``; it needs only
a DSN (loading the queries touches no database).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

from worker.core.settings import REPO_ROOT
from worker.db.queries import Q

log = structlog.get_logger(__name__)

FILE_PATTERN = re.compile(r"^(?P<version>\d{3,})_(?P<name>[a-z0-9_]+)\.sql$")

# Checksums of released migration files that were edited afterwards on purpose. A row
# applied from one of them is not drift: it takes the current checksum (and where the
# edit changes the result, a later migration brings the database to it):
# * 001 created pg_stat_statements whenever the server had it, which fails for a
#   migrating role that is not a superuser; it now skips an optional extension it may
#   not install (a database the first 001 built is the same);
# * 002 created its RLS helpers in schema auth, which Supabase no longer lets projects
#   do; it now creates them in schema authz, and 003 moves a database the first 002 built.
SUPERSEDED: dict[str, frozenset[str]] = {
    "001": frozenset({"8da4da896546168dbfbf89f3cb455c7803ddc1a9e7ce7e7faed09f369973c869"}),
    "002": frozenset({"255c04f0b3fbf8af0a13d1e754af6137562c8363add66cb46cabd52f568593f9"}),
}


class MigrationError(RuntimeError):
    """A migration cannot be applied or rolled back; the message says why."""


@dataclass(frozen=True)
class MigrationFile:
    version: str
    name: str
    path: Path
    checksum: str
    down_path: Path | None

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class MigrationState:
    version: str
    name: str
    state: str  # "applied" | "pending" | "drifted" | "missing-file"
    applied_at: str | None = None


def file_checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _drifted(mf: MigrationFile, row: asyncpg.Record) -> bool:
    """The applied row's checksum is neither none (psql), the file's, nor superseded."""
    checksum = row["checksum"]
    return (
        checksum is not None
        and checksum != mf.checksum
        and (checksum not in SUPERSEDED.get(mf.version, ()))
    )


def discover(directory: Path) -> list[MigrationFile]:
    """The migration files in version order, each with its rollback script if present."""
    found: list[MigrationFile] = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_PATTERN.match(path.name)
        if not match:
            continue
        down = directory / "rollback" / f"{path.stem}.down.sql"
        found.append(
            MigrationFile(
                version=match["version"],
                name=path.stem,
                path=path,
                checksum=file_checksum(path),
                down_path=down if down.exists() else None,
            )
        )
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"duplicate migration versions in {directory}")
    return found


class Migrator:
    """Applies and rolls back the SQL files in ``directory`` against ``dsn``."""

    def __init__(self, dsn: str, directory: Path | None = None) -> None:
        self.dsn = dsn
        self.directory = directory or REPO_ROOT / "migrations"

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.dsn, server_settings={"application_name": "cos-migrate"})
        return conn

    async def _applied(self, conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
        if not await conn.fetchval(Q.migrate_table_exists):
            return {}
        return {r["version"]: r for r in await conn.fetch(Q.migrate_applied)}

    async def status(self) -> list[MigrationState]:
        files = discover(self.directory)
        conn = await self._connect()
        try:
            applied = await self._applied(conn)
        finally:
            await conn.close()
        states: list[MigrationState] = []
        for mf in files:
            row = applied.pop(mf.version, None)
            if row is None:
                states.append(MigrationState(mf.version, mf.name, "pending"))
                continue
            drifted = _drifted(mf, row)
            states.append(
                MigrationState(
                    mf.version,
                    mf.name,
                    "drifted" if drifted else "applied",
                    row["applied_at"].isoformat(),
                )
            )
        for version, row in sorted(applied.items()):
            states.append(
                MigrationState(version, row["name"], "missing-file", row["applied_at"].isoformat())
            )
        return states

    @staticmethod
    def _check_drift(mf: MigrationFile, row: asyncpg.Record) -> None:
        if _drifted(mf, row):
            raise MigrationError(
                f"migration {mf.name} was applied with checksum {row['checksum'][:12]}… but the "
                f"file now has {mf.checksum[:12]}…: applied migrations must not change; "
                "add a new migration instead"
            )

    async def up(self, target: str | None = None) -> list[str]:
        """Apply pending migrations (up to ``target``); returns the versions applied."""
        files = discover(self.directory)
        conn = await self._connect()
        applied_now: list[str] = []
        try:
            await conn.execute(Q.migrate_lock)
            await conn.execute(Q.migrate_ensure_table)
            applied = await self._applied(conn)
            for mf in files:
                if target is not None and mf.version > target:
                    break
                row = applied.get(mf.version)
                if row is not None:
                    self._check_drift(mf, row)
                    if row["checksum"] in SUPERSEDED.get(mf.version, ()):
                        await conn.execute(
                            Q.migrate_supersede_checksum, mf.version, mf.checksum, row["checksum"]
                        )
                        log.info("migrate.superseded", version=mf.version, name=mf.name)
                    await conn.execute(Q.migrate_adopt_checksum, mf.version, mf.checksum, None)
                    continue
                started = time.perf_counter()
                try:
                    # The file carries its own BEGIN/COMMIT: one transaction per file.
                    await conn.execute(mf.sql)
                except asyncpg.PostgresError as exc:
                    if not conn.is_closed():
                        await conn.execute(Q.migrate_rollback)
                    raise MigrationError(f"{mf.name} failed: {exc}") from exc
                elapsed = int((time.perf_counter() - started) * 1000)
                await conn.execute(Q.migrate_adopt_checksum, mf.version, mf.checksum, elapsed)
                applied_now.append(mf.version)
                log.info("migrate.applied", version=mf.version, name=mf.name, ms=elapsed)
        finally:
            if not conn.is_closed():
                await conn.close()  # releases the session advisory lock
        return applied_now

    async def down(self, to: str) -> list[str]:
        """Roll back applied migrations newer than ``to`` (``"0"`` rolls back all)."""
        files = {m.version: m for m in discover(self.directory)}
        conn = await self._connect()
        rolled_back: list[str] = []
        try:
            await conn.execute(Q.migrate_lock)
            applied = await self._applied(conn)
            for version in sorted(applied, reverse=True):
                if version <= to:
                    break
                mf = files.get(version)
                if mf is None or mf.down_path is None:
                    raise MigrationError(f"no rollback script for applied migration {version}")
                try:
                    await conn.execute(mf.down_path.read_text(encoding="utf-8"))
                except asyncpg.PostgresError as exc:
                    if not conn.is_closed():
                        await conn.execute(Q.migrate_rollback)
                    raise MigrationError(f"rollback of {mf.name} failed: {exc}") from exc
                rolled_back.append(version)
                log.info("migrate.rolled_back", version=version, name=mf.name)
        finally:
            if not conn.is_closed():
                await conn.close()
        return rolled_back
