-- =============================================================================
-- 004_document_chunks.down.sql — undo 004_document_chunks.sql
--
-- Drops media.media_chunks.metadata (the positions of document chunks are lost; the
-- chunks stay) and deletes the '004' tracking row.
-- Idempotent.
-- =============================================================================

BEGIN;

SET LOCAL client_min_messages = warning;

DO $t$
BEGIN
  IF to_regclass('media.media_chunks') IS NOT NULL THEN
    ALTER TABLE media.media_chunks DROP COLUMN IF EXISTS metadata;
  END IF;
  IF to_regclass('public.schema_migrations') IS NOT NULL THEN
    DELETE FROM public.schema_migrations WHERE version = '004';
  END IF;
END
$t$;

COMMIT;
