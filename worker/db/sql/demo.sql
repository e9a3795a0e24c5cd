-- The demo's seed rows and its report (worker/db/inspect.py, worker/demo.py): what one
-- workspace holds once the sample corpus is ingested.

-- name: seed_workspace
-- The workspace, unless a previous demo run created it already.
INSERT INTO core.workspaces (id, name) VALUES ($1, $2)
ON CONFLICT (id) DO NOTHING;

-- name: seed_insight
-- One insight ($2 type, $3 title, $4 body), unless the workspace has one with that title:
-- a second demo run adds nothing (and so embeds nothing again).
INSERT INTO intel.insights (workspace_id, insight_type, title, body)
SELECT $1, $2::intel.insight_type, $3, $4
WHERE NOT EXISTS (SELECT 1 FROM intel.insights WHERE workspace_id = $1 AND title = $3);

-- name: workspace_counts
-- Rows written in workspace $1, one column per line of the demo's table (in its order).
SELECT
  (SELECT count(*) FROM comms.communications WHERE workspace_id = $1) AS "communications",
  (SELECT count(*) FROM comms.threads WHERE workspace_id = $1) AS "threads",
  (SELECT count(*) FROM core.contacts WHERE workspace_id = $1) AS "contacts",
  (SELECT count(*) FROM core.contacts WHERE workspace_id = $1 AND embedding IS NOT NULL)
    AS "contacts embedded",
  (SELECT count(*) FROM meetings.meetings WHERE workspace_id = $1) AS "meetings",
  (SELECT count(*) FROM meetings.transcript_chunks WHERE workspace_id = $1)
    AS "transcript chunks",
  (SELECT count(*) FROM media.assets WHERE workspace_id = $1) AS "media assets",
  (SELECT count(*) FROM media.media_chunks WHERE workspace_id = $1) AS "media chunks",
  (SELECT count(*) FROM comms.attachments WHERE workspace_id = $1) AS "attachments",
  (SELECT count(*) FROM intel.insights WHERE workspace_id = $1 AND embedding IS NOT NULL)
    AS "insights embedded",
  (SELECT count(*) FROM ops.events WHERE workspace_id = $1) AS "events",
  (SELECT count(*) FROM ops.ingestion_jobs WHERE workspace_id = $1 AND status = 'done')
    AS "jobs done";

-- name: embedded_tokens
-- Tokens sent to the embedding provider for workspace $1 so far (content.embedded events):
-- the demo reports the difference across its run.
SELECT coalesce(sum((payload->>'tokens')::int), 0) FROM ops.events
WHERE workspace_id = $1 AND event_type = 'content.embedded';
