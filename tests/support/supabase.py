"""A Supabase-shaped PostgreSQL cluster, built on a real server (Supabase cannot run here).

What a Supabase project looks like to our migrations and the worker, as of 2025:

* the cluster superuser is ``supabase_admin``; ``postgres``, the role users log in as and
  run migrations with, is NOT a superuser (CREATEROLE, CREATEDB, BYPASSRLS), member of
  ``anon``, ``authenticated`` and ``service_role``;
* schema ``auth`` belongs to ``supabase_auth_admin`` and holds ``auth.users``,
  ``auth.uid()``, ``auth.jwt()``, ``auth.role()`` as Supabase defines them; ``postgres``
  has USAGE on it but not CREATE (since April 2025);
* extensions live in schema ``extensions`` (``vector`` among them), which is on the
  ``search_path`` of the database and of ``postgres``;
* roles ``anon``, ``authenticated``, ``service_role`` (BYPASSRLS) and ``authenticator``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from tests.support.servers import FAST_PG
from worker.servers.embedded import EmbeddedPostgres

SUPERUSER = "supabase_admin"


def run_sql(dsn: str, sql: str, *args: Any, fetch: bool = False) -> list[asyncpg.Record]:
    """Run SQL (``fetch``: one statement, its rows) on a short-lived connection, from sync
    or async code (its own thread and loop)."""

    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            if fetch or args:
                return list(await conn.fetch(sql, *args))
            await conn.execute(sql)
            return []
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


_ROLES = """
CREATE ROLE postgres LOGIN CREATEROLE CREATEDB BYPASSRLS;
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
CREATE ROLE authenticator LOGIN NOINHERIT;
CREATE ROLE supabase_auth_admin NOLOGIN NOINHERIT CREATEROLE;
GRANT anon, authenticated, service_role TO authenticator;
GRANT anon, authenticated, service_role TO postgres;
"""

# Run in the project database, as supabase_admin.
_DATABASE = """
ALTER DATABASE {db} OWNER TO postgres;
ALTER SCHEMA public OWNER TO postgres;

CREATE SCHEMA extensions;
GRANT USAGE ON SCHEMA extensions TO postgres, anon, authenticated, service_role;
CREATE EXTENSION vector SCHEMA extensions;
{optional_extensions}
ALTER DATABASE {db} SET search_path TO "$user", public, extensions;
ALTER ROLE postgres SET search_path TO "$user", public, extensions;

CREATE SCHEMA auth AUTHORIZATION supabase_auth_admin;
CREATE TABLE auth.users (
  id uuid PRIMARY KEY,
  email text,
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  created_at timestamptz DEFAULT now()
);
ALTER TABLE auth.users OWNER TO supabase_auth_admin;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;
CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;
ALTER FUNCTION auth.uid() OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.role() OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.jwt() OWNER TO supabase_auth_admin;
GRANT USAGE ON SCHEMA auth TO postgres, anon, authenticated, service_role;
GRANT SELECT ON auth.users TO postgres, service_role;
"""

# Supabase installs these in schema extensions for every project, where the server has them.
OPTIONAL_EXTENSIONS = ("pg_stat_statements", "pgcrypto", "uuid-ossp")


@dataclass
class SupabaseShaped:
    """A running Supabase-shaped cluster and its project database."""

    server: EmbeddedPostgres
    database: str = "postgres"

    def dsn(self, user: str = "postgres") -> str:
        """The project database as ``user`` (``postgres``: what users migrate with)."""
        return self.server.dsn(self.database, user=user)

    @property
    def admin_dsn(self) -> str:
        return self.server.dsn(self.database, user=SUPERUSER)

    def new_project(self, name: str) -> SupabaseShaped:
        """Another project database in the same cluster, shaped the same way."""
        run_sql(self.server.dsn("postgres", user=SUPERUSER), f'CREATE DATABASE "{name}"')
        _shape_database(self.server, name)
        return SupabaseShaped(self.server, name)


def _available(server: EmbeddedPostgres, db: str) -> set[str]:
    rows = run_sql(
        server.dsn(db, user=SUPERUSER),
        "SELECT name FROM pg_available_extensions WHERE name = ANY($1::text[])",
        list(OPTIONAL_EXTENSIONS),
    )
    return {r[0] for r in rows}


def _shape_database(server: EmbeddedPostgres, db: str) -> None:
    optional = "\n".join(
        f'CREATE EXTENSION "{name}" SCHEMA extensions;'
        for name in OPTIONAL_EXTENSIONS
        if name in _available(server, db)
    )
    sql = _DATABASE.format(db=f'"{db}"', optional_extensions=optional)
    run_sql(server.dsn(db, user=SUPERUSER), sql)


@contextmanager
def running_supabase_shaped(
    path: Path, *, bin_dir: Path | None = None, extra_conf: dict[str, str] | None = None
) -> Iterator[SupabaseShaped]:
    """A fresh cluster (``bin_dir``: which PostgreSQL) shaped like a Supabase project."""
    conf = {**FAST_PG, **(extra_conf or {})}
    server = EmbeddedPostgres(path, user=SUPERUSER, extra_conf=conf, bin_dir=bin_dir).start()
    try:
        run_sql(server.dsn("postgres", user=SUPERUSER), _ROLES)
        _shape_database(server, "postgres")
        yield SupabaseShaped(server)
    finally:
        server.stop(mode="immediate")
