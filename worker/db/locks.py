"""Advisory-lock keys, defined once for Python and SQL.

The ``.sql`` files name these as ``@NAME@``; ``worker.db.queries`` substitutes the values
when it loads them, so a salt cannot drift between a query and the code that relies on it.
"""

from __future__ import annotations

#: ``hashtextextended(job_id::text, AGGREGATE_LOCK_SALT)``: serializes appends to one
#: aggregate's event stream (gap-free versions); the ledger statements take it too.
AGGREGATE_LOCK_SALT = 7
#: ``hashtextextended(item_key, ITEM_LOCK_SALT)``: serializes the final transactions of one
#: item (``store.item_lock_key``), so two versions cannot both pass the staleness check.
ITEM_LOCK_SALT = 11
#: ``hashtextextended(workspace_id || '|' || source, INTEGRATION_LOCK_SALT)``: serializes
#: finding-or-creating a source's ``core.integrations`` row (``worker.db.sync``).
INTEGRATION_LOCK_SALT = 13
#: ``pg_advisory_lock(MIGRATION_LOCK_KEY)``: every cos-worker migrator contends for this
#: session lock, so migrators racing at deploy time apply each file once (arbitrary, fixed).
MIGRATION_LOCK_KEY = 0x0C05_0001
#: ``pg_try_advisory_lock(MAINTENANCE_LOCK_KEY)``: single flight for maintenance passes
#: across workers; a pass that cannot take it is skipped (arbitrary, fixed).
MAINTENANCE_LOCK_KEY = 0x0C05_0002

SQL_CONSTANTS: dict[str, int] = {
    "AGGREGATE_LOCK_SALT": AGGREGATE_LOCK_SALT,
    "INTEGRATION_LOCK_SALT": INTEGRATION_LOCK_SALT,
    "ITEM_LOCK_SALT": ITEM_LOCK_SALT,
    "MAINTENANCE_LOCK_KEY": MAINTENANCE_LOCK_KEY,
    "MIGRATION_LOCK_KEY": MIGRATION_LOCK_KEY,
}
