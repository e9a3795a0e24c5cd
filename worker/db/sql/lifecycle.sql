-- The connector lifecycle beyond ingestion: an item deleted upstream (worker/db/delete.py).
-- Every statement runs in the deletion's one transaction, under the item's lock.

-- name: delete_communication
-- The message; its participants, attachment rows and asset links go with it (ON DELETE
-- CASCADE). Returned: what the next statements tidy up.
DELETE FROM comms.communications c
WHERE c.workspace_id = $1 AND c.source = $2 AND c.external_id = $3
RETURNING c.id, c.thread_id,
          ARRAY(SELECT a.media_asset_id FROM comms.attachments a
                WHERE a.workspace_id = c.workspace_id AND a.communication_id = c.id
                  AND a.media_asset_id IS NOT NULL) AS asset_ids,
          ARRAY(SELECT p.contact_id FROM comms.participants p
                WHERE p.workspace_id = c.workspace_id AND p.communication_id = c.id
                  AND p.contact_id IS NOT NULL) AS contact_ids;

-- name: delete_orphan_attachment_assets
-- Documents that came with the deleted message and with no other (an attachment sent down
-- a thread is one asset linked to every message that carried it): their chunks go too.
DELETE FROM media.assets a
WHERE a.workspace_id = $1 AND a.id = ANY($2::uuid[])
  AND NOT EXISTS (SELECT 1 FROM comms.attachments t
                  WHERE t.workspace_id = a.workspace_id AND t.media_asset_id = a.id)
  AND NOT EXISTS (SELECT 1 FROM media.asset_links l
                  WHERE l.workspace_id = a.workspace_id AND l.asset_id = a.id)
RETURNING a.id;

-- name: delete_thread_if_empty
-- The deleted message's thread, when it was its last (the thread's subject is the
-- message's); otherwise the caller recounts it (refresh_threads).
DELETE FROM comms.threads t
WHERE t.workspace_id = $1 AND t.id = $2
  AND NOT EXISTS (SELECT 1 FROM comms.communications c
                  WHERE c.workspace_id = t.workspace_id AND c.thread_id = t.id)
RETURNING t.id;

-- name: delete_meeting
-- A transcript's meeting has the transcript's key (upsert_meeting): the transcript, its
-- chunks, participants, action items and asset links go with it.
DELETE FROM meetings.meetings m
WHERE m.workspace_id = $1 AND m.source = $2 AND m.external_id = $3
RETURNING m.id,
          (SELECT count(*) FROM meetings.transcript_chunks k
           WHERE k.workspace_id = m.workspace_id AND k.meeting_id = m.id) AS chunks,
          ARRAY(SELECT p.contact_id FROM meetings.participants p
                WHERE p.workspace_id = m.workspace_id AND p.meeting_id = m.id
                  AND p.contact_id IS NOT NULL) AS contact_ids;

-- name: delete_media_asset
DELETE FROM media.assets a
WHERE a.workspace_id = $1 AND a.source = $2 AND a.external_id = $3
RETURNING a.id,
          (SELECT count(*) FROM media.media_chunks k
           WHERE k.workspace_id = a.workspace_id AND k.asset_id = a.id) AS chunks;

-- name: delete_unreferenced_contacts
-- Contacts the deleted item named that nothing else references any more and that nobody
-- curated (no notes, organization or title): a contact still on another message, in a
-- meeting, owning an action item or assigned work stays.
DELETE FROM core.contacts k
WHERE k.workspace_id = $1 AND k.id = ANY($2::uuid[])
  AND k.notes IS NULL AND k.organization IS NULL AND k.title IS NULL
  AND NOT EXISTS (SELECT 1 FROM comms.participants p
                  WHERE p.workspace_id = k.workspace_id AND p.contact_id = k.id)
  AND NOT EXISTS (SELECT 1 FROM meetings.participants p
                  WHERE p.workspace_id = k.workspace_id AND p.contact_id = k.id)
  AND NOT EXISTS (SELECT 1 FROM meetings.action_items a
                  WHERE a.workspace_id = k.workspace_id AND a.owner_contact_id = k.id)
  AND NOT EXISTS (SELECT 1 FROM work.work_items w
                  WHERE w.workspace_id = k.workspace_id AND w.assignee_contact_id = k.id)
RETURNING k.id;

-- name: delete_earlier_ledger_rows
-- The item's finished ingest jobs recorded before the deletion: their payloads hold its
-- content, and while their rows stand the same content sent again would be a no-op (its
-- job id is its content's). Unfinished ones stay: they run, and are skipped as
-- superseded by the deletion. Their events stay (the event store is append-only and holds
-- no content).
DELETE FROM ops.ingestion_jobs j
WHERE j.workspace_id = $1 AND j.kind = $2::ops.ingestion_kind AND j.source = $3
  AND j.external_id = $4 AND j.id <> $5 AND j.queued_at < $6
  AND j.status IN ('done', 'skipped', 'failed')
  AND NOT (j.result ? 'deleted')
RETURNING j.id;
