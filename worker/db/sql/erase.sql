-- Erasure of a scope: a whole workspace, or one source of it (an integration disconnected)
-- (worker/db/erase.py; the ledger rows and the scope.erased event: worker/db/ledger/
-- erasure.py). Every statement deletes at most $3 (source) / $2 (workspace) parent rows and
-- commits on its own, so no lock is held long; each one recomputes what is left of the
-- scope, so a run cut anywhere is finished by running it again. Not prepared on the
-- worker's pool (Queries.plain() takes queries.sql only): the CLI runs them.

-- name: erase_source_contacts
-- Contacts that only the source's items reference ($1 workspace, $2 source, $3 batch):
-- seen as a participant of its messages or meetings, and of nothing else (another source's
-- message or meeting, a work item's assignee, an action item's owner). Deleted first, while
-- the scope's participant rows still say whose they are (a re-run recomputes the rest).
WITH scoped AS (
  SELECT p.contact_id AS id FROM comms.participants p
  JOIN comms.communications c ON c.workspace_id = p.workspace_id AND c.id = p.communication_id
  WHERE p.workspace_id = $1 AND c.source = $2 AND p.contact_id IS NOT NULL
  UNION
  SELECT p.contact_id FROM meetings.participants p
  JOIN meetings.meetings m ON m.workspace_id = p.workspace_id AND m.id = p.meeting_id
  WHERE p.workspace_id = $1 AND m.source = $2 AND p.contact_id IS NOT NULL
), batch AS (
  SELECT s.id FROM scoped s
  WHERE NOT EXISTS (
      SELECT 1 FROM comms.participants p
      JOIN comms.communications c ON c.workspace_id = p.workspace_id AND c.id = p.communication_id
      WHERE p.workspace_id = $1 AND p.contact_id = s.id AND c.source <> $2)
    AND NOT EXISTS (
      SELECT 1 FROM meetings.participants p
      JOIN meetings.meetings m ON m.workspace_id = p.workspace_id AND m.id = p.meeting_id
      WHERE p.workspace_id = $1 AND p.contact_id = s.id AND m.source <> $2)
    AND NOT EXISTS (
      SELECT 1 FROM work.work_items w WHERE w.workspace_id = $1 AND w.assignee_contact_id = s.id)
    AND NOT EXISTS (
      SELECT 1 FROM meetings.action_items a
      JOIN meetings.meetings m ON m.workspace_id = a.workspace_id AND m.id = a.meeting_id
      WHERE a.workspace_id = $1 AND a.owner_contact_id = s.id AND m.source <> $2)
  LIMIT $3
)
DELETE FROM core.contacts c USING batch b WHERE c.workspace_id = $1 AND c.id = b.id;

-- name: erase_source_transcript_chunks
-- A batch of the chunks of the source's transcripts (a long meeting has thousands).
DELETE FROM meetings.transcript_chunks x
WHERE x.id IN (
  SELECT k.id FROM meetings.transcript_chunks k
  JOIN meetings.transcripts t ON t.workspace_id = k.workspace_id AND t.id = k.transcript_id
  WHERE k.workspace_id = $1 AND t.source = $2 LIMIT $3);

-- name: erase_source_media_chunks
DELETE FROM media.media_chunks x
WHERE x.id IN (
  SELECT k.id FROM media.media_chunks k
  JOIN media.assets a ON a.workspace_id = k.workspace_id AND a.id = k.asset_id
  WHERE k.workspace_id = $1 AND a.source = $2 LIMIT $3);

-- name: erase_source_communications
-- A batch of the source's messages with their participants, attachments and asset links
-- (the FKs cascade; deleted here to count them); returns the counts and the threads that
-- lost messages.
WITH batch AS (
  SELECT id FROM comms.communications WHERE workspace_id = $1 AND source = $2 LIMIT $3
), p AS (
  DELETE FROM comms.participants x USING batch b
  WHERE x.workspace_id = $1 AND x.communication_id = b.id RETURNING 1
), a AS (
  DELETE FROM comms.attachments x USING batch b
  WHERE x.workspace_id = $1 AND x.communication_id = b.id RETURNING 1
), l AS (
  DELETE FROM media.asset_links x USING batch b
  WHERE x.workspace_id = $1 AND x.communication_id = b.id RETURNING 1
), c AS (
  DELETE FROM comms.communications x USING batch b
  WHERE x.workspace_id = $1 AND x.id = b.id RETURNING x.thread_id
)
SELECT (SELECT count(*) FROM c) AS communications, (SELECT count(*) FROM p) AS participants,
       (SELECT count(*) FROM a) AS attachments, (SELECT count(*) FROM l) AS asset_links,
       (SELECT array_agg(DISTINCT thread_id) FROM c WHERE thread_id IS NOT NULL) AS threads;

-- name: erase_source_assets
-- A batch of the source's assets (attachment documents included: their external id is
-- the file's hash, their source the message's) with their links (chunks went before).
WITH batch AS (
  SELECT id FROM media.assets WHERE workspace_id = $1 AND source = $2 LIMIT $3
), l AS (
  DELETE FROM media.asset_links x USING batch b
  WHERE x.workspace_id = $1 AND x.asset_id = b.id RETURNING 1
), d AS (
  DELETE FROM media.assets x USING batch b WHERE x.workspace_id = $1 AND x.id = b.id RETURNING 1
)
SELECT (SELECT count(*) FROM d) AS assets, (SELECT count(*) FROM l) AS asset_links;

-- name: erase_source_meetings
-- A batch of the source's meetings with their participants, transcripts (chunks went
-- before), action items and asset links.
WITH batch AS (
  SELECT id FROM meetings.meetings WHERE workspace_id = $1 AND source = $2 LIMIT $3
), p AS (
  DELETE FROM meetings.participants x USING batch b
  WHERE x.workspace_id = $1 AND x.meeting_id = b.id RETURNING 1
), t AS (
  DELETE FROM meetings.transcripts x USING batch b
  WHERE x.workspace_id = $1 AND x.meeting_id = b.id RETURNING 1
), a AS (
  DELETE FROM meetings.action_items x USING batch b
  WHERE x.workspace_id = $1 AND x.meeting_id = b.id RETURNING 1
), l AS (
  DELETE FROM media.asset_links x USING batch b
  WHERE x.workspace_id = $1 AND x.meeting_id = b.id RETURNING 1
), m AS (
  DELETE FROM meetings.meetings x USING batch b WHERE x.workspace_id = $1 AND x.id = b.id
  RETURNING 1
)
SELECT (SELECT count(*) FROM m) AS meetings, (SELECT count(*) FROM p) AS participants,
       (SELECT count(*) FROM t) AS transcripts, (SELECT count(*) FROM a) AS action_items,
       (SELECT count(*) FROM l) AS asset_links;

-- name: erase_source_transcripts
-- Transcripts of the source whose meeting is another source's (none is written so: kept
-- for completeness).
DELETE FROM meetings.transcripts x
WHERE x.id IN (SELECT id FROM meetings.transcripts WHERE workspace_id = $1 AND source = $2
               LIMIT $3);

-- name: erase_source_threads
-- The source's threads that no message is left in.
DELETE FROM comms.threads x
WHERE x.id IN (
  SELECT t.id FROM comms.threads t
  WHERE t.workspace_id = $1 AND t.source = $2
    AND NOT EXISTS (SELECT 1 FROM comms.communications c
                    WHERE c.workspace_id = t.workspace_id AND c.thread_id = t.id)
  LIMIT $3);

-- name: erase_recount_threads
-- Threads ($2) of the workspace ($1) that lost messages but keep some: counters recounted.
UPDATE comms.threads t
SET message_count = s.n, first_at = s.first_at, last_at = s.last_at
FROM unnest($2::uuid[]) AS k(id)
CROSS JOIN LATERAL (
  SELECT count(*) AS n, min(c.sent_at) AS first_at, max(c.sent_at) AS last_at
  FROM comms.communications c WHERE c.workspace_id = $1 AND c.thread_id = k.id) s
WHERE t.workspace_id = $1 AND t.id = k.id AND s.n > 0;

-- name: erase_source_integrations
-- The source's integration rows (provider = the source name): their account and config
-- go, with their sync cursors, the channels tied to them and what its full syncs saw.
WITH i AS (
  SELECT id FROM core.integrations WHERE workspace_id = $1 AND provider = $2
), ch AS (
  DELETE FROM comms.channels x USING i WHERE x.workspace_id = $1 AND x.integration_id = i.id
  RETURNING 1
), cur AS (
  DELETE FROM ops.sync_cursors x USING i WHERE x.workspace_id = $1 AND x.integration_id = i.id
  RETURNING 1
), seen AS (
  DELETE FROM ops.sync_seen x WHERE x.workspace_id = $1 AND x.source = $2 RETURNING 1
), d AS (
  DELETE FROM core.integrations x USING i WHERE x.workspace_id = $1 AND x.id = i.id RETURNING 1
)
SELECT (SELECT count(*) FROM d) AS integrations, (SELECT count(*) FROM ch) AS channels,
       (SELECT count(*) FROM cur) AS sync_cursors, (SELECT count(*) FROM seen) AS sync_seen;

-- name: erase_source_remaining
-- What is left of a source scope, per table (0 everywhere once erased).
SELECT 'comms.communications' AS tbl, count(*) AS n FROM comms.communications
  WHERE workspace_id = $1 AND source = $2
UNION ALL SELECT 'comms.threads', count(*) FROM comms.threads
  WHERE workspace_id = $1 AND source = $2
UNION ALL SELECT 'media.assets', count(*) FROM media.assets
  WHERE workspace_id = $1 AND source = $2
UNION ALL SELECT 'meetings.meetings', count(*) FROM meetings.meetings
  WHERE workspace_id = $1 AND source = $2
UNION ALL SELECT 'meetings.transcripts', count(*) FROM meetings.transcripts
  WHERE workspace_id = $1 AND source = $2
UNION ALL SELECT 'core.integrations', count(*) FROM core.integrations
  WHERE workspace_id = $1 AND provider = $2
UNION ALL SELECT 'ops.sync_seen', count(*) FROM ops.sync_seen
  WHERE workspace_id = $1 AND source = $2
UNION ALL SELECT 'ops.ingestion_jobs', count(*) FROM ops.ingestion_jobs
  WHERE workspace_id = $1 AND source = $2;

-- name: erase_workspace_rows
-- {table}: a tenant table (worker/db/erase.py WORKSPACE_TABLES, children first, so the
-- cascades find little): a batch of the workspace's ($1) rows, at most $2.
DELETE FROM {table} x
WHERE x.id IN (SELECT id FROM {table} WHERE workspace_id = $1 LIMIT $2);

-- name: erase_workspace_remaining
-- {table}: a tenant table; the workspace's rows left in it.
SELECT count(*) FROM {table} WHERE workspace_id = $1;

-- name: erase_workspace_row
-- The tenant itself, last (its name, slug, settings); events keep its id (no FK).
DELETE FROM core.workspaces WHERE id = $1;

-- name: erase_tenant_tables
-- Every table of the domain schemas with a workspace_id column, for the check that
-- WORKSPACE_TABLES names them all (a table added later must be erased too).
SELECT table_schema || '.' || table_name AS name
FROM information_schema.columns
WHERE column_name = 'workspace_id'
  AND table_schema IN ('core', 'ops', 'comms', 'meetings', 'media', 'work', 'intel')
  AND table_name IN (SELECT table_name FROM information_schema.tables t
                     WHERE t.table_schema = columns.table_schema AND t.table_type = 'BASE TABLE')
ORDER BY 1;

-- name: erase_ledger_rows
-- A batch of the scope's ledger rows ($1 workspace, $2 source or NULL for all, $3 batch),
-- payloads and errors with them; returns the arq ids that named them (their Redis
-- results go too). Events are not touched (append-only; they hold no content).
DELETE FROM ops.ingestion_jobs x
WHERE x.id IN (SELECT id FROM ops.ingestion_jobs
               WHERE workspace_id = $1 AND ($2::text IS NULL OR source = $2) LIMIT $3)
RETURNING x.id, x.arq_job_id;

-- name: erase_append_event
-- scope.erased, the erasure's one event (counts only), versioned per scope aggregate.
INSERT INTO ops.events (workspace_id, aggregate_type, aggregate_id, version, event_type,
                        payload, idempotency_key)
SELECT $1::uuid, 'erasure', $2::uuid, ops.next_event_version($2::uuid), 'scope.erased', $3::jsonb, $4
FROM (SELECT pg_advisory_xact_lock(hashtextextended($2::uuid::text, @AGGREGATE_LOCK_SALT@))) AS l;

-- name: erase_scope_job_ids
-- The scope's unfinished jobs: a large item's queued Redis job names its ledger row instead
-- of carrying the payload (worker/queue/client.py), so the queue sweep knows it by its id.
SELECT id::text FROM ops.ingestion_jobs
WHERE workspace_id = $1 AND ($2::text IS NULL OR source = $2)
  AND status IN ('queued', 'running');
