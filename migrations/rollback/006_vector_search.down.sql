-- =============================================================================
-- 006_vector_search.down.sql — undo 006_vector_search.sql
--
-- Drops public.search_memory and the chunk tables' content_tsv (their full-text indexes
-- go back onto the expression), and gives idx_comms_embedding, idx_chunks_embedding and
-- idx_media_chunks_embedding back their seed definition (vector HNSW, cosine, m 16,
-- ef_construction 64): a full HNSW build of every embedded row (~33 s per 100k rows on
-- 2 cores, writes to the table wait for it). Deletes the '006' tracking row.
-- Idempotent.
-- =============================================================================

BEGIN;

SET LOCAL client_min_messages = warning;

DROP FUNCTION IF EXISTS public.search_memory(uuid, vector, text, integer, text[], text[],
  timestamptz, timestamptz, uuid);

DO $idx$
DECLARE
  ext_schema text;
  t record;
  rows_now bigint;
BEGIN
  SELECT n.nspname INTO ext_schema
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
  WHERE e.extname = 'vector';
  FOR t IN
    SELECT * FROM (VALUES
      ('comms', 'communications', 'idx_comms_embedding'),
      ('meetings', 'transcript_chunks', 'idx_chunks_embedding'),
      ('media', 'media_chunks', 'idx_media_chunks_embedding')) AS v (nsp, tbl, idx)
  LOOP
    CONTINUE WHEN NOT EXISTS (
      SELECT 1 FROM pg_indexes
      WHERE schemaname = t.nsp AND indexname = t.idx AND indexdef LIKE '%binary_quantize%');
    EXECUTE format('DROP INDEX %I.%I', t.nsp, t.idx);
    EXECUTE format(
      'CREATE INDEX %I ON %I.%I USING hnsw (embedding %I.vector_cosine_ops) '
      'WITH (m = 16, ef_construction = 64)', t.idx, t.nsp, t.tbl, ext_schema);
    EXECUTE format('SELECT count(*) FROM %I.%I WHERE embedding IS NOT NULL', t.nsp, t.tbl)
      INTO rows_now;
    UPDATE ops.index_builds
    SET rows_at_build = rows_now, built_at = now(), reason = 'rollback of 006: seed HNSW',
        updated_at = now()
    WHERE index_name = t.nsp || '.' || t.idx;
  END LOOP;
END
$idx$;

-- full text back on the expression (dropping the column drops its index)
DO $fts$
DECLARE
  t record;
BEGIN
  FOR t IN
    SELECT * FROM (VALUES
      ('meetings', 'transcript_chunks', 'idx_chunks_content_fts'),
      ('media', 'media_chunks', 'idx_media_chunks_content_fts')) AS v (nsp, tbl, idx)
  LOOP
    CONTINUE WHEN to_regclass(format('%I.%I', t.nsp, t.tbl)) IS NULL;  -- 001 rolled back
    EXECUTE format('ALTER TABLE %I.%I DROP COLUMN IF EXISTS content_tsv', t.nsp, t.tbl);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I '
                   'USING gin (to_tsvector(''english''::regconfig, content))', t.idx, t.nsp, t.tbl);
  END LOOP;
END
$fts$;

DO $t$
BEGIN
  IF to_regclass('public.schema_migrations') IS NOT NULL THEN
    DELETE FROM public.schema_migrations WHERE version = '006';
  END IF;
END
$t$;

COMMIT;
