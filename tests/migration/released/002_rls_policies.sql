-- =============================================================================
-- 002_rls_policies.sql — AI Chief of Staff: row-level security
--
-- * On plain PostgreSQL, creates the parts of Supabase this relies on, only if they
--   are missing: schema auth, auth.uid() / auth.jwt() / auth.role(), and the roles
--   anon, authenticated (NOLOGIN) and service_role (NOLOGIN BYPASSRLS). On Supabase
--   they already exist and are left untouched.
-- * 5 helpers: auth.user_workspaces(), auth.has_workspace_role(uuid, core.role_type),
--   auth.is_workspace_admin(uuid), auth.is_founder(uuid), auth.get_founder_id(uuid).
--   SECURITY DEFINER (they read core.members / core.founders past RLS, which is what
--   avoids policy recursion), search_path = '' and fully qualified names.
-- * Enables RLS on all 30 tables (not FORCE: the owner runs migrations and the worker's
--   maintenance), grants, and 133 policies named <table>_<cmd>_<who>.
--
-- Policies compare workspace_id against an *uncorrelated* sub-select of a helper, e.g.
--   workspace_id IN (SELECT auth.user_workspaces())
--   workspace_id IN (SELECT w FROM auth.user_workspaces() AS w WHERE auth.is_workspace_admin(w))
-- so the helper (and auth.uid()) runs once per statement (a hashed SubPlan), not per row.
--
-- Idempotent (DROP POLICY IF EXISTS + CREATE POLICY, CREATE OR REPLACE FUNCTION,
-- guarded role/shim creation). Plain SQL only.
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

-- ---------------------------------------------------------------------------
-- Supabase shim (plain PostgreSQL only; every piece is created only if missing).
-- Roles are cluster-wide and the shim may be shared, so the down migration keeps it.
-- ---------------------------------------------------------------------------
DO $shim$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon NOLOGIN NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
  END IF;

  IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
    CREATE SCHEMA auth;
  END IF;

  -- Same semantics as Supabase's own definitions. Empty settings (a placeholder GUC
  -- that was set locally and rolled back reads as '') count as "no claims".
  IF NOT EXISTS (
    SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'auth' AND p.proname = 'uid' AND p.pronargs = 0
  ) THEN
    EXECUTE $fn$
      CREATE FUNCTION auth.uid() RETURNS uuid
      LANGUAGE sql STABLE
      SET search_path = ''
      AS $body$
        SELECT nullif(coalesce(
          nullif(current_setting('request.jwt.claim.sub', true), ''),
          nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
        ), '')::uuid
      $body$
    $fn$;
  END IF;

  IF NOT EXISTS (
    SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'auth' AND p.proname = 'jwt' AND p.pronargs = 0
  ) THEN
    EXECUTE $fn$
      CREATE FUNCTION auth.jwt() RETURNS jsonb
      LANGUAGE sql STABLE
      SET search_path = ''
      AS $body$
        SELECT coalesce(
          nullif(current_setting('request.jwt.claim', true), ''),
          nullif(current_setting('request.jwt.claims', true), '')
        )::jsonb
      $body$
    $fn$;
  END IF;

  IF NOT EXISTS (
    SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'auth' AND p.proname = 'role' AND p.pronargs = 0
  ) THEN
    EXECUTE $fn$
      CREATE FUNCTION auth.role() RETURNS text
      LANGUAGE sql STABLE
      SET search_path = ''
      AS $body$
        SELECT coalesce(
          nullif(current_setting('request.jwt.claim.role', true), ''),
          nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'
        )::text
      $body$
    $fn$;
  END IF;
END
$shim$;

-- ---------------------------------------------------------------------------
-- Helper functions (5)
-- ---------------------------------------------------------------------------

-- Workspaces the current user is a member of (any role).
CREATE OR REPLACE FUNCTION auth.user_workspaces()
RETURNS SETOF uuid
ROWS 10
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $fn$
  SELECT m.workspace_id FROM core.members m WHERE m.user_id = auth.uid()
$fn$;

-- Whether the current user holds at least p_role in the workspace
-- (owner > admin > member > viewer; explicit ranking, independent of enum order).
CREATE OR REPLACE FUNCTION auth.has_workspace_role(p_workspace_id uuid, p_role core.role_type)
RETURNS boolean
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $fn$
  SELECT EXISTS (
    SELECT 1
    FROM core.members m
    WHERE m.workspace_id = p_workspace_id
      AND m.user_id = auth.uid()
      AND array_position(ARRAY['viewer', 'member', 'admin', 'owner']::core.role_type[], m.role)
          >= array_position(ARRAY['viewer', 'member', 'admin', 'owner']::core.role_type[], p_role)
  )
$fn$;

-- Admin or owner of the workspace.
CREATE OR REPLACE FUNCTION auth.is_workspace_admin(p_workspace_id uuid)
RETURNS boolean
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $fn$
  SELECT auth.has_workspace_role(p_workspace_id, 'admin'::core.role_type)
$fn$;

-- Whether the current user is a founder in the workspace.
CREATE OR REPLACE FUNCTION auth.is_founder(p_workspace_id uuid)
RETURNS boolean
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $fn$
  SELECT EXISTS (
    SELECT 1 FROM core.founders f
    WHERE f.workspace_id = p_workspace_id AND f.user_id = auth.uid()
  )
$fn$;

-- The current user's founder id in the workspace (NULL if none).
CREATE OR REPLACE FUNCTION auth.get_founder_id(p_workspace_id uuid)
RETURNS uuid
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $fn$
  SELECT f.id FROM core.founders f
  WHERE f.workspace_id = p_workspace_id AND f.user_id = auth.uid()
  ORDER BY f.created_at, f.id
  LIMIT 1
$fn$;

REVOKE ALL ON FUNCTION auth.user_workspaces() FROM PUBLIC;
REVOKE ALL ON FUNCTION auth.has_workspace_role(uuid, core.role_type) FROM PUBLIC;
REVOKE ALL ON FUNCTION auth.is_workspace_admin(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION auth.is_founder(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION auth.get_founder_id(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  auth.user_workspaces(),
  auth.has_workspace_role(uuid, core.role_type),
  auth.is_workspace_admin(uuid),
  auth.is_founder(uuid),
  auth.get_founder_id(uuid),
  core.workspace_has_members(uuid)
TO authenticated, service_role;

-- A workspace created through the API belongs to its creator (the seed's
-- "INSERT INTO core.workspaces (name) ... RETURNING id" relies on this).
ALTER TABLE core.workspaces ALTER COLUMN created_by SET DEFAULT auth.uid();

-- ---------------------------------------------------------------------------
-- Grants
-- ---------------------------------------------------------------------------
GRANT USAGE ON SCHEMA core, ops, comms, meetings, media, work, intel, auth
  TO anon, authenticated, service_role;

-- service_role: everything (it also has BYPASSRLS), except changing history.
GRANT ALL ON ALL TABLES IN SCHEMA core, ops, comms, meetings, media, work, intel TO service_role;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA core, ops, comms, meetings, media, work, intel
  TO service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA core, ops, comms, meetings, media, work, intel
  GRANT ALL ON TABLES TO service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA core, ops, comms, meetings, media, work, intel
  GRANT USAGE, SELECT ON SEQUENCES TO service_role;
REVOKE UPDATE, DELETE, TRUNCATE ON ops.events FROM PUBLIC, anon, authenticated, service_role;

-- authenticated: DML on tenant tables (RLS filters), read-only on the ops ledgers,
-- nothing on the system tables. anon: no table privileges at all.
GRANT SELECT, INSERT, UPDATE, DELETE ON
  core.workspaces, core.members, core.founders, core.contacts, core.integrations,
  ops.sync_cursors,
  comms.channels, comms.threads, comms.communications, comms.participants, comms.attachments,
  meetings.meetings, meetings.participants, meetings.transcripts, meetings.transcript_chunks,
  meetings.action_items,
  media.assets, media.media_chunks, media.asset_links,
  work.projects, work.work_items, work.comments,
  intel.insights, intel.insight_sources, intel.briefings
TO authenticated;
GRANT SELECT ON ops.events, ops.ingestion_jobs TO authenticated;
GRANT SELECT ON ops.ingestion_status, comms.thread_summaries, intel.workspace_activity
  TO authenticated;

-- ---------------------------------------------------------------------------
-- Enable RLS on all 30 tables
-- ---------------------------------------------------------------------------
DO $rls$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY[
    'core.workspaces', 'core.members', 'core.founders', 'core.contacts', 'core.integrations',
    'ops.events', 'ops.ingestion_jobs', 'ops.maintenance_runs', 'ops.slow_query_reports',
    'ops.index_builds', 'ops.sync_cursors',
    'comms.channels', 'comms.threads', 'comms.communications', 'comms.participants',
    'comms.attachments',
    'meetings.meetings', 'meetings.participants', 'meetings.transcripts',
    'meetings.transcript_chunks', 'meetings.action_items',
    'media.assets', 'media.media_chunks', 'media.asset_links',
    'work.projects', 'work.work_items', 'work.comments',
    'intel.insights', 'intel.insight_sources', 'intel.briefings'
  ] LOOP
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
  END LOOP;
END
$rls$;

-- ---------------------------------------------------------------------------
-- Policies
-- ---------------------------------------------------------------------------

-- Every table: explicit service_role policy (service_role also has BYPASSRLS on
-- plain PG; the policy keeps it working where it does not).
DO $svc$
DECLARE
  r record;
BEGIN
  FOR r IN
    SELECT c.oid::regclass AS tbl, c.relname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
      AND n.nspname IN ('core', 'ops', 'comms', 'meetings', 'media', 'work', 'intel')
  LOOP
    EXECUTE format('DROP POLICY IF EXISTS %I ON %s', r.relname || '_all_service', r.tbl);
    EXECUTE format(
      'CREATE POLICY %I ON %s FOR ALL TO service_role USING (true) WITH CHECK (true)',
      r.relname || '_all_service', r.tbl);
  END LOOP;
END
$svc$;

-- Generic tenant tables: members (any role, incl. viewer) read; admins/owners write.
-- WITH CHECK repeats the workspace test so a row cannot be moved to a workspace
-- where the caller is not an admin.
DO $tenant$
DECLARE
  t text;
  tbl regclass;
  rel text;
  admin_ws constant text :=
    'workspace_id IN (SELECT w FROM auth.user_workspaces() AS w WHERE auth.is_workspace_admin(w))';
BEGIN
  FOREACH t IN ARRAY ARRAY[
    'core.founders', 'core.contacts', 'core.integrations',
    'ops.sync_cursors',
    'comms.channels', 'comms.threads', 'comms.communications', 'comms.participants',
    'comms.attachments',
    'meetings.meetings', 'meetings.participants', 'meetings.transcripts',
    'meetings.transcript_chunks', 'meetings.action_items',
    'media.assets', 'media.media_chunks', 'media.asset_links',
    'work.projects', 'work.work_items', 'work.comments',
    'intel.insights', 'intel.insight_sources', 'intel.briefings'
  ] LOOP
    tbl := t::regclass;
    rel := split_part(t, '.', 2);

    EXECUTE format('DROP POLICY IF EXISTS %I ON %s', rel || '_select_member', tbl);
    EXECUTE format(
      'CREATE POLICY %I ON %s FOR SELECT TO authenticated '
      'USING (workspace_id IN (SELECT auth.user_workspaces()))',
      rel || '_select_member', tbl);

    EXECUTE format('DROP POLICY IF EXISTS %I ON %s', rel || '_insert_admin', tbl);
    EXECUTE format(
      'CREATE POLICY %I ON %s FOR INSERT TO authenticated WITH CHECK (%s)',
      rel || '_insert_admin', tbl, admin_ws);

    EXECUTE format('DROP POLICY IF EXISTS %I ON %s', rel || '_update_admin', tbl);
    EXECUTE format(
      'CREATE POLICY %I ON %s FOR UPDATE TO authenticated USING (%s) WITH CHECK (%s)',
      rel || '_update_admin', tbl, admin_ws, admin_ws);

    EXECUTE format('DROP POLICY IF EXISTS %I ON %s', rel || '_delete_admin', tbl);
    EXECUTE format(
      'CREATE POLICY %I ON %s FOR DELETE TO authenticated USING (%s)',
      rel || '_delete_admin', tbl, admin_ws);
  END LOOP;
END
$tenant$;

-- core.workspaces ----------------------------------------------------------------
DROP POLICY IF EXISTS workspaces_select_member ON core.workspaces;
CREATE POLICY workspaces_select_member ON core.workspaces
  FOR SELECT TO authenticated
  USING (id IN (SELECT auth.user_workspaces()) OR created_by = (SELECT auth.uid()));

DROP POLICY IF EXISTS workspaces_insert_authenticated ON core.workspaces;
CREATE POLICY workspaces_insert_authenticated ON core.workspaces
  FOR INSERT TO authenticated
  WITH CHECK (created_by = (SELECT auth.uid()));

DROP POLICY IF EXISTS workspaces_update_admin ON core.workspaces;
CREATE POLICY workspaces_update_admin ON core.workspaces
  FOR UPDATE TO authenticated
  USING (id IN (SELECT w FROM auth.user_workspaces() AS w WHERE auth.is_workspace_admin(w)))
  WITH CHECK (id IN (SELECT w FROM auth.user_workspaces() AS w WHERE auth.is_workspace_admin(w)));

DROP POLICY IF EXISTS workspaces_delete_owner ON core.workspaces;
CREATE POLICY workspaces_delete_owner ON core.workspaces
  FOR DELETE TO authenticated
  USING (id IN (SELECT w FROM auth.user_workspaces() AS w
                WHERE auth.has_workspace_role(w, 'owner'::core.role_type)));

-- core.members -------------------------------------------------------------------
-- Admins manage memberships; only owners may create, change or remove owner rows.
DROP POLICY IF EXISTS members_select_member ON core.members;
CREATE POLICY members_select_member ON core.members
  FOR SELECT TO authenticated
  USING (workspace_id IN (SELECT auth.user_workspaces()));

DROP POLICY IF EXISTS members_insert_admin ON core.members;
CREATE POLICY members_insert_admin ON core.members
  FOR INSERT TO authenticated
  WITH CHECK (
    workspace_id IN (SELECT w FROM auth.user_workspaces() AS w WHERE auth.is_workspace_admin(w))
    AND (role <> 'owner'::core.role_type
         OR workspace_id IN (SELECT w FROM auth.user_workspaces() AS w
                             WHERE auth.has_workspace_role(w, 'owner'::core.role_type))));

-- Bootstrap: the creator of a workspace with no members yet may add themselves as owner.
DROP POLICY IF EXISTS members_insert_bootstrap ON core.members;
CREATE POLICY members_insert_bootstrap ON core.members
  FOR INSERT TO authenticated
  WITH CHECK (
    user_id = (SELECT auth.uid())
    AND role = 'owner'::core.role_type
    AND workspace_id IN (SELECT w.id FROM core.workspaces AS w
                         WHERE w.created_by = (SELECT auth.uid()))
    AND NOT core.workspace_has_members(workspace_id));

DROP POLICY IF EXISTS members_update_admin ON core.members;
CREATE POLICY members_update_admin ON core.members
  FOR UPDATE TO authenticated
  USING (
    workspace_id IN (SELECT w FROM auth.user_workspaces() AS w WHERE auth.is_workspace_admin(w))
    AND (role <> 'owner'::core.role_type
         OR workspace_id IN (SELECT w FROM auth.user_workspaces() AS w
                             WHERE auth.has_workspace_role(w, 'owner'::core.role_type))))
  WITH CHECK (
    workspace_id IN (SELECT w FROM auth.user_workspaces() AS w WHERE auth.is_workspace_admin(w))
    AND (role <> 'owner'::core.role_type
         OR workspace_id IN (SELECT w FROM auth.user_workspaces() AS w
                             WHERE auth.has_workspace_role(w, 'owner'::core.role_type))));

DROP POLICY IF EXISTS members_delete_admin ON core.members;
CREATE POLICY members_delete_admin ON core.members
  FOR DELETE TO authenticated
  USING (
    workspace_id IN (SELECT w FROM auth.user_workspaces() AS w WHERE auth.is_workspace_admin(w))
    AND (role <> 'owner'::core.role_type
         OR workspace_id IN (SELECT w FROM auth.user_workspaces() AS w
                             WHERE auth.has_workspace_role(w, 'owner'::core.role_type))));

-- ops.events / ops.ingestion_jobs: members read; writes come from the service role.
DROP POLICY IF EXISTS events_select_member ON ops.events;
CREATE POLICY events_select_member ON ops.events
  FOR SELECT TO authenticated
  USING (workspace_id IN (SELECT auth.user_workspaces()));

DROP POLICY IF EXISTS ingestion_jobs_select_member ON ops.ingestion_jobs;
CREATE POLICY ingestion_jobs_select_member ON ops.ingestion_jobs
  FOR SELECT TO authenticated
  USING (workspace_id IN (SELECT auth.user_workspaces()));

-- ops.maintenance_runs, ops.slow_query_reports, ops.index_builds: service role only
-- (no authenticated policy and no authenticated grant).

-- =============================================================================
-- Record this migration
-- =============================================================================
INSERT INTO public.schema_migrations (version, name, checksum)
VALUES ('002', '002_rls_policies', NULL)
ON CONFLICT (version) DO NOTHING;

COMMIT;
