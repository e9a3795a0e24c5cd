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

-- name: sync_full_state
-- A source's full sync (its state lives in ops.sync_cursors, stream '@full-sync'), locked
-- for the caller's transaction when it exists.
SELECT c.cursor
FROM ops.sync_cursors c
WHERE c.workspace_id = $1 AND c.integration_id = $2 AND c.stream = '@full-sync'
FOR UPDATE;

-- name: sync_full_set
INSERT INTO ops.sync_cursors AS c (workspace_id, integration_id, stream, cursor)
VALUES ($1, $2, '@full-sync', $3::jsonb)
ON CONFLICT (workspace_id, integration_id, stream) DO UPDATE
SET cursor = EXCLUDED.cursor, updated_at = now();

-- name: sync_mark_seen
-- The items a full sync's page carried ($4 kinds, $5 external ids, by position).
INSERT INTO ops.sync_seen (workspace_id, source, sync_id, kind, external_id)
SELECT $1, $2, $3, s.kind, s.external_id
FROM unnest($4::ops.ingestion_kind[], $5::text[]) AS s(kind, external_id)
ON CONFLICT (sync_id, kind, external_id) DO NOTHING;

-- name: sync_count_seen
SELECT count(*) FROM ops.sync_seen WHERE sync_id = $1;

-- name: sync_unseen_batch
-- The source's items that its full sync $3 (begun at $4) did not see, after the keyset
-- ($5, $6), at most $7: stored items (attachment documents are their messages', not the
-- source's items) whose stored version was written by a job recorded before the sync
-- began (an item a live ingest wrote meanwhile is not the sync's to judge).
WITH items AS (
  SELECT 'communication'::ops.ingestion_kind AS kind, c.external_id, c.ingestion_job_id
  FROM comms.communications c WHERE c.workspace_id = $1 AND c.source = $2
  UNION ALL
  SELECT 'transcript'::ops.ingestion_kind, t.external_id, t.ingestion_job_id
  FROM meetings.transcripts t WHERE t.workspace_id = $1 AND t.source = $2
  UNION ALL
  SELECT 'media'::ops.ingestion_kind, a.external_id, a.ingestion_job_id
  FROM media.assets a
  WHERE a.workspace_id = $1 AND a.source = $2 AND a.external_id NOT LIKE 'attachment:%'
)
SELECT i.kind::text AS kind, i.external_id
FROM items i LEFT JOIN ops.ingestion_jobs j ON j.id = i.ingestion_job_id
WHERE (j.queued_at IS NULL OR j.queued_at < $4)
  AND (i.kind, i.external_id) > ($5::ops.ingestion_kind, $6::text)
  AND NOT EXISTS (SELECT 1 FROM ops.sync_seen s
                  WHERE s.sync_id = $3 AND s.kind = i.kind AND s.external_id = i.external_id)
ORDER BY i.kind, i.external_id
LIMIT $7;

-- name: sync_forget_seen
-- A finished or abandoned sync's seen rows, a batch at a time.
DELETE FROM ops.sync_seen x
WHERE x.id IN (SELECT id FROM ops.sync_seen WHERE sync_id = $1 LIMIT $2)
RETURNING x.id;
