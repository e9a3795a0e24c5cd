-- =============================================================================
-- 001_initial_schema.sql — AI Chief of Staff: core schema
--
-- 7 schemas (core, ops, comms, meetings, media, work, intel), 30 tables,
-- 12 enums, 80+ indexes (5 HNSW), 3 views (security_invoker), 5 helper functions,
-- updated_at triggers, an append-only event store.
--
-- Idempotent: safe to apply twice (IF NOT EXISTS / CREATE OR REPLACE / guarded DO
-- blocks). Plain SQL only (no psql meta-commands) so it runs under `psql -f`, as one
-- simple-query string (asyncpg conn.execute) and in the Supabase SQL editor.
--
-- Tenancy: every tenant table carries workspace_id NOT NULL REFERENCES
-- core.workspaces ON DELETE CASCADE; parents expose UNIQUE (workspace_id, id) and
-- children reference them with composite foreign keys (workspace_id, parent_id), so a
-- child row can never point at another workspace's parent.
-- Deliberate exceptions: ops.events (workspace_id nullable, no FK: the audit log
-- outlives tenants), ops.ingestion_jobs (workspace_id nullable only for failed jobs),
-- ops.maintenance_runs / ops.slow_query_reports / ops.index_builds (system tables).
-- =============================================================================

BEGIN;

-- Re-runs are expected: keep "already exists, skipping" notices out of the log.
SET LOCAL client_min_messages = warning;

-- ---------------------------------------------------------------------------
-- Extensions. pgvector is required; the others are optional and nothing depends
-- on them (UUIDs come from core gen_random_uuid(), hashes from core sha256()).
-- Where they are installed already (Supabase: schema extensions) nothing changes. vector
-- and pg_stat_statements are not trusted extensions: a migrating role that is not a
-- superuser needs them installed first; an optional one it may not install is skipped
-- with a WARNING (maintenance then reports slow queries as unavailable).
-- ---------------------------------------------------------------------------
CREATE EXTENSION IF NOT EXISTS vector;

DO $ext$
DECLARE
  optional text;
BEGIN
  FOREACH optional IN ARRAY ARRAY['pgcrypto', 'uuid-ossp', 'pg_stat_statements'] LOOP
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = optional)
       AND NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = optional) THEN
      BEGIN
        EXECUTE format('CREATE EXTENSION IF NOT EXISTS %I', optional);
      EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'extension % is not installed and % may not install it: skipped',
          optional, current_user;
      END;
    END IF;
  END LOOP;
END
$ext$;

-- ---------------------------------------------------------------------------
-- Migration tracking (shared with the runner; each file records itself at the end)
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS public.schema_migrations (
  version      text PRIMARY KEY,
  name         text NOT NULL,
  checksum     text,
  applied_at   timestamptz NOT NULL DEFAULT now(),
  applied_by   text DEFAULT current_user,
  execution_ms int
);

-- ---------------------------------------------------------------------------
-- Schemas
-- ---------------------------------------------------------------------------
CREATE SCHEMA IF NOT EXISTS core;
CREATE SCHEMA IF NOT EXISTS ops;
CREATE SCHEMA IF NOT EXISTS comms;
CREATE SCHEMA IF NOT EXISTS meetings;
CREATE SCHEMA IF NOT EXISTS media;
CREATE SCHEMA IF NOT EXISTS work;
CREATE SCHEMA IF NOT EXISTS intel;

COMMENT ON SCHEMA core IS 'Tenancy (workspaces, members), people (founders, contacts) and integrations';
COMMENT ON SCHEMA ops IS 'Event store, ingestion ledger, maintenance bookkeeping, sync cursors';
COMMENT ON SCHEMA comms IS 'Communications: channels, threads, messages, participants, attachments';
COMMENT ON SCHEMA meetings IS 'Meetings, participants, transcripts and their chunks, action items';
COMMENT ON SCHEMA media IS 'Media assets (audio/video/image/document), their chunks and links';
COMMENT ON SCHEMA work IS 'Projects, work items and comments';
COMMENT ON SCHEMA intel IS 'Insights, their sources, briefings';

-- ---------------------------------------------------------------------------
-- Enums (12). Created before any table so every schema can use every enum.
-- ---------------------------------------------------------------------------
DO $enums$
BEGIN
  BEGIN CREATE TYPE core.role_type AS ENUM ('owner', 'admin', 'member', 'viewer');
  EXCEPTION WHEN duplicate_object THEN NULL; END;
  BEGIN CREATE TYPE core.integration_status AS ENUM ('active', 'paused', 'error', 'revoked');
  EXCEPTION WHEN duplicate_object THEN NULL; END;
  BEGIN CREATE TYPE ops.job_status AS ENUM ('queued', 'running', 'done', 'failed', 'skipped');
  EXCEPTION WHEN duplicate_object THEN NULL; END;
  BEGIN CREATE TYPE ops.ingestion_kind AS ENUM ('communication', 'transcript', 'media');
  EXCEPTION WHEN duplicate_object THEN NULL; END;
  BEGIN CREATE TYPE ops.maintenance_status AS ENUM ('running', 'succeeded', 'partial', 'failed', 'skipped');
  EXCEPTION WHEN duplicate_object THEN NULL; END;
  BEGIN CREATE TYPE comms.channel_type AS ENUM ('email', 'chat', 'sms', 'voice', 'social', 'other');
  EXCEPTION WHEN duplicate_object THEN NULL; END;
  BEGIN CREATE TYPE comms.participant_role AS ENUM ('from', 'to', 'cc', 'bcc', 'mention');
  EXCEPTION WHEN duplicate_object THEN NULL; END;
  BEGIN CREATE TYPE meetings.meeting_status AS ENUM ('scheduled', 'in_progress', 'completed', 'cancelled');
  EXCEPTION WHEN duplicate_object THEN NULL; END;
  BEGIN CREATE TYPE media.asset_kind AS ENUM ('audio', 'video', 'image', 'document');
  EXCEPTION WHEN duplicate_object THEN NULL; END;
  BEGIN CREATE TYPE work.item_status AS ENUM ('todo', 'in_progress', 'blocked', 'done', 'cancelled');
  EXCEPTION WHEN duplicate_object THEN NULL; END;
  BEGIN CREATE TYPE work.priority AS ENUM ('low', 'medium', 'high', 'urgent');
  EXCEPTION WHEN duplicate_object THEN NULL; END;
  BEGIN CREATE TYPE intel.insight_type AS ENUM ('summary', 'action', 'risk', 'opportunity', 'relationship', 'decision', 'other');
  EXCEPTION WHEN duplicate_object THEN NULL; END;
END
$enums$;

-- ---------------------------------------------------------------------------
-- Helper functions (5). All pin search_path.
-- ---------------------------------------------------------------------------

-- 1. BEFORE UPDATE trigger: keep updated_at current.
CREATE OR REPLACE FUNCTION core.set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END
$fn$;

-- 2. Event store guard: refuses UPDATE / DELETE / TRUNCATE on ops.events.
CREATE OR REPLACE FUNCTION ops.refuse_event_mutation()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = ''
AS $fn$
BEGIN
  RAISE EXCEPTION 'ops.events is append-only (% refused)', TG_OP
    USING ERRCODE = 'P0001',
          HINT = 'Record a compensating event instead of changing history.';
END
$fn$;

-- 3. Canonical form of an email address / handle (contacts.primary_address).
CREATE OR REPLACE FUNCTION core.normalize_address(address text)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = ''
AS $fn$
  SELECT nullif(lower(btrim(address)), '')
$fn$;

-- 4. ops.next_event_version(uuid): defined after ops.events below.
-- 5. core.workspace_has_members(uuid): defined after core.members below.

-- =============================================================================
-- core (5 tables)
-- =============================================================================

CREATE TABLE IF NOT EXISTS core.workspaces (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name        text NOT NULL CHECK (btrim(name) <> ''),
  slug        text UNIQUE,
  settings    jsonb NOT NULL DEFAULT '{}',
  created_by  uuid DEFAULT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE core.workspaces IS 'The tenant. Every tenant row references one workspace.';

CREATE TABLE IF NOT EXISTS core.members (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id  uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  user_id       uuid NOT NULL,
  role          core.role_type NOT NULL DEFAULT 'member',
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, user_id)
);
COMMENT ON TABLE core.members IS 'Workspace membership of auth users, with a role (owner > admin > member > viewer)';

CREATE TABLE IF NOT EXISTS core.founders (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id  uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  user_id       uuid,
  display_name  text NOT NULL,
  email         text,
  title         text,
  timezone      text,
  preferences   jsonb NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, id),
  UNIQUE (workspace_id, user_id)
);
COMMENT ON TABLE core.founders IS 'The people the chief of staff works for';

CREATE TABLE IF NOT EXISTS core.contacts (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id     uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  display_name     text,
  primary_address  text NOT NULL CHECK (primary_address <> ''),
  addresses        text[] NOT NULL DEFAULT '{}',
  organization     text,
  title            text,
  notes            text,
  metadata         jsonb NOT NULL DEFAULT '{}',
  embedding        vector(1536),
  embedding_model  text,
  embedded_at      timestamptz,
  profile_hash     text,
  first_seen_at    timestamptz,
  last_seen_at     timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, id),
  UNIQUE (workspace_id, primary_address)
);
COMMENT ON TABLE core.contacts IS 'People and organisations seen in communications and meetings; primary_address is lower-cased';

CREATE TABLE IF NOT EXISTS core.integrations (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id    uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  provider        text NOT NULL,
  account         text,
  status          core.integration_status NOT NULL DEFAULT 'active',
  config          jsonb NOT NULL DEFAULT '{}',
  last_synced_at  timestamptz,
  last_error      text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, id)
);
COMMENT ON TABLE core.integrations IS 'Connected providers (gmail, slack, zoom, ...) per workspace';

-- 5. Whether a workspace has any member yet. SECURITY DEFINER so the bootstrap policy
--    on core.members (002) can see rows the caller is not allowed to read.
CREATE OR REPLACE FUNCTION core.workspace_has_members(p_workspace_id uuid)
RETURNS boolean
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $fn$
  SELECT EXISTS (SELECT 1 FROM core.members m WHERE m.workspace_id = p_workspace_id)
$fn$;
REVOKE ALL ON FUNCTION core.workspace_has_members(uuid) FROM PUBLIC;

-- =============================================================================
-- ops (6 tables)
-- =============================================================================

-- The append-only event store. No FK on workspace_id on purpose: the audit log
-- outlives tenants, and an FK with ON DELETE CASCADE would collide with the
-- absolute no-DELETE rule below.
CREATE TABLE IF NOT EXISTS ops.events (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id         uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
  workspace_id     uuid,
  aggregate_type   text NOT NULL,
  aggregate_id     uuid NOT NULL,
  version          integer NOT NULL CHECK (version > 0),
  event_type       text NOT NULL,
  payload          jsonb NOT NULL DEFAULT '{}',
  metadata         jsonb NOT NULL DEFAULT '{}',
  idempotency_key  text NOT NULL UNIQUE,
  occurred_at      timestamptz NOT NULL DEFAULT now(),
  recorded_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
  CONSTRAINT events_workspace_required
    CHECK (workspace_id IS NOT NULL OR aggregate_type IN ('maintenance_run', 'ingestion_job')),
  CONSTRAINT events_aggregate_version_key UNIQUE (aggregate_id, version)
);
COMMENT ON TABLE ops.events IS 'Append-only event store: UPDATE/DELETE/TRUNCATE refused by triggers (even for superusers) and revoked from every role. workspace_id has no FK: events outlive their tenant.';

-- 4. Next version number for an aggregate in the event store (1 for a new aggregate).
--    Concurrent writers still race; UNIQUE (aggregate_id, version) is the arbiter.
CREATE OR REPLACE FUNCTION ops.next_event_version(p_aggregate_id uuid)
RETURNS integer
LANGUAGE sql
STABLE
SET search_path = ''
AS $fn$
  SELECT coalesce(max(e.version), 0) + 1 FROM ops.events e WHERE e.aggregate_id = p_aggregate_id
$fn$;

CREATE TABLE IF NOT EXISTS ops.ingestion_jobs (
  id            uuid PRIMARY KEY,
  workspace_id  uuid REFERENCES core.workspaces (id) ON DELETE CASCADE,
  kind          ops.ingestion_kind,
  source        text,
  external_id   text,
  content_hash  text,
  status        ops.job_status NOT NULL DEFAULT 'queued',
  attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  last_error    text,
  error_field   text,
  payload       jsonb,
  result        jsonb NOT NULL DEFAULT '{}',
  arq_job_id    text,
  queued_at     timestamptz NOT NULL DEFAULT now(),
  started_at    timestamptz,
  finished_at   timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT ingestion_jobs_workspace_required CHECK (workspace_id IS NOT NULL OR status = 'failed'),
  CONSTRAINT ingestion_jobs_kind_required CHECK (kind IS NOT NULL OR status = 'failed')
);
COMMENT ON TABLE ops.ingestion_jobs IS 'Ingestion ledger; id is deterministic and supplied by the client. workspace_id/kind may be NULL only for failed (unattributable) jobs.';

CREATE TABLE IF NOT EXISTS ops.maintenance_runs (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  started_at   timestamptz NOT NULL DEFAULT now(),
  finished_at  timestamptz,
  status       ops.maintenance_status NOT NULL DEFAULT 'running',
  trigger      text NOT NULL DEFAULT 'cron',
  dry_run      boolean NOT NULL DEFAULT false,
  actions      jsonb NOT NULL DEFAULT '[]',
  summary      jsonb NOT NULL DEFAULT '{}',
  error        text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ops.maintenance_runs IS 'System table: one row per maintenance pass';

CREATE TABLE IF NOT EXISTS ops.slow_query_reports (
  id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run_id            uuid NOT NULL REFERENCES ops.maintenance_runs (id) ON DELETE CASCADE,
  queryid           bigint,
  query             text NOT NULL,
  calls             bigint,
  mean_ms           double precision,
  total_ms          double precision,
  rows              bigint,
  hit_ratio         double precision,
  previous_mean_ms  double precision,
  regression        boolean NOT NULL DEFAULT false,
  captured_at       timestamptz NOT NULL DEFAULT now(),
  created_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ops.slow_query_reports IS 'System table: pg_stat_statements snapshots taken by maintenance runs';

CREATE TABLE IF NOT EXISTS ops.index_builds (
  index_name     text PRIMARY KEY,
  table_name     text NOT NULL,
  rows_at_build  bigint NOT NULL,
  built_at       timestamptz NOT NULL DEFAULT now(),
  reason         text,
  duration_ms    integer,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ops.index_builds IS 'System table: last (re)build of each vector index (schema-qualified name)';

CREATE TABLE IF NOT EXISTS ops.sync_cursors (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id    uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  integration_id  uuid NOT NULL,
  stream          text NOT NULL,
  cursor          jsonb NOT NULL DEFAULT '{}',
  last_synced_at  timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, integration_id, stream),
  FOREIGN KEY (workspace_id, integration_id)
    REFERENCES core.integrations (workspace_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE ops.sync_cursors IS 'Incremental sync position per integration stream';

-- =============================================================================
-- media.assets first (comms.attachments references it)
-- =============================================================================

CREATE TABLE IF NOT EXISTS media.assets (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id      uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  source            text NOT NULL,
  external_id       text NOT NULL,
  kind              media.asset_kind NOT NULL,
  title             text,
  mime_type         text,
  duration_ms       bigint CHECK (duration_ms IS NULL OR duration_ms >= 0),
  uri               text,
  content_hash      text NOT NULL,
  metadata          jsonb NOT NULL DEFAULT '{}',
  ingestion_job_id  uuid,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, id),
  UNIQUE (workspace_id, source, external_id)
);
COMMENT ON TABLE media.assets IS 'Audio, video, image and document assets';

-- =============================================================================
-- comms (5 tables)
-- =============================================================================

CREATE TABLE IF NOT EXISTS comms.channels (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id    uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  integration_id  uuid,
  kind            comms.channel_type NOT NULL DEFAULT 'other',
  name            text,
  external_id     text,
  metadata        jsonb NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, id),
  FOREIGN KEY (workspace_id, integration_id)
    REFERENCES core.integrations (workspace_id, id) ON DELETE SET NULL (integration_id)
);
COMMENT ON TABLE comms.channels IS 'Mailboxes, chat channels, phone lines';

CREATE TABLE IF NOT EXISTS comms.threads (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id   uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  source         text NOT NULL,
  thread_key     text NOT NULL,
  subject        text,
  channel        comms.channel_type NOT NULL DEFAULT 'email',
  first_at       timestamptz,
  last_at        timestamptz,
  message_count  integer NOT NULL DEFAULT 0 CHECK (message_count >= 0),
  metadata       jsonb NOT NULL DEFAULT '{}',
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, id),
  UNIQUE (workspace_id, source, thread_key)
);
COMMENT ON TABLE comms.threads IS 'Conversation threads (by source + thread_key)';

CREATE TABLE IF NOT EXISTS comms.communications (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id      uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  thread_id         uuid,
  source            text NOT NULL,
  external_id       text NOT NULL,
  channel           comms.channel_type NOT NULL,
  subject           text,
  sender_name       text,
  sender_address    text,
  body              text,
  body_tsv          tsvector GENERATED ALWAYS AS
                      (to_tsvector('english'::regconfig, coalesce(subject, '') || ' ' || coalesce(body, ''))) STORED,
  content_hash      text NOT NULL,
  sent_at           timestamptz,
  metadata          jsonb NOT NULL DEFAULT '{}',
  token_count       integer,
  chunk_count       integer,
  embedding         vector(1536),
  embedding_model   text,
  embedded_at       timestamptz,
  ingestion_job_id  uuid,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, id),
  UNIQUE (workspace_id, source, external_id),
  FOREIGN KEY (workspace_id, thread_id)
    REFERENCES comms.threads (workspace_id, id) ON DELETE SET NULL (thread_id)
);
COMMENT ON TABLE comms.communications IS 'Messages (email, chat, sms, ...) with full-text and vector search';

CREATE TABLE IF NOT EXISTS comms.participants (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id      uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  communication_id  uuid NOT NULL,
  contact_id        uuid,
  role              comms.participant_role NOT NULL,
  name              text,
  address           text NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (workspace_id, communication_id)
    REFERENCES comms.communications (workspace_id, id) ON DELETE CASCADE,
  FOREIGN KEY (workspace_id, contact_id)
    REFERENCES core.contacts (workspace_id, id) ON DELETE SET NULL (contact_id)
);
COMMENT ON TABLE comms.participants IS 'Sender and recipients of a communication (immutable)';

CREATE TABLE IF NOT EXISTS comms.attachments (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id      uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  communication_id  uuid NOT NULL,
  filename          text,
  mime_type         text,
  size_bytes        bigint CHECK (size_bytes IS NULL OR size_bytes >= 0),
  uri               text,
  media_asset_id    uuid,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (workspace_id, communication_id)
    REFERENCES comms.communications (workspace_id, id) ON DELETE CASCADE,
  FOREIGN KEY (workspace_id, media_asset_id)
    REFERENCES media.assets (workspace_id, id) ON DELETE SET NULL (media_asset_id)
);
COMMENT ON TABLE comms.attachments IS 'Files attached to communications, optionally promoted to media assets';

-- =============================================================================
-- meetings (5 tables)
-- =============================================================================

CREATE TABLE IF NOT EXISTS meetings.meetings (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id  uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  source        text NOT NULL,
  external_id   text NOT NULL,
  title         text,
  starts_at     timestamptz,
  ends_at       timestamptz,
  status        meetings.meeting_status NOT NULL DEFAULT 'completed',
  metadata      jsonb NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT meetings_time_order CHECK (ends_at IS NULL OR starts_at IS NULL OR ends_at >= starts_at),
  UNIQUE (workspace_id, id),
  UNIQUE (workspace_id, source, external_id)
);
COMMENT ON TABLE meetings.meetings IS 'Meetings (calendar events, calls)';

CREATE TABLE IF NOT EXISTS meetings.participants (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id  uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  meeting_id    uuid NOT NULL,
  contact_id    uuid,
  name          text,
  address       text,
  role          text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (workspace_id, meeting_id)
    REFERENCES meetings.meetings (workspace_id, id) ON DELETE CASCADE,
  FOREIGN KEY (workspace_id, contact_id)
    REFERENCES core.contacts (workspace_id, id) ON DELETE SET NULL (contact_id)
);
COMMENT ON TABLE meetings.participants IS 'Attendees of a meeting (immutable)';

CREATE TABLE IF NOT EXISTS meetings.transcripts (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id      uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  meeting_id        uuid NOT NULL,
  source            text NOT NULL,
  external_id       text NOT NULL,
  language          text,
  format            text NOT NULL DEFAULT 'segments',
  content_hash      text NOT NULL,
  segment_count     integer,
  duration_ms       bigint CHECK (duration_ms IS NULL OR duration_ms >= 0),
  ingestion_job_id  uuid,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, id),
  UNIQUE (workspace_id, source, external_id),
  FOREIGN KEY (workspace_id, meeting_id)
    REFERENCES meetings.meetings (workspace_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE meetings.transcripts IS 'Transcripts of meetings';

CREATE TABLE IF NOT EXISTS meetings.transcript_chunks (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id     uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  transcript_id    uuid NOT NULL,
  meeting_id       uuid NOT NULL,
  chunk_index      integer NOT NULL CHECK (chunk_index >= 0),
  speaker          text,
  speakers         text[] NOT NULL DEFAULT '{}',
  start_ms         bigint,
  end_ms           bigint,
  content          text NOT NULL,
  content_hash     text NOT NULL,
  token_count      integer NOT NULL,
  embedding        vector(1536),
  embedding_model  text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT transcript_chunks_start_nonneg CHECK (start_ms IS NULL OR start_ms >= 0),
  CONSTRAINT transcript_chunks_time_order CHECK (end_ms IS NULL OR start_ms IS NULL OR end_ms >= start_ms),
  UNIQUE (transcript_id, chunk_index),
  FOREIGN KEY (workspace_id, transcript_id)
    REFERENCES meetings.transcripts (workspace_id, id) ON DELETE CASCADE,
  FOREIGN KEY (workspace_id, meeting_id)
    REFERENCES meetings.meetings (workspace_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE meetings.transcript_chunks IS 'Embeddable chunks of a transcript (immutable; re-chunking replaces rows)';

CREATE TABLE IF NOT EXISTS meetings.action_items (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id      uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  meeting_id        uuid NOT NULL,
  description       text NOT NULL,
  owner_contact_id  uuid,
  owner_name        text,
  due_at            timestamptz,
  status            work.item_status NOT NULL DEFAULT 'todo',
  metadata          jsonb NOT NULL DEFAULT '{}',
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (workspace_id, meeting_id)
    REFERENCES meetings.meetings (workspace_id, id) ON DELETE CASCADE,
  FOREIGN KEY (workspace_id, owner_contact_id)
    REFERENCES core.contacts (workspace_id, id) ON DELETE SET NULL (owner_contact_id)
);
COMMENT ON TABLE meetings.action_items IS 'Action items extracted from meetings';

-- =============================================================================
-- media (remaining 2 tables)
-- =============================================================================

CREATE TABLE IF NOT EXISTS media.media_chunks (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id     uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  asset_id         uuid NOT NULL,
  chunk_index      integer NOT NULL CHECK (chunk_index >= 0),
  start_ms         bigint,
  end_ms           bigint,
  content          text NOT NULL,
  content_hash     text NOT NULL,
  token_count      integer NOT NULL,
  embedding        vector(1536),
  embedding_model  text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT media_chunks_start_nonneg CHECK (start_ms IS NULL OR start_ms >= 0),
  CONSTRAINT media_chunks_time_order CHECK (end_ms IS NULL OR start_ms IS NULL OR end_ms >= start_ms),
  UNIQUE (asset_id, chunk_index),
  FOREIGN KEY (workspace_id, asset_id)
    REFERENCES media.assets (workspace_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE media.media_chunks IS 'Embeddable chunks of a media asset (immutable)';

CREATE TABLE IF NOT EXISTS media.asset_links (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id      uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  asset_id          uuid NOT NULL,
  meeting_id        uuid,
  communication_id  uuid,
  created_at        timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (workspace_id, asset_id)
    REFERENCES media.assets (workspace_id, id) ON DELETE CASCADE,
  FOREIGN KEY (workspace_id, meeting_id)
    REFERENCES meetings.meetings (workspace_id, id) ON DELETE CASCADE,
  FOREIGN KEY (workspace_id, communication_id)
    REFERENCES comms.communications (workspace_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE media.asset_links IS 'Links a media asset to a meeting and/or a communication';

-- =============================================================================
-- work (3 tables)
-- =============================================================================

CREATE TABLE IF NOT EXISTS work.projects (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id  uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  name          text NOT NULL,
  description   text,
  status        text NOT NULL DEFAULT 'active',
  metadata      jsonb NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, id)
);
COMMENT ON TABLE work.projects IS 'Projects grouping work items';

CREATE TABLE IF NOT EXISTS work.work_items (
  id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id         uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  project_id           uuid,
  title                text NOT NULL,
  description          text,
  status               work.item_status NOT NULL DEFAULT 'todo',
  priority             work.priority NOT NULL DEFAULT 'medium',
  assignee_contact_id  uuid,
  due_at               timestamptz,
  completed_at         timestamptz,
  source_type          text,
  source_id            uuid,
  metadata             jsonb NOT NULL DEFAULT '{}',
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, id),
  FOREIGN KEY (workspace_id, project_id)
    REFERENCES work.projects (workspace_id, id) ON DELETE SET NULL (project_id),
  FOREIGN KEY (workspace_id, assignee_contact_id)
    REFERENCES core.contacts (workspace_id, id) ON DELETE SET NULL (assignee_contact_id)
);
COMMENT ON TABLE work.work_items IS 'Tasks; source_type/source_id point at the record they came from (polymorphic, no FK)';

CREATE TABLE IF NOT EXISTS work.comments (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id    uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  work_item_id    uuid NOT NULL,
  author_user_id  uuid,
  body            text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (workspace_id, work_item_id)
    REFERENCES work.work_items (workspace_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE work.comments IS 'Comments on work items';

-- =============================================================================
-- intel (3 tables)
-- =============================================================================

CREATE TABLE IF NOT EXISTS intel.insights (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id     uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  insight_type     intel.insight_type NOT NULL,
  title            text NOT NULL,
  body             text NOT NULL,
  confidence       real CHECK (confidence IS NULL OR (confidence >= 0 AND confidence <= 1)),
  status           text NOT NULL DEFAULT 'active',
  metadata         jsonb NOT NULL DEFAULT '{}',
  embedding        vector(1536),
  embedding_model  text,
  embedded_at      timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, id)
);
COMMENT ON TABLE intel.insights IS 'Derived insights (summaries, risks, decisions, ...)';

CREATE TABLE IF NOT EXISTS intel.insight_sources (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id  uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  insight_id    uuid NOT NULL,
  source_type   text NOT NULL,
  source_id     uuid NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  UNIQUE (insight_id, source_type, source_id),
  FOREIGN KEY (workspace_id, insight_id)
    REFERENCES intel.insights (workspace_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE intel.insight_sources IS 'Evidence behind an insight (polymorphic source_type/source_id, no FK)';

CREATE TABLE IF NOT EXISTS intel.briefings (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id  uuid NOT NULL REFERENCES core.workspaces (id) ON DELETE CASCADE,
  founder_id    uuid,
  period_start  timestamptz NOT NULL,
  period_end    timestamptz NOT NULL,
  title         text,
  content       text,
  metadata      jsonb NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT briefings_period_order CHECK (period_end >= period_start),
  FOREIGN KEY (workspace_id, founder_id)
    REFERENCES core.founders (workspace_id, id) ON DELETE SET NULL (founder_id)
);
COMMENT ON TABLE intel.briefings IS 'Periodic briefings for a founder';

-- =============================================================================
-- Indexes
-- Conventions: every FK column; (workspace_id, <time>) for tenant listings;
-- GIN on jsonb metadata/payload and text[]; GIN full-text; HNSW on embeddings.
--
-- Vector indexes are HNSW (vector_cosine_ops, m = 16, ef_construction = 64: the
-- pgvector defaults, spelled out). HNSW builds incrementally, so it has good recall
-- on a table that starts empty and grows; IVFFlat computes its lists from the rows
-- present at build time, and on an empty table that is no data at all.
-- =============================================================================

-- core.workspaces
CREATE INDEX IF NOT EXISTS idx_workspaces_created_by ON core.workspaces (created_by);
CREATE INDEX IF NOT EXISTS idx_workspaces_settings ON core.workspaces USING gin (settings);

-- core.members
CREATE INDEX IF NOT EXISTS idx_members_user ON core.members (user_id, workspace_id);
CREATE INDEX IF NOT EXISTS idx_members_workspace_role ON core.members (workspace_id, role);

-- core.founders
CREATE INDEX IF NOT EXISTS idx_founders_user ON core.founders (user_id);
CREATE INDEX IF NOT EXISTS idx_founders_ws_created ON core.founders (workspace_id, created_at);
CREATE INDEX IF NOT EXISTS idx_founders_preferences ON core.founders USING gin (preferences);

-- core.contacts
CREATE INDEX IF NOT EXISTS idx_contacts_ws_created ON core.contacts (workspace_id, created_at);
CREATE INDEX IF NOT EXISTS idx_contacts_ws_last_seen ON core.contacts (workspace_id, last_seen_at DESC);
CREATE INDEX IF NOT EXISTS idx_contacts_addresses ON core.contacts USING gin (addresses);
CREATE INDEX IF NOT EXISTS idx_contacts_metadata ON core.contacts USING gin (metadata);
CREATE INDEX IF NOT EXISTS idx_contacts_ws_organization ON core.contacts (workspace_id, organization);
CREATE INDEX IF NOT EXISTS idx_contacts_embedding ON core.contacts
  USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);

-- core.integrations
CREATE INDEX IF NOT EXISTS idx_integrations_ws_provider ON core.integrations (workspace_id, provider);
CREATE INDEX IF NOT EXISTS idx_integrations_status ON core.integrations (status);
CREATE INDEX IF NOT EXISTS idx_integrations_config ON core.integrations USING gin (config);

-- ops.events
CREATE INDEX IF NOT EXISTS idx_events_aggregate_version ON ops.events (aggregate_id, version);
CREATE INDEX IF NOT EXISTS idx_events_ws_occurred ON ops.events (workspace_id, occurred_at);
CREATE INDEX IF NOT EXISTS idx_events_event_type ON ops.events (event_type);
CREATE INDEX IF NOT EXISTS idx_events_aggregate_type ON ops.events (aggregate_type, occurred_at);
CREATE INDEX IF NOT EXISTS idx_events_payload ON ops.events USING gin (payload);
CREATE INDEX IF NOT EXISTS idx_events_metadata ON ops.events USING gin (metadata);

-- ops.ingestion_jobs
CREATE INDEX IF NOT EXISTS idx_ingestion_jobs_lookup ON ops.ingestion_jobs (workspace_id, kind, source, external_id);
CREATE INDEX IF NOT EXISTS idx_ingestion_jobs_status_queued ON ops.ingestion_jobs (status, queued_at);
CREATE INDEX IF NOT EXISTS idx_ingestion_jobs_ws_created ON ops.ingestion_jobs (workspace_id, created_at);
CREATE INDEX IF NOT EXISTS idx_ingestion_jobs_content_hash ON ops.ingestion_jobs (content_hash);
CREATE INDEX IF NOT EXISTS idx_ingestion_jobs_arq_job ON ops.ingestion_jobs (arq_job_id);
CREATE INDEX IF NOT EXISTS idx_ingestion_jobs_payload ON ops.ingestion_jobs USING gin (payload);

-- ops.maintenance_runs / slow_query_reports / index_builds
CREATE INDEX IF NOT EXISTS idx_maintenance_runs_started ON ops.maintenance_runs (started_at DESC);
CREATE INDEX IF NOT EXISTS idx_maintenance_runs_status ON ops.maintenance_runs (status, started_at);
CREATE INDEX IF NOT EXISTS idx_slow_query_reports_run ON ops.slow_query_reports (run_id);
CREATE INDEX IF NOT EXISTS idx_slow_query_reports_queryid ON ops.slow_query_reports (queryid, captured_at);
CREATE INDEX IF NOT EXISTS idx_index_builds_table ON ops.index_builds (table_name);

-- ops.sync_cursors
CREATE INDEX IF NOT EXISTS idx_sync_cursors_integration ON ops.sync_cursors (integration_id);

-- comms.channels
CREATE INDEX IF NOT EXISTS idx_channels_integration ON comms.channels (integration_id);
CREATE INDEX IF NOT EXISTS idx_channels_ws_kind ON comms.channels (workspace_id, kind);
CREATE INDEX IF NOT EXISTS idx_channels_external ON comms.channels (workspace_id, external_id);
CREATE INDEX IF NOT EXISTS idx_channels_metadata ON comms.channels USING gin (metadata);

-- comms.threads
CREATE INDEX IF NOT EXISTS idx_threads_ws_last_at ON comms.threads (workspace_id, last_at DESC);
CREATE INDEX IF NOT EXISTS idx_threads_ws_created ON comms.threads (workspace_id, created_at);
CREATE INDEX IF NOT EXISTS idx_threads_metadata ON comms.threads USING gin (metadata);

-- comms.communications
CREATE INDEX IF NOT EXISTS idx_comms_thread ON comms.communications (thread_id);
CREATE INDEX IF NOT EXISTS idx_comms_ws_sent ON comms.communications (workspace_id, sent_at DESC);
CREATE INDEX IF NOT EXISTS idx_comms_ws_created ON comms.communications (workspace_id, created_at);
CREATE INDEX IF NOT EXISTS idx_comms_sender ON comms.communications (workspace_id, sender_address);
CREATE INDEX IF NOT EXISTS idx_comms_content_hash ON comms.communications (workspace_id, content_hash);
CREATE INDEX IF NOT EXISTS idx_comms_ingestion_job ON comms.communications (ingestion_job_id);
CREATE INDEX IF NOT EXISTS idx_comms_body_tsv ON comms.communications USING gin (body_tsv);
CREATE INDEX IF NOT EXISTS idx_comms_metadata ON comms.communications USING gin (metadata);
CREATE INDEX IF NOT EXISTS idx_comms_embedding ON comms.communications
  USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);

-- comms.participants
CREATE INDEX IF NOT EXISTS idx_comm_participants_communication ON comms.participants (communication_id);
CREATE INDEX IF NOT EXISTS idx_comm_participants_contact ON comms.participants (contact_id);
CREATE INDEX IF NOT EXISTS idx_comm_participants_ws_address ON comms.participants (workspace_id, address);

-- comms.attachments
CREATE INDEX IF NOT EXISTS idx_attachments_communication ON comms.attachments (communication_id);
CREATE INDEX IF NOT EXISTS idx_attachments_media_asset ON comms.attachments (media_asset_id);
CREATE INDEX IF NOT EXISTS idx_attachments_ws_created ON comms.attachments (workspace_id, created_at);

-- meetings.meetings
CREATE INDEX IF NOT EXISTS idx_meetings_ws_starts ON meetings.meetings (workspace_id, starts_at DESC);
CREATE INDEX IF NOT EXISTS idx_meetings_ws_created ON meetings.meetings (workspace_id, created_at);
CREATE INDEX IF NOT EXISTS idx_meetings_status ON meetings.meetings (workspace_id, status);
CREATE INDEX IF NOT EXISTS idx_meetings_metadata ON meetings.meetings USING gin (metadata);

-- meetings.participants
CREATE INDEX IF NOT EXISTS idx_meeting_participants_meeting ON meetings.participants (meeting_id);
CREATE INDEX IF NOT EXISTS idx_meeting_participants_contact ON meetings.participants (contact_id);
CREATE INDEX IF NOT EXISTS idx_meeting_participants_ws_address ON meetings.participants (workspace_id, address);

-- meetings.transcripts
CREATE INDEX IF NOT EXISTS idx_transcripts_meeting ON meetings.transcripts (meeting_id);
CREATE INDEX IF NOT EXISTS idx_transcripts_ws_created ON meetings.transcripts (workspace_id, created_at);
CREATE INDEX IF NOT EXISTS idx_transcripts_ingestion_job ON meetings.transcripts (ingestion_job_id);

-- meetings.transcript_chunks
CREATE INDEX IF NOT EXISTS idx_chunks_meeting ON meetings.transcript_chunks (meeting_id);
CREATE INDEX IF NOT EXISTS idx_chunks_ws_model_hash ON meetings.transcript_chunks (workspace_id, embedding_model, content_hash);
CREATE INDEX IF NOT EXISTS idx_chunks_speakers ON meetings.transcript_chunks USING gin (speakers);
CREATE INDEX IF NOT EXISTS idx_chunks_content_fts ON meetings.transcript_chunks
  USING gin (to_tsvector('english'::regconfig, content));
CREATE INDEX IF NOT EXISTS idx_chunks_embedding ON meetings.transcript_chunks
  USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);

-- meetings.action_items
CREATE INDEX IF NOT EXISTS idx_action_items_meeting ON meetings.action_items (meeting_id);
CREATE INDEX IF NOT EXISTS idx_action_items_owner ON meetings.action_items (owner_contact_id);
CREATE INDEX IF NOT EXISTS idx_action_items_ws_status ON meetings.action_items (workspace_id, status, due_at);
CREATE INDEX IF NOT EXISTS idx_action_items_metadata ON meetings.action_items USING gin (metadata);

-- media.assets
CREATE INDEX IF NOT EXISTS idx_assets_ws_created ON media.assets (workspace_id, created_at);
CREATE INDEX IF NOT EXISTS idx_assets_ws_kind ON media.assets (workspace_id, kind);
CREATE INDEX IF NOT EXISTS idx_assets_content_hash ON media.assets (workspace_id, content_hash);
CREATE INDEX IF NOT EXISTS idx_assets_ingestion_job ON media.assets (ingestion_job_id);
CREATE INDEX IF NOT EXISTS idx_assets_metadata ON media.assets USING gin (metadata);

-- media.media_chunks
CREATE INDEX IF NOT EXISTS idx_media_chunks_ws_model_hash ON media.media_chunks (workspace_id, embedding_model, content_hash);
CREATE INDEX IF NOT EXISTS idx_media_chunks_content_fts ON media.media_chunks
  USING gin (to_tsvector('english'::regconfig, content));
CREATE INDEX IF NOT EXISTS idx_media_chunks_embedding ON media.media_chunks
  USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);

-- media.asset_links
CREATE INDEX IF NOT EXISTS idx_asset_links_asset ON media.asset_links (asset_id);
CREATE INDEX IF NOT EXISTS idx_asset_links_meeting ON media.asset_links (meeting_id);
CREATE INDEX IF NOT EXISTS idx_asset_links_communication ON media.asset_links (communication_id);

-- work.projects
CREATE INDEX IF NOT EXISTS idx_projects_ws_created ON work.projects (workspace_id, created_at);
CREATE INDEX IF NOT EXISTS idx_projects_metadata ON work.projects USING gin (metadata);

-- work.work_items
CREATE INDEX IF NOT EXISTS idx_work_items_project ON work.work_items (project_id);
CREATE INDEX IF NOT EXISTS idx_work_items_assignee ON work.work_items (assignee_contact_id);
CREATE INDEX IF NOT EXISTS idx_work_items_ws_status_due ON work.work_items (workspace_id, status, due_at);
CREATE INDEX IF NOT EXISTS idx_work_items_ws_created ON work.work_items (workspace_id, created_at);
CREATE INDEX IF NOT EXISTS idx_work_items_source ON work.work_items (source_type, source_id);
CREATE INDEX IF NOT EXISTS idx_work_items_metadata ON work.work_items USING gin (metadata);

-- work.comments
CREATE INDEX IF NOT EXISTS idx_comments_work_item ON work.comments (work_item_id, created_at);
CREATE INDEX IF NOT EXISTS idx_comments_ws_created ON work.comments (workspace_id, created_at);

-- intel.insights
CREATE INDEX IF NOT EXISTS idx_insights_ws_created ON intel.insights (workspace_id, created_at);
CREATE INDEX IF NOT EXISTS idx_insights_ws_type_status ON intel.insights (workspace_id, insight_type, status);
CREATE INDEX IF NOT EXISTS idx_insights_metadata ON intel.insights USING gin (metadata);
CREATE INDEX IF NOT EXISTS idx_insights_embedding ON intel.insights
  USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);

-- intel.insight_sources
CREATE INDEX IF NOT EXISTS idx_insight_sources_source ON intel.insight_sources (source_type, source_id);
CREATE INDEX IF NOT EXISTS idx_insight_sources_ws_created ON intel.insight_sources (workspace_id, created_at);

-- intel.briefings
CREATE INDEX IF NOT EXISTS idx_briefings_founder ON intel.briefings (founder_id);
CREATE INDEX IF NOT EXISTS idx_briefings_ws_period ON intel.briefings (workspace_id, period_start DESC);
CREATE INDEX IF NOT EXISTS idx_briefings_metadata ON intel.briefings USING gin (metadata);

-- =============================================================================
-- Triggers
-- =============================================================================

-- updated_at on every base table in the 7 schemas that has that column.
DO $trg$
DECLARE
  r record;
BEGIN
  FOR r IN
    SELECT n.nspname AS schema_name, c.relname AS table_name
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'updated_at' AND NOT a.attisdropped
    WHERE c.relkind = 'r'
      AND n.nspname IN ('core', 'ops', 'comms', 'meetings', 'media', 'work', 'intel')
    ORDER BY 1, 2
  LOOP
    EXECUTE format(
      'CREATE OR REPLACE TRIGGER trg_%s_updated_at BEFORE UPDATE ON %I.%I '
      'FOR EACH ROW EXECUTE FUNCTION core.set_updated_at()',
      r.table_name, r.schema_name, r.table_name);
  END LOOP;
END
$trg$;

-- Event store: refuse UPDATE / DELETE (row) and TRUNCATE (statement). ENABLE ALWAYS
-- so that session_replication_role = replica does not switch them off either.
CREATE OR REPLACE TRIGGER trg_events_refuse_mutation
  BEFORE UPDATE OR DELETE ON ops.events
  FOR EACH ROW EXECUTE FUNCTION ops.refuse_event_mutation();
CREATE OR REPLACE TRIGGER trg_events_refuse_truncate
  BEFORE TRUNCATE ON ops.events
  FOR EACH STATEMENT EXECUTE FUNCTION ops.refuse_event_mutation();
ALTER TABLE ops.events ENABLE ALWAYS TRIGGER trg_events_refuse_mutation;
ALTER TABLE ops.events ENABLE ALWAYS TRIGGER trg_events_refuse_truncate;

REVOKE UPDATE, DELETE, TRUNCATE ON ops.events FROM PUBLIC;

-- =============================================================================
-- Views (3). security_invoker: the caller's RLS applies through the view.
-- =============================================================================

CREATE OR REPLACE VIEW ops.ingestion_status WITH (security_invoker = true) AS
SELECT
  j.workspace_id,
  j.kind,
  j.status,
  count(*)::bigint      AS jobs,
  sum(j.attempts)::bigint AS attempts,
  min(j.queued_at)      AS oldest_queued_at,
  max(j.updated_at)     AS last_updated_at
FROM ops.ingestion_jobs j
GROUP BY j.workspace_id, j.kind, j.status;
COMMENT ON VIEW ops.ingestion_status IS 'Ingestion job counts by workspace, kind and status';

CREATE OR REPLACE VIEW comms.thread_summaries WITH (security_invoker = true) AS
SELECT
  t.id AS thread_id,
  t.workspace_id,
  t.source,
  t.thread_key,
  t.subject,
  t.channel,
  t.first_at,
  t.last_at,
  t.message_count,
  count(c.id)::bigint AS stored_messages,
  count(DISTINCT c.sender_address)::bigint AS distinct_senders,
  max(c.sent_at) AS last_sent_at
FROM comms.threads t
LEFT JOIN comms.communications c
  ON c.workspace_id = t.workspace_id AND c.thread_id = t.id
GROUP BY t.id;
COMMENT ON VIEW comms.thread_summaries IS 'Threads with message statistics';

CREATE OR REPLACE VIEW intel.workspace_activity WITH (security_invoker = true) AS
SELECT
  w.id   AS workspace_id,
  w.name AS workspace_name,
  (SELECT count(*) FROM comms.communications c WHERE c.workspace_id = w.id)::bigint AS communications,
  (SELECT count(*) FROM meetings.meetings m WHERE m.workspace_id = w.id)::bigint AS meetings,
  (SELECT count(*) FROM media.assets a WHERE a.workspace_id = w.id)::bigint AS media_assets,
  (SELECT count(*) FROM work.work_items wi
     WHERE wi.workspace_id = w.id AND wi.status NOT IN ('done', 'cancelled'))::bigint AS open_work_items,
  (SELECT count(*) FROM intel.insights i
     WHERE i.workspace_id = w.id AND i.status = 'active')::bigint AS active_insights,
  (SELECT max(e.occurred_at) FROM ops.events e WHERE e.workspace_id = w.id) AS last_event_at
FROM core.workspaces w;
COMMENT ON VIEW intel.workspace_activity IS 'Per-workspace activity counters';

-- =============================================================================
-- Record this migration
-- =============================================================================
INSERT INTO public.schema_migrations (version, name, checksum)
VALUES ('001', '001_initial_schema', NULL)
ON CONFLICT (version) DO NOTHING;

COMMIT;
