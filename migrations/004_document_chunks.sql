-- =============================================================================
-- 004_document_chunks.sql — AI Chief of Staff: where a document chunk came from
--
-- Documents (PDF, DOCX, PPTX, XLSX, HTML, Markdown) become media.assets with
-- media.media_chunks, like recordings; a recording's chunk is placed by start_ms/end_ms,
-- a document's by page, slide, sheet or heading. This migration gives media chunks a
-- metadata column that holds it: {"position": {"page": 3}}, and likewise {"pages": [3, 4]},
-- {"slide": 2}, {"sheet": "Q3"}, {"heading": "Pricing"}; existing rows get '{}'.
-- * media.media_chunks.metadata jsonb NOT NULL DEFAULT '{}' (a constant default: no
--   table rewrite on PostgreSQL 11+).
-- Idempotent. Plain SQL only.
-- =============================================================================

BEGIN;

SET LOCAL client_min_messages = warning;

CREATE TABLE IF NOT EXISTS public.schema_migrations (
  version      text PRIMARY KEY,
  name         text NOT NULL,
  checksum     text,
  applied_at   timestamptz NOT NULL DEFAULT now(),
  applied_by   text DEFAULT current_user,
  execution_ms int
);

ALTER TABLE media.media_chunks
  ADD COLUMN IF NOT EXISTS metadata jsonb NOT NULL DEFAULT '{}';
COMMENT ON COLUMN media.media_chunks.metadata IS
  'About the chunk; "position": where it is in its document ({"page": n}, {"pages": [first, last]}, {"slide": n}, {"sheet": name}, {"heading": text})';

-- =============================================================================
-- Record this migration
-- =============================================================================
INSERT INTO public.schema_migrations (version, name, checksum)
VALUES ('004', '004_document_chunks', NULL)
ON CONFLICT (version) DO NOTHING;

COMMIT;
