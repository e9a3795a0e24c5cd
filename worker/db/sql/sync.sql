-- A connector's sync state (worker/db/sync.py): its source's integration row and cursors.

-- name: sync_find_integration
-- The source's integration (core.integrations: provider = the payloads' source), under a
-- lock on (workspace, source) so two connectors starting at once make one row.
SELECT pg_advisory_xact_lock(
         hashtextextended($1::uuid::text || '|' || $2::text, @INTEGRATION_LOCK_SALT@)),
       (SELECT i.id FROM core.integrations i
        WHERE i.workspace_id = $1::uuid AND i.provider = $2::text
        ORDER BY i.created_at, i.id LIMIT 1) AS id;

-- name: sync_create_integration
INSERT INTO core.integrations (workspace_id, provider) VALUES ($1, $2) RETURNING id;

-- name: sync_advance_cursor
-- The cursor moves past a page whose jobs this transaction recorded; the integration is
-- active and synced now.
WITH moved AS (
  INSERT INTO ops.sync_cursors AS c (workspace_id, integration_id, stream, cursor, last_synced_at)
  VALUES ($1, $2, $3, $4::jsonb, now())
  ON CONFLICT (workspace_id, integration_id, stream) DO UPDATE
  SET cursor = EXCLUDED.cursor, last_synced_at = now(), updated_at = now()
  RETURNING c.id
)
UPDATE core.integrations i
SET status = 'active', last_synced_at = now(), last_error = NULL, updated_at = now()
WHERE i.workspace_id = $1 AND i.id = $2 AND EXISTS (SELECT 1 FROM moved);

-- name: sync_read_cursor
SELECT c.cursor
FROM ops.sync_cursors c JOIN core.integrations i
  ON i.workspace_id = c.workspace_id AND i.id = c.integration_id
WHERE c.workspace_id = $1 AND i.provider = $2 AND c.stream = $3
ORDER BY i.created_at, i.id LIMIT 1;

-- name: sync_record_error
-- A sync that failed: the integration says so until a page's cursor moves again.
UPDATE core.integrations
SET status = 'error', last_error = $3, updated_at = now()
WHERE workspace_id = $1 AND id = $2;

-- name: sync_integrations
-- Each source's status, last successful sync and last error (cos-worker status, tests).
SELECT i.provider AS source, i.status::text AS status, i.last_synced_at, i.last_error,
       coalesce(jsonb_object_agg(c.stream, c.cursor) FILTER (WHERE c.stream IS NOT NULL),
                '{}') AS cursors
FROM core.integrations i
LEFT JOIN ops.sync_cursors c ON c.workspace_id = i.workspace_id AND c.integration_id = i.id
WHERE i.workspace_id = $1
GROUP BY i.id ORDER BY i.provider;
