"""Server-level setup: the application database on an embedded server.

Apart from ``pool.py`` because it runs before that database exists, on a connection to
the server's default database as the login role (``worker.servers.services`` calls it).
"""

from __future__ import annotations

import asyncpg

from worker.db.queries import Q


async def create_database(server_dsn: str, name: str) -> bool:
    """Create database ``name`` on the server at ``server_dsn`` unless it exists; True when
    this call created it. The name is quoted by the server (``quote_ident``): CREATE
    DATABASE takes no parameters."""
    conn = await asyncpg.connect(server_dsn)
    try:
        if await conn.fetchval(Q.database_exists, name):
            return False
        quoted = await conn.fetchval(Q.quote_ident, name)
        await conn.execute(Q.create_database.format(database=quoted))
        return True
    finally:
        await conn.close()
