-- =============================================================================
-- 001_initial_schema.down.sql — undo 001_initial_schema.sql
--
-- WARNING: deletes all data. Drops the 7 schemas with everything in them (tables,
-- enums, views, functions, triggers, indexes; policies go with their tables) and the
-- '001' tracking row. Apply 002's down first (it drops the auth helpers, which
-- depend on core.role_type / core tables; CASCADE would otherwise remove them too).
--
-- Kept: extensions (vector, pgcrypto, uuid-ossp, pg_stat_statements may be used by
-- others) and public.schema_migrations (shared with the runner).
-- =============================================================================

BEGIN;

SET LOCAL client_min_messages = warning;

DROP SCHEMA IF EXISTS intel CASCADE;
DROP SCHEMA IF EXISTS work CASCADE;
DROP SCHEMA IF EXISTS media CASCADE;
DROP SCHEMA IF EXISTS meetings CASCADE;
DROP SCHEMA IF EXISTS comms CASCADE;
DROP SCHEMA IF EXISTS ops CASCADE;
DROP SCHEMA IF EXISTS core CASCADE;

-- DROP EXTENSION IF EXISTS vector;   -- only if nothing else uses it

DO $t$
BEGIN
  IF to_regclass('public.schema_migrations') IS NOT NULL THEN
    DELETE FROM public.schema_migrations WHERE version = '001';
  END IF;
END
$t$;

COMMIT;
