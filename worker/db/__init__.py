"""Everything that speaks SQL: the named queries (``sql/*.sql``), the pool, the ledger and
event store (the one owner of ``ops.ingestion_jobs`` and ``ops.events``), the write paths,
search, the migration runner."""
