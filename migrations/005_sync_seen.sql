-- =============================================================================
-- 005_sync_seen.sql — AI Chief of Staff: what a connector's full sync has seen
--
-- A connector can declare a full sync of a source (worker.client.begin_full_sync): every
-- item it sends during the sync is noted here, in the transaction that records the page's
-- jobs; at a successful end, the source's items that were not seen (and that no ingest
-- since the sync began wrote) are deleted. The sync's own state lives in ops.sync_cursors
-- (stream '@full-sync'); its rows here are removed when it ends or is abandoned.
-- * ops.sync_seen (workspace_id, source, sync_id, kind, external_id), RLS like the ledger:
--   members read, the service role writes.
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

CREATE TABLE IF NOT EXISTS ops.sync_seen (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id  uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  source        text NOT NULL,
  sync_id       uuid NOT NULL,
  kind          ops.ingestion_kind NOT NULL,
  external_id   text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),  -- when the sync saw it
  UNIQUE (sync_id, kind, external_id)
);
COMMENT ON TABLE ops.sync_seen IS
  'Items sent during a connector''s full sync (worker.client.begin_full_sync); the unseen are deleted at its end';
CREATE INDEX IF NOT EXISTS idx_sync_seen_workspace ON ops.sync_seen (workspace_id, source);

GRANT ALL ON ops.sync_seen TO service_role;
GRANT SELECT ON ops.sync_seen TO authenticated;
ALTER TABLE ops.sync_seen ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS sync_seen_all_service ON ops.sync_seen;
CREATE POLICY sync_seen_all_service ON ops.sync_seen
  FOR ALL TO service_role USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS sync_seen_select_member ON ops.sync_seen;
CREATE POLICY sync_seen_select_member ON ops.sync_seen
  FOR SELECT TO authenticated
  USING (workspace_id IN (SELECT authz.user_workspaces()));

-- =============================================================================
-- Record this migration
-- =============================================================================
INSERT INTO public.schema_migrations (version, name, checksum)
VALUES ('005', '005_sync_seen', NULL)
ON CONFLICT (version) DO NOTHING;

COMMIT;
