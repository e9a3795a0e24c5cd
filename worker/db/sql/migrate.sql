-- The migration runner's own statements (worker/db/migrate.py), run on a dedicated
-- connection as the DSN's login role, before (and while) the schema exists: none of them
-- is prepared on the worker's pool (Queries.plain() takes queries.sql only).

-- name: migrate_lock
-- Session lock for the whole run: migrators racing at deploy time apply each file once
-- (the loser waits, then finds nothing left to do). Closing the connection releases it.
SELECT pg_advisory_lock(@MIGRATION_LOCK_KEY@);

-- name: migrate_ensure_table
-- The runner's bookkeeping table. Migration files insert their own row (so they also work
-- with psql -f); the runner adds checksum and execution_ms. A row recorded by psql has no
-- checksum yet: the runner adopts the file's current one (migrate_adopt_checksum).
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    version      text PRIMARY KEY,
    name         text NOT NULL,
    checksum     text,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    applied_by   text DEFAULT current_user,
    execution_ms integer
);

-- name: migrate_table_exists
-- False on a database no migration has touched yet (status must not create the table).
SELECT to_regclass('public.schema_migrations') IS NOT NULL;

-- name: migrate_applied
SELECT version, name, checksum, applied_at FROM public.schema_migrations;

-- name: migrate_adopt_checksum
-- Record the checksum (and duration, when the runner applied the file) of a row that has
-- none: the row the file just inserted, or one recorded by psql. A row that already has a
-- checksum is left alone (a different one was refused as drift before this runs).
UPDATE public.schema_migrations
SET checksum = $2, execution_ms = coalesce($3, execution_ms)
WHERE version = $1 AND checksum IS NULL;

-- name: migrate_rollback
-- A file carries its own BEGIN/COMMIT: when one of its statements fails, the transaction
-- it opened is still open (aborted) on the connection; end it before reporting.
ROLLBACK;

-- name: migrate_supersede_checksum
-- A row applied from a released file that was later edited on purpose (migrate.SUPERSEDED):
-- it takes the current file's checksum; the migration named there brings the database
-- forward.
UPDATE public.schema_migrations SET checksum = $2 WHERE version = $1 AND checksum = $3;
