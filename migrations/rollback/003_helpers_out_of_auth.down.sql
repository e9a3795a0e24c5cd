-- =============================================================================
-- 003_helpers_out_of_auth.down.sql — undo 003_helpers_out_of_auth.sql
--
-- Deletes the '003' tracking row and nothing else. What 003 produces is the layout 002
-- itself creates now (helpers in authz, policies calling them, wrappers in auth where it
-- accepts CREATE), so it stays: going back to helpers in auth is impossible on Supabase
-- and would leave 002's own layout broken elsewhere. 002's down removes it all. Applying
-- 003 again after this changes nothing.
-- =============================================================================

BEGIN;

DO $t$
BEGIN
  IF to_regclass('public.schema_migrations') IS NOT NULL THEN
    DELETE FROM public.schema_migrations WHERE version = '003';
  END IF;
END
$t$;

COMMIT;
