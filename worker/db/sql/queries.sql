-- All SQL the ingestion pipeline runs, as named queries (loaded by worker/db/queries.py).
-- Every query is parameterized; bulk vector writes use binary COPY instead (worker/db/store.py).

-- name: ledger_insert
-- A job seen for the first time (the client's enqueue, or a worker's pickup of a job sent
-- straight to Redis: status 'running', attempts 1). NULL when a concurrent transaction
-- inserted it first: the caller then locks that row. aggregate_locked: the job's
-- event-stream lock (events_lock_aggregates' key), taken after the row: one round trip less.
INSERT INTO ops.ingestion_jobs AS j (id, workspace_id, kind, source, external_id, content_hash,
                                     status, attempts, payload, arq_job_id, started_at)
VALUES ($1, $2, $3::ops.ingestion_kind, $4, $5, $6, $7::ops.job_status, $8, $9::jsonb, $10,
        CASE WHEN $7 = 'running' THEN now() END)
ON CONFLICT (id) DO NOTHING
RETURNING status::text AS status, attempts, queued_at,
          pg_advisory_xact_lock(hashtextextended(j.id::text, @AGGREGATE_LOCK_SALT@)) AS aggregate_locked;

-- name: ledger_lock_page
-- A connector's page of jobs (client.enqueue_many): lock the rows the ledger already holds,
-- in id order (two pages never wait on each other in a cycle), and take the event-stream
-- lock of each finished one after its row (it gets a job.noop).
WITH locked AS MATERIALIZED (
  SELECT id, status, arq_job_id FROM ops.ingestion_jobs WHERE id = ANY($1::uuid[])
  ORDER BY id FOR UPDATE
)
SELECT id, status::text AS status, arq_job_id,
       CASE WHEN status IN ('done', 'skipped')
            THEN pg_advisory_xact_lock(hashtextextended(id::text, @AGGREGATE_LOCK_SALT@)) END AS aggregate_locked
FROM locked;

-- name: ledger_insert_page
-- The page's jobs the ledger had no row for, queued, in one statement. A row a concurrent
-- transaction inserted first is not returned: the caller locks it with ledger_lock_page.
INSERT INTO ops.ingestion_jobs AS j (id, workspace_id, kind, source, external_id, content_hash,
                                     status, attempts, payload, arq_job_id)
SELECT n.id, n.workspace_id, n.kind::ops.ingestion_kind, n.source, n.external_id,
       n.content_hash, 'queued', 0, n.payload::jsonb, n.arq_job_id
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[])
       AS n(id, workspace_id, kind, source, external_id, content_hash, payload, arq_job_id)
ORDER BY n.id
ON CONFLICT (id) DO NOTHING
RETURNING j.id, pg_advisory_xact_lock(hashtextextended(j.id::text, @AGGREGATE_LOCK_SALT@)) AS aggregate_locked;

-- name: existing_workspaces
SELECT id FROM core.workspaces WHERE id = ANY($1::uuid[]);

-- name: ledger_start
-- A worker's pickup of a job the ledger holds: lock it and mark it running, unless it is
-- already finished (done/skipped: only locked; the caller records a no-op). NULL when the
-- ledger has no row yet. No payload travels: the row has it, unless retention dropped it
-- (a failed job re-sent after LEDGER_PAYLOAD_RETENTION): payload_missing, and the caller
-- puts it back (ledger_restore_payloads). aggregate_locked: as above.
UPDATE ops.ingestion_jobs AS j
SET status = CASE WHEN j.status IN ('done', 'skipped') THEN j.status ELSE 'running' END,
    attempts = CASE WHEN j.status IN ('done', 'skipped') THEN j.attempts
                    ELSE j.attempts + 1 END,
    started_at = CASE WHEN j.status IN ('done', 'skipped') THEN j.started_at ELSE now() END,
    arq_job_id = CASE WHEN j.status IN ('done', 'skipped') THEN j.arq_job_id ELSE $2 END
WHERE j.id = $1
RETURNING status::text AS status, attempts, queued_at, j.payload IS NULL AS payload_missing,
          pg_advisory_xact_lock(hashtextextended(j.id::text, @AGGREGATE_LOCK_SALT@)) AS aggregate_locked;

-- name: ledger_finish
-- Also takes the job's event-stream lock (events_lock_aggregates' key), as ledger_receive.
UPDATE ops.ingestion_jobs j
SET status = $2::ops.job_status, result = $3::jsonb, last_error = $4, error_field = $5,
    finished_at = CASE WHEN $2 IN ('done', 'failed', 'skipped') THEN now() END
WHERE id = $1
RETURNING pg_advisory_xact_lock(hashtextextended(j.id::text, @AGGREGATE_LOCK_SALT@)) AS aggregate_locked;

-- name: ledger_start_page
-- ledger_start for a page of deliveries (worker/ingest/pickup.py): rows locked in id order first
-- (as ledger_lock_page), then each started unless finished. Ids without a row are absent:
-- the caller records those one by one (ledger_start, then ledger_insert). payload_missing:
-- as in ledger_start.
WITH k AS (
  SELECT * FROM unnest($1::uuid[], $2::text[]) AS k(id, arq_job_id)
), locked AS MATERIALIZED (
  SELECT j.id FROM ops.ingestion_jobs j WHERE j.id IN (SELECT id FROM k) ORDER BY j.id FOR UPDATE
)
UPDATE ops.ingestion_jobs AS j
SET status = CASE WHEN j.status IN ('done', 'skipped') THEN j.status ELSE 'running' END,
    attempts = CASE WHEN j.status IN ('done', 'skipped') THEN j.attempts
                    ELSE j.attempts + 1 END,
    started_at = CASE WHEN j.status IN ('done', 'skipped') THEN j.started_at ELSE now() END,
    arq_job_id = CASE WHEN j.status IN ('done', 'skipped') THEN j.arq_job_id ELSE k.arq_job_id END
FROM locked JOIN k ON k.id = locked.id
WHERE j.id = locked.id
RETURNING j.id, j.status::text AS status, j.attempts, j.queued_at,
          j.payload IS NULL AS payload_missing,
          pg_advisory_xact_lock(hashtextextended(j.id::text, @AGGREGATE_LOCK_SALT@)) AS aggregate_locked;

-- name: ledger_restore_payloads
-- Jobs started again whose payload the maintenance's retention had dropped (only a failed
-- job runs again: a done or skipped one is a no-op): the delivery's payload goes back into
-- the row, so the reconciler can replay the job if the transport loses it. Same job id,
-- same content hash: the same payload. $1 ids, $2 payloads (JSON text), by position.
UPDATE ops.ingestion_jobs j
SET payload = n.payload::jsonb
FROM unnest($1::uuid[], $2::text[]) AS n(id, payload)
WHERE j.id = n.id AND j.payload IS NULL;

-- name: ledger_payload
-- The payload a job's Redis message names instead of carrying it (a large item:
-- worker/queue/client.py, INLINE_PAYLOAD_MAX_BYTES), as JSON text.
SELECT payload::text FROM ops.ingestion_jobs WHERE id = $1;

-- name: ledger_set_arq_job_id
-- A handed-off job's retry was enqueued under a new arq id (worker/queue/jobs.py): the reconciler
-- looks for the job under the id the row names.
UPDATE ops.ingestion_jobs SET arq_job_id = $2 WHERE id = $1;

-- name: ledger_reject
-- An unparseable payload: recorded as failed, attributed to its workspace when known.
INSERT INTO ops.ingestion_jobs (id, workspace_id, kind, source, external_id, status, attempts,
                                last_error, error_field, payload, arq_job_id, started_at,
                                finished_at)
VALUES ($1, $2, $3::ops.ingestion_kind, $4, $5, 'failed', $10, $6, $7, $8::jsonb, $9, now(),
        now())
ON CONFLICT (id) DO UPDATE
SET status = 'failed', attempts = greatest(ops.ingestion_jobs.attempts, EXCLUDED.attempts),
    last_error = EXCLUDED.last_error,
    error_field = EXCLUDED.error_field, finished_at = now();

-- name: workspace_exists
SELECT EXISTS (SELECT 1 FROM core.workspaces WHERE id = $1);

-- name: ensure_thread
-- Find or create the thread without locking an existing row (ON CONFLICT DO UPDATE
-- would hold the lock across the item's vector insert); lock_threads locks it at the end.
-- NULL when a concurrent transaction created it after this statement's snapshot.
WITH ins AS (
  INSERT INTO comms.threads (workspace_id, source, thread_key, subject, channel)
  VALUES ($1, $2, $3, $4, $5::comms.channel_type)
  ON CONFLICT (workspace_id, source, thread_key) DO NOTHING
  RETURNING id
)
SELECT id FROM ins
UNION ALL
SELECT id FROM comms.threads WHERE workspace_id = $1 AND source = $2 AND thread_key = $3
LIMIT 1;

-- name: find_thread
SELECT id FROM comms.threads WHERE workspace_id = $1 AND source = $2 AND thread_key = $3;

-- name: current_source_job
-- When the job that wrote the current version of a source row was queued, or the item's
-- latest deletion (its done ledger row, worker/db/delete.py), whichever is later: an older
-- job finishing late must not overwrite newer content, nor bring back a deleted item.
SELECT greatest(
  (SELECT j.queued_at
   FROM {table} s JOIN ops.ingestion_jobs j ON j.id = s.ingestion_job_id
   WHERE s.workspace_id = $1 AND s.source = $2 AND s.external_id = $3),
  (SELECT max(d.queued_at) FROM ops.ingestion_jobs d
   WHERE d.workspace_id = $1 AND d.kind = $4::ops.ingestion_kind AND d.source = $2
     AND d.external_id = $3 AND d.status = 'done' AND d.result ? 'deleted'));

-- name: reuse_comm_embedding
SELECT embedding FROM comms.communications
WHERE workspace_id = $1 AND embedding_model = $2 AND content_hash = $3 AND embedding IS NOT NULL
LIMIT 1;

-- name: reuse_comm_embeddings
-- reuse_comm_embedding for many items at once (the items of a page job): by position.
SELECT k.i, (SELECT c.embedding FROM comms.communications c
             WHERE c.workspace_id = k.ws AND c.embedding_model = $3 AND c.content_hash = k.h
               AND c.embedding IS NOT NULL
             LIMIT 1) AS embedding
FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS k(ws, h, i);

-- name: reuse_chunk_embeddings
-- Vectors already computed with this model in this workspace, by chunk text hash.
SELECT DISTINCT ON (content_hash) content_hash, embedding
FROM {table}
WHERE workspace_id = $1 AND embedding_model = $2 AND content_hash = ANY($3::text[])
  AND embedding IS NOT NULL;

-- name: stage_item_vectors
-- Streamed items: this item's current vectors, copied (inside the item's transaction,
-- before its old chunks are deleted) to a temp table that the commit drops.
CREATE TEMP TABLE item_vectors ON COMMIT DROP AS
SELECT content_hash, embedding FROM {table} WITH NO DATA;

-- name: fill_item_vectors
INSERT INTO item_vectors (content_hash, embedding)
SELECT DISTINCT ON (content_hash) content_hash, embedding
FROM {table}
WHERE workspace_id = $1 AND {parent} = $2 AND embedding_model = $3 AND embedding IS NOT NULL;

-- name: index_item_vectors
CREATE UNIQUE INDEX ON item_vectors (content_hash);

-- name: reuse_chunk_embeddings_staged
-- reuse_chunk_embeddings, plus the streamed item's own vectors staged in item_vectors.
SELECT DISTINCT ON (content_hash) content_hash, embedding
FROM (SELECT content_hash, embedding FROM {table}
      WHERE workspace_id = $1 AND embedding_model = $2 AND content_hash = ANY($3::text[])
        AND embedding IS NOT NULL
      UNION ALL
      SELECT content_hash, embedding FROM item_vectors WHERE content_hash = ANY($3::text[])) v;

-- name: upsert_meeting
INSERT INTO meetings.meetings AS m (workspace_id, source, external_id, title, starts_at, ends_at,
                                    metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
ON CONFLICT (workspace_id, source, external_id) DO UPDATE
SET title = EXCLUDED.title, starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at,
    metadata = EXCLUDED.metadata
RETURNING id;

-- name: delete_meeting_participants
DELETE FROM meetings.participants WHERE workspace_id = $1 AND meeting_id = $2;

-- name: insert_meeting_participants
INSERT INTO meetings.participants (workspace_id, meeting_id, contact_id, name, address)
SELECT $1, $2, p.contact_id, p.name, p.address
FROM unnest($3::uuid[], $4::text[], $5::text[]) AS p(contact_id, name, address);

-- name: upsert_transcript
INSERT INTO meetings.transcripts AS t (workspace_id, meeting_id, source, external_id, language,
                                       format, content_hash, segment_count, duration_ms,
                                       ingestion_job_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (workspace_id, source, external_id) DO UPDATE
SET meeting_id = EXCLUDED.meeting_id, language = EXCLUDED.language, format = EXCLUDED.format,
    content_hash = EXCLUDED.content_hash, segment_count = EXCLUDED.segment_count,
    duration_ms = EXCLUDED.duration_ms, ingestion_job_id = EXCLUDED.ingestion_job_id
RETURNING id;

-- name: delete_transcript_chunks
DELETE FROM meetings.transcript_chunks WHERE workspace_id = $1 AND transcript_id = $2;

-- name: upsert_asset
INSERT INTO media.assets AS a (workspace_id, source, external_id, kind, title, mime_type,
                               duration_ms, uri, content_hash, metadata, ingestion_job_id)
VALUES ($1, $2, $3, $4::media.asset_kind, $5, $6, $7, $8, $9, $10::jsonb, $11)
ON CONFLICT (workspace_id, source, external_id) DO UPDATE
SET kind = EXCLUDED.kind, title = EXCLUDED.title, mime_type = EXCLUDED.mime_type,
    duration_ms = EXCLUDED.duration_ms, uri = EXCLUDED.uri,
    content_hash = EXCLUDED.content_hash, metadata = EXCLUDED.metadata,
    ingestion_job_id = EXCLUDED.ingestion_job_id
RETURNING id;

-- name: delete_media_chunks
DELETE FROM media.media_chunks WHERE workspace_id = $1 AND asset_id = $2;

-- name: asset_hash
-- A stored asset's id and content hash: an attachment already stored (the same file sent
-- again in a thread) is linked, not written again.
SELECT id, content_hash FROM media.assets
WHERE workspace_id = $1 AND source = $2 AND external_id = $3;

-- name: replace_attachments
-- A message's attachments, replaced wholesale (a re-ingest never leaves a mix).
WITH gone AS (
  DELETE FROM comms.attachments WHERE workspace_id = $1 AND communication_id = $2
)
INSERT INTO comms.attachments (workspace_id, communication_id, filename, mime_type,
                               size_bytes, media_asset_id)
SELECT $1, $2, a.filename, a.mime_type, a.size_bytes, a.asset_id
FROM unnest($3::text[], $4::text[], $5::bigint[], $6::uuid[])
     AS a (filename, mime_type, size_bytes, asset_id);

-- name: link_message_assets
-- The message's links to its attachments' assets: the ones no longer attached go, the new
-- ones are added (a link is written once per asset and message).
WITH gone AS (
  DELETE FROM media.asset_links
  WHERE workspace_id = $1 AND communication_id = $2 AND meeting_id IS NULL
    AND asset_id <> ALL ($3::uuid[])
)
INSERT INTO media.asset_links (workspace_id, asset_id, communication_id)
SELECT DISTINCT $1, a.asset_id, $2 FROM unnest($3::uuid[]) AS a (asset_id)
WHERE NOT EXISTS (
  SELECT 1 FROM media.asset_links l
  WHERE l.workspace_id = $1 AND l.communication_id = $2 AND l.asset_id = a.asset_id
);

-- name: pending_contacts
-- Contact profiles without an embedding from the current model, oldest first; keyset
-- pagination on id makes embed_pending resumable.
SELECT id, workspace_id, display_name, primary_address, addresses, organization, title, notes
FROM core.contacts
WHERE (embedding IS NULL OR embedding_model IS DISTINCT FROM $1) AND id > $2
ORDER BY id
LIMIT $3;

-- name: set_contact_embedding
UPDATE core.contacts
SET embedding = $3, embedding_model = $2, embedded_at = now(), profile_hash = $4
WHERE id = $1;

-- name: pending_insights
SELECT id, workspace_id, title, body
FROM intel.insights
WHERE (embedding IS NULL OR embedding_model IS DISTINCT FROM $1) AND id > $2
ORDER BY id
LIMIT $3;

-- name: set_insight_embedding
UPDATE intel.insights SET embedding = $3, embedding_model = $2, embedded_at = now()
WHERE id = $1;

-- name: search_memory
-- `cos-worker search`: migration 006's retrieval function, the one the platform calls
-- (docs/search.md): workspace, embedding, query text, limit, kinds, sources, since, until,
-- contact.
SELECT kind, id, item_id, source, content, speaker, start_ms, end_ms, position, came_with,
       occurred_at, distance, text_rank, score
FROM public.search_memory($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- name: ledger_counts
SELECT status::text AS status, count(*) AS n FROM ops.ingestion_jobs GROUP BY status;

-- name: oldest_queued
SELECT min(queued_at) FROM ops.ingestion_jobs WHERE status = 'queued';

-- name: oldest_queued_by_workspace
-- cos-worker status: per workspace, its queued jobs and the oldest (longest waiting first).
SELECT workspace_id, count(*) AS queued, min(queued_at) AS oldest
FROM ops.ingestion_jobs WHERE status = 'queued'
GROUP BY workspace_id ORDER BY oldest LIMIT $1;

-- == Pages of communications: store + record for many items in one transaction ==========
-- (worker/db/store_group.py, worker/ingest/write.py). Same rows, events and ledger as the
-- per-item queries above, in a fixed number of statements per page instead of ~15 per item; the upserts, participants
-- and thread counters serve single items too (store.py passes arrays of one). Every lock is
-- taken in one global order: item locks (by hash), ledger rows (by id), contacts (by
-- workspace and address), threads (by id), so pages, single items and connectors never
-- wait in a cycle.

-- name: lock_items_page
-- The items' advisory locks (store.item_lock_key, as ledger_lock_item_and_row), in hash
-- order, before any row lock.
SELECT count(pg_advisory_xact_lock(s.h))
FROM (SELECT DISTINCT hashtextextended(k, @ITEM_LOCK_SALT@) AS h FROM unnest($1::text[]) AS k ORDER BY 1) s;

-- name: ledger_lock_rows
SELECT id, status::text AS status
FROM ops.ingestion_jobs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE;

-- name: current_comm_jobs_page
-- current_source_job for a page: when the job that wrote each stored row was queued, or
-- the item's latest deletion, whichever is later (NULL: neither).
SELECT k.i, greatest(
  (SELECT j.queued_at
   FROM comms.communications s JOIN ops.ingestion_jobs j ON j.id = s.ingestion_job_id
   WHERE s.workspace_id = k.ws AND s.source = k.source AND s.external_id = k.external_id),
  (SELECT max(d.queued_at) FROM ops.ingestion_jobs d
   WHERE d.workspace_id = k.ws AND d.kind = 'communication' AND d.source = k.source
     AND d.external_id = k.external_id AND d.status = 'done' AND d.result ? 'deleted'))
  AS queued_at
FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS k(ws, source, external_id, i);

-- name: ensure_threads_page
-- ensure_thread for a page: create the missing threads, never lock an existing one.
INSERT INTO comms.threads (workspace_id, source, thread_key, subject, channel)
SELECT t.ws, t.source, t.thread_key, t.subject, t.channel::comms.channel_type
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
       AS t(ws, source, thread_key, subject, channel)
ORDER BY 1, 2, 3
ON CONFLICT (workspace_id, source, thread_key) DO NOTHING;

-- name: find_threads_page
SELECT k.i, t.id
FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS k(ws, source, thread_key, i)
JOIN comms.threads t
  ON t.workspace_id = k.ws AND t.source = k.source AND t.thread_key = k.thread_key;

-- name: upsert_communications
-- One item's communication, or a page's (rows in key order); job_id tells the caller which
-- row is whose. old_thread_id: the thread the stored row was in (a message moved to another
-- thread leaves a count to refresh behind), read in the upsert's own snapshot.
WITH n AS (
  SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[],
                       $12::text[], $13::int[], $14::int[], $15::vector[], $16::text[],
                       $17::uuid[])
    AS n(ws, thread_id, source, external_id, channel, subject, sender_name, sender_address,
         body, content_hash, sent_at, metadata, token_count, chunk_count, embedding,
         embedding_model, job_id)
), old AS (
  SELECT c.id, c.thread_id FROM comms.communications c
  JOIN n ON c.workspace_id = n.ws AND c.source = n.source AND c.external_id = n.external_id
), up AS (
  INSERT INTO comms.communications AS c (workspace_id, thread_id, source, external_id, channel,
         subject, sender_name, sender_address, body, content_hash, sent_at, metadata,
         token_count, chunk_count, embedding, embedding_model, embedded_at, ingestion_job_id)
  SELECT n.ws, n.thread_id, n.source, n.external_id, n.channel::comms.channel_type, n.subject,
         n.sender_name, n.sender_address, n.body, n.content_hash, n.sent_at, n.metadata::jsonb,
         n.token_count, n.chunk_count, n.embedding, n.embedding_model, now(), n.job_id
  FROM n
  ORDER BY n.ws, n.source, n.external_id
  ON CONFLICT (workspace_id, source, external_id) DO UPDATE
  SET thread_id = EXCLUDED.thread_id, channel = EXCLUDED.channel, subject = EXCLUDED.subject,
      sender_name = EXCLUDED.sender_name, sender_address = EXCLUDED.sender_address,
      body = EXCLUDED.body, content_hash = EXCLUDED.content_hash, sent_at = EXCLUDED.sent_at,
      metadata = EXCLUDED.metadata, token_count = EXCLUDED.token_count,
      chunk_count = EXCLUDED.chunk_count, embedding = EXCLUDED.embedding,
      embedding_model = EXCLUDED.embedding_model, embedded_at = now(),
      ingestion_job_id = EXCLUDED.ingestion_job_id
  RETURNING c.id, c.ingestion_job_id AS job_id, (xmax = 0) AS created
)
SELECT up.id, up.job_id, up.created, old.thread_id AS old_thread_id
FROM up LEFT JOIN old ON old.id = up.id;

-- name: set_communication_body
-- A large body, written after upsert_communications left it empty (worker/db/store.py).
UPDATE comms.communications SET body = $2 WHERE id = $1;

-- name: ledger_finish_page
-- ledger_finish for a page of rows this transaction has locked (ledger_lock_rows); takes
-- each job's event-stream lock as ledger_finish does.
UPDATE ops.ingestion_jobs j
SET status = f.status::ops.job_status, result = f.result::jsonb, last_error = NULL,
    error_field = NULL, finished_at = now()
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS f(id, status, result)
WHERE j.id = f.id
RETURNING j.id, pg_advisory_xact_lock(hashtextextended(j.id::text, @AGGREGATE_LOCK_SALT@)) AS aggregate_locked;

-- name: upsert_contacts
-- Senders, recipients and participants become contacts, matched by address: one row per
-- (workspace, address) with the earliest and latest sighting (one item's, or a page's).
-- A changed display name invalidates the profile embedding so embed_pending refreshes it.
-- A contact whose stored row already covers the sighting (seen within its first/last
-- dates, no new name) is only read: the upsert would lock it until the item commits, and
-- a founder's own address is on nearly every message, so every item of a mailbox would
-- queue on that one row. Skipping is safe under concurrency: first/last only widen
-- (least/greatest), so a row that covers the sighting in this snapshot covers it later.
WITH want AS (
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
    AS w(ws, address, name, first_seen, last_seen)
), covered AS (
  SELECT c.id, c.workspace_id, c.primary_address
  FROM want w JOIN core.contacts c
    ON c.workspace_id = w.ws AND c.primary_address = w.address
  WHERE c.first_seen_at <= w.first_seen AND c.last_seen_at >= w.last_seen
    AND (w.name IS NULL OR w.name = c.display_name)
), upserted AS (
  INSERT INTO core.contacts AS c (workspace_id, primary_address, display_name, addresses,
                                  first_seen_at, last_seen_at)
  SELECT w.ws, w.address, w.name, ARRAY[w.address], w.first_seen, w.last_seen
  FROM want w
  WHERE NOT EXISTS (SELECT 1 FROM covered v
                    WHERE v.workspace_id = w.ws AND v.primary_address = w.address)
  ORDER BY w.ws, w.address
  ON CONFLICT (workspace_id, primary_address) DO UPDATE
  SET display_name = coalesce(EXCLUDED.display_name, c.display_name),
      embedding = CASE WHEN EXCLUDED.display_name IS DISTINCT FROM c.display_name
                            AND EXCLUDED.display_name IS NOT NULL THEN NULL ELSE c.embedding END,
      embedding_model = CASE WHEN EXCLUDED.display_name IS DISTINCT FROM c.display_name
                            AND EXCLUDED.display_name IS NOT NULL THEN NULL ELSE c.embedding_model END,
      first_seen_at = least(c.first_seen_at, EXCLUDED.first_seen_at),
      last_seen_at = greatest(c.last_seen_at, EXCLUDED.last_seen_at)
  RETURNING c.id, c.workspace_id, c.primary_address
)
SELECT id, workspace_id, primary_address FROM covered
UNION ALL
SELECT id, workspace_id, primary_address FROM upserted;

-- name: delete_comm_participants
DELETE FROM comms.participants p
USING unnest($1::uuid[], $2::uuid[]) AS d(ws, communication_id)
WHERE p.workspace_id = d.ws AND p.communication_id = d.communication_id;

-- name: insert_comm_participants
INSERT INTO comms.participants (workspace_id, communication_id, contact_id, role, name, address)
SELECT p.ws, p.communication_id, p.contact_id, p.role::comms.participant_role, p.name, p.address
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[])
       AS p(ws, communication_id, contact_id, role, name, address);

-- name: lock_threads
-- Before refresh_threads, in its own statement: an UPDATE that waited for the lock
-- would count the thread's messages in the snapshot it took before waiting, missing what
-- the transaction it waited for committed. NO KEY UPDATE, as the UPDATE itself: FOR UPDATE
-- would conflict with the key-share locks that other items' communications hold on their
-- thread through the foreign key (a deadlock). Id order: one lock order for all.
SELECT id FROM comms.threads WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE;

-- name: refresh_threads
-- The threads' counters, recounted (after lock_threads); subject fills a missing one.
UPDATE comms.threads t
SET message_count = s.n, first_at = s.first_at, last_at = s.last_at,
    subject = coalesce(t.subject, k.subject)
FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS k(ws, id, subject)
CROSS JOIN LATERAL (
  SELECT count(*) AS n, min(c.sent_at) AS first_at, max(c.sent_at) AS last_at
  FROM comms.communications c WHERE c.workspace_id = k.ws AND c.thread_id = k.id) s
WHERE t.workspace_id = k.ws AND t.id = k.id;

-- name: ledger_lock_row
-- Lock one job's ledger row until the transaction ends (ledger.lock_unfinished).
SELECT status::text, attempts FROM ops.ingestion_jobs WHERE id = $1 FOR UPDATE;

-- name: ledger_lock_item_and_row
-- The item's lock (store.item_lock_key) taken while the row is fetched, then the row lock.
SELECT status::text, attempts,
       pg_advisory_xact_lock(hashtextextended($2::text, @ITEM_LOCK_SALT@)) AS item
FROM ops.ingestion_jobs WHERE id = $1 FOR UPDATE;

-- name: events_lock_aggregates
-- The event-stream lock of several aggregates (key = the aggregate id, the salt the ledger
-- statements use too), in one statement, in a fixed order (no lock cycles).
SELECT count(pg_advisory_xact_lock(hashtextextended(a::text, @AGGREGATE_LOCK_SALT@)))
FROM (SELECT a FROM unnest($1::uuid[]) AS a ORDER BY a::text OFFSET 0) AS s;

-- name: events_insert
-- After the locks (a separate statement: a READ COMMITTED snapshot is taken per statement,
-- so reading in the locking statement could miss a version committed while we waited),
-- one statement numbers the events whose idempotency key is new (gap-free, in order per
-- aggregate) and inserts them, for any number of aggregates: the versions, the key check
-- and the insert cost one round trip together.
INSERT INTO ops.events (workspace_id, aggregate_type, aggregate_id, version, event_type,
                        payload, metadata, idempotency_key, occurred_at)
SELECT e.workspace_id, e.aggregate_type, e.aggregate_id,
       v.version + row_number() OVER (PARTITION BY e.aggregate_id ORDER BY e.ord),
       e.event_type, e.payload::jsonb, e.metadata::jsonb, e.idempotency_key,
       coalesce(e.occurred_at, now())
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::timestamptz[])
       WITH ORDINALITY AS e(aggregate_id, workspace_id, aggregate_type, event_type, payload,
                            metadata, idempotency_key, occurred_at, ord)
CROSS JOIN LATERAL (SELECT coalesce(max(x.version), 0) AS version
                    FROM ops.events x WHERE x.aggregate_id = e.aggregate_id) AS v
WHERE NOT EXISTS (SELECT 1 FROM ops.events x WHERE x.idempotency_key = e.idempotency_key)
ON CONFLICT (idempotency_key) DO NOTHING;

-- name: reconcile_candidates
-- Unfinished ledger rows untouched for the grace period (seconds): the reconciler checks
-- whether the transport still holds their job.
SELECT id, workspace_id, kind::text AS kind, status::text AS status, attempts, arq_job_id,
       updated_at, extract(epoch FROM now() - updated_at)::float8 AS idle_s
FROM ops.ingestion_jobs
WHERE status IN ('queued', 'running')
  AND greatest(queued_at, coalesce(started_at, queued_at), updated_at)
      < now() - make_interval(secs => $1)
ORDER BY updated_at
LIMIT $2;

-- name: reconcile_lock_unchanged
-- Lock a candidate only if nobody moved it since it was read (same updated_at).
SELECT payload FROM ops.ingestion_jobs
WHERE id = $1 AND updated_at = $2 AND status IN ('queued', 'running')
FOR UPDATE SKIP LOCKED;

-- name: reconcile_touch
-- A re-enqueued row: the job id it waits for, and the grace period starts over.
UPDATE ops.ingestion_jobs SET arq_job_id = $2, updated_at = now() WHERE id = $1;
