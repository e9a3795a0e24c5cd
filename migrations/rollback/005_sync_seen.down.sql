-- =============================================================================
-- 005_sync_seen.down.sql — undo 005_sync_seen.sql
--
-- Drops ops.sync_seen (a full sync in progress then ends without deleting what it did
-- not see) and deletes the '005' tracking row.
-- Idempotent.
-- =============================================================================

BEGIN;

SET LOCAL client_min_messages = warning;

DROP TABLE IF EXISTS ops.sync_seen;

DO $t$
BEGIN
  IF to_regclass('public.schema_migrations') IS NOT NULL THEN
    DELETE FROM public.schema_migrations WHERE version = '005';
  END IF;
END
$t$;

COMMIT;
