"""What the server can do, read once per run, so maintenance adapts instead of failing.

The project supports PostgreSQL 15-18 and pgvector 0.6-0.8, with or without
``pg_stat_statements``, and maintenance may run as a superuser or as a plain owner.
Statements that name a feature the server lacks fail outright (``has_table_privilege(...,
'MAINTAIN')`` on 16: ``unrecognized privilege type``), so every phase asks this record
first, and what a phase leaves out is said in the report with the reason.

* **Who may maintain a table.** ``MAINTAIN`` (and ``pg_maintain``) exist from 17; before,
  ANALYZE needs ownership of the table or of the database (or superuser) and REINDEX
  ownership of the table (or superuser). From 17, MAINTAIN decides, and the database
  owner may still ANALYZE. Ownership means the privileges of the owning role
  (``pg_has_role(owner, 'USAGE')``, true for a superuser), as the server checks it.
* **pg_stat_statements**: whether the server has it at all, whether this database has it
  installed (and its version: the view's columns differ), whether it is preloaded
  (``shared_preload_libraries``; unknown, ``None``, when the role may not read that
  setting: the scan then finds out).
* **pgvector**: its version, and the features that depend on it: ``halfvec`` (0.7) and
  iterative index scans (0.8). The recall probe queries a binary-quantized index as
  search does on this version (``relaxed_order`` and 100 candidates on 0.8, 150 before);
  ``halfvec`` is only reported (the size estimate reads a column's type if one exists).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from worker.db.queries import Q

MAINTAIN_SINCE = 170000  # server_version_num of PostgreSQL 17
HALFVEC_SINCE = (0, 7)
ITERATIVE_SCAN_SINCE = (0, 8)
_VERSION = re.compile(r"^(\d+)\.(\d+)")


def version_tuple(version: str | None) -> tuple[int, int] | None:
    """``"0.6.2"`` -> ``(0, 6)``; ``None`` for a missing or unparseable version."""
    match = _VERSION.match(version or "")
    return (int(match[1]), int(match[2])) if match else None


def preloaded(setting: str | None, library: str) -> bool | None:
    """Whether ``library`` is in a ``shared_preload_libraries`` value; ``None`` when the
    value could not be read. Entries may be quoted, spaced or paths (``$libdir/x.so``)."""
    if setting is None:
        return None
    for entry in setting.split(","):
        name = entry.strip().strip('"').rsplit("/", 1)[-1].removesuffix(".so")
        if name == library:
            return True
    return False


@dataclass(frozen=True)
class Capabilities:
    """The server, the login role and the extensions, as maintenance needs them."""

    server_version_num: int
    server_version: str
    login_role: str
    superuser: bool
    pgvector_version: str | None
    pg_stat_statements_available: bool  # the server has the extension's files
    pg_stat_statements_version: str | None  # installed in this database
    pg_stat_statements_schema: str | None
    pg_stat_statements_preloaded: bool | None

    @property
    def maintain_privilege(self) -> bool:
        """The server knows ``MAINTAIN`` (17+); before, ownership decides."""
        return self.server_version_num >= MAINTAIN_SINCE

    @property
    def major(self) -> int:
        return self.server_version_num // 10000

    def _pgvector_at_least(self, since: tuple[int, int]) -> bool:
        found = version_tuple(self.pgvector_version)
        return found is not None and found >= since

    @property
    def halfvec(self) -> bool:
        return self._pgvector_at_least(HALFVEC_SINCE)

    @property
    def iterative_index_scans(self) -> bool:
        return self._pgvector_at_least(ITERATIVE_SCAN_SINCE)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "maintain_privilege": self.maintain_privilege,
            "pgvector_halfvec": self.halfvec,
            "pgvector_iterative_index_scans": self.iterative_index_scans,
        }


async def detect(conn: asyncpg.Connection) -> Capabilities:
    """Read the capabilities on the maintenance connection (its login role)."""
    r = await conn.fetchrow(Q.maintenance_capabilities)
    return Capabilities(
        server_version_num=int(r["server_version_num"]),
        server_version=r["server_version"],
        login_role=r["login_role"],
        superuser=bool(r["superuser"]),
        pgvector_version=r["pgvector_version"],
        pg_stat_statements_available=bool(r["pgss_available"]),
        pg_stat_statements_version=r["pgss_version"],
        pg_stat_statements_schema=r["pgss_schema"],
        pg_stat_statements_preloaded=preloaded(r["preload_libraries"], "pg_stat_statements"),
    )


DROP_NEEDS_OWNER = (
    "dropping an index needs ownership of its table, or superuser, on every PostgreSQL version "
    "(MAINTAIN does not grant it); the login role does not own it"
)


@dataclass(frozen=True)
class Access:
    """May the login role maintain this table; if not, a reason code and why, in words."""

    allowed: bool
    reason: str | None = None
    why: str | None = None


ALLOWED = Access(True)


def _no_schema_usage(caps: Capabilities) -> Access:
    return Access(
        False,
        "no_schema_usage",
        f"role {caps.login_role} may maintain the table but has no USAGE on its schema, "
        "so it cannot name it (GRANT USAGE ON SCHEMA)",
    )


def analyze_access(
    caps: Capabilities,
    *,
    has_maintain: bool | None,
    owns_table: bool,
    owns_database: bool,
    schema_usage: bool = True,
) -> Access:
    """ANALYZE: MAINTAIN (17+) or ownership (before), or ownership of the database."""
    if owns_database or (has_maintain if caps.maintain_privilege else owns_table):
        return ALLOWED if schema_usage else _no_schema_usage(caps)
    if caps.maintain_privilege:
        return Access(
            False,
            "no_maintain_privilege",
            f"role {caps.login_role} has no MAINTAIN privilege on the table and does not own "
            "the database (GRANT pg_maintain, or MAINTAIN on the table)",
        )
    return Access(
        False,
        "not_owner",
        f"PostgreSQL {caps.server_version} has no MAINTAIN privilege (17+): ANALYZE needs "
        f"ownership of the table or the database, or superuser; role {caps.login_role} has none",
    )


def reindex_access(
    caps: Capabilities, *, has_maintain: bool | None, owns_table: bool, schema_usage: bool = True
) -> Access:
    """REINDEX: MAINTAIN (17+) or ownership of the table (before); the database owner may not."""
    if has_maintain if caps.maintain_privilege else owns_table:
        return ALLOWED if schema_usage else _no_schema_usage(caps)
    if caps.maintain_privilege:
        return Access(
            False,
            "no_maintain_privilege",
            f"role {caps.login_role} has no MAINTAIN privilege on the table "
            "(GRANT pg_maintain, or MAINTAIN on the table)",
        )
    return Access(
        False,
        "not_owner",
        f"PostgreSQL {caps.server_version} has no MAINTAIN privilege (17+): REINDEX needs "
        f"ownership of the table, or superuser; role {caps.login_role} does not own it",
    )
