-- =============================================================================
-- 003_helpers_out_of_auth.sql — AI Chief of Staff: RLS helpers in schema authz
--
-- For databases migrated by the first release of 002, which created the five RLS
-- helpers in schema auth. Supabase projects no longer let postgres create objects in
-- auth (owned by supabase_auth_admin since April 2025), so 002 now creates them in schema
-- authz, which this project owns, and its policies call authz.*. This migration brings
-- an earlier database to the same layout, keeping every row:
-- * the helpers in authz (same definitions as 002's);
-- * every policy of the 7 schemas that calls auth.<helper> is rewritten, in place
--   (ALTER POLICY), to call authz.<helper>;
-- * auth.user_workspaces() and the others become thin wrappers of authz.* where auth
--   accepts CREATE; where it does not, a NOTICE says so.
-- On a database that 002 already migrated in the new layout it changes nothing.
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

-- ---------------------------------------------------------------------------
-- Helper functions (5), in schema authz (as in 002)
-- ---------------------------------------------------------------------------
CREATE SCHEMA IF NOT EXISTS authz;
COMMENT ON SCHEMA authz IS 'Row-level security helpers of the cos-worker schema (not exposed through the API)';

-- Workspaces the current user is a member of (any role).
CREATE OR REPLACE FUNCTION authz.user_workspaces()
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
CREATE OR REPLACE FUNCTION authz.has_workspace_role(p_workspace_id uuid, p_role core.role_type)
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
CREATE OR REPLACE FUNCTION authz.is_workspace_admin(p_workspace_id uuid)
RETURNS boolean
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $fn$
  SELECT authz.has_workspace_role(p_workspace_id, 'admin'::core.role_type)
$fn$;

-- Whether the current user is a founder in the workspace.
CREATE OR REPLACE FUNCTION authz.is_founder(p_workspace_id uuid)
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
CREATE OR REPLACE FUNCTION authz.get_founder_id(p_workspace_id uuid)
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

REVOKE ALL ON SCHEMA authz FROM PUBLIC;
GRANT USAGE ON SCHEMA authz TO authenticated, service_role;
REVOKE ALL ON FUNCTION authz.user_workspaces() FROM PUBLIC;
REVOKE ALL ON FUNCTION authz.has_workspace_role(uuid, core.role_type) FROM PUBLIC;
REVOKE ALL ON FUNCTION authz.is_workspace_admin(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION authz.is_founder(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION authz.get_founder_id(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  authz.user_workspaces(),
  authz.has_workspace_role(uuid, core.role_type),
  authz.is_workspace_admin(uuid),
  authz.is_founder(uuid),
  authz.get_founder_id(uuid),
  core.workspace_has_members(uuid)
TO authenticated, service_role;

-- The seed's names in schema auth, as thin wrappers, where auth accepts CREATE.
SET LOCAL client_min_messages = notice;
DO $wrappers$
BEGIN
  IF NOT has_schema_privilege('auth', 'CREATE') THEN
    RAISE NOTICE 'schema auth does not accept CREATE for %: the RLS helpers are in schema '
      'authz only (authz.user_workspaces() etc.); auth.user_workspaces() and the other '
      'wrappers are not created', current_user;
    RETURN;
  END IF;
  EXECUTE $fn$
    CREATE OR REPLACE FUNCTION auth.user_workspaces() RETURNS SETOF uuid ROWS 10
    LANGUAGE sql STABLE SET search_path = ''
    AS $body$ SELECT authz.user_workspaces() $body$
  $fn$;
  EXECUTE $fn$
    CREATE OR REPLACE FUNCTION auth.has_workspace_role(p_workspace_id uuid, p_role core.role_type)
    RETURNS boolean LANGUAGE sql STABLE SET search_path = ''
    AS $body$ SELECT authz.has_workspace_role(p_workspace_id, p_role) $body$
  $fn$;
  EXECUTE $fn$
    CREATE OR REPLACE FUNCTION auth.is_workspace_admin(p_workspace_id uuid)
    RETURNS boolean LANGUAGE sql STABLE SET search_path = ''
    AS $body$ SELECT authz.is_workspace_admin(p_workspace_id) $body$
  $fn$;
  EXECUTE $fn$
    CREATE OR REPLACE FUNCTION auth.is_founder(p_workspace_id uuid)
    RETURNS boolean LANGUAGE sql STABLE SET search_path = ''
    AS $body$ SELECT authz.is_founder(p_workspace_id) $body$
  $fn$;
  EXECUTE $fn$
    CREATE OR REPLACE FUNCTION auth.get_founder_id(p_workspace_id uuid)
    RETURNS uuid LANGUAGE sql STABLE SET search_path = ''
    AS $body$ SELECT authz.get_founder_id(p_workspace_id) $body$
  $fn$;
  -- (CREATE OR REPLACE resets every attribute: a wrapper that replaces a helper of the
  -- first 002 is SECURITY INVOKER; the authz helper it calls is the definer)
  REVOKE ALL ON FUNCTION auth.user_workspaces(), auth.has_workspace_role(uuid, core.role_type),
    auth.is_workspace_admin(uuid), auth.is_founder(uuid), auth.get_founder_id(uuid) FROM PUBLIC;
  GRANT EXECUTE ON FUNCTION auth.user_workspaces(),
    auth.has_workspace_role(uuid, core.role_type), auth.is_workspace_admin(uuid),
    auth.is_founder(uuid), auth.get_founder_id(uuid) TO authenticated, service_role;
END
$wrappers$;
SET LOCAL client_min_messages = warning;

-- ---------------------------------------------------------------------------
-- Policies that still call the helpers in auth: rewritten to call authz
-- ---------------------------------------------------------------------------
DO $rewrite$
DECLARE
  r record;
  pattern constant text :=
    '\mauth\.(user_workspaces|has_workspace_role|is_workspace_admin|is_founder|get_founder_id)\(';
  using_expr text;
  check_expr text;
BEGIN
  FOR r IN
    SELECT p.schemaname, p.tablename, p.policyname, p.qual, p.with_check
    FROM pg_policies p
    WHERE p.schemaname IN ('core', 'ops', 'comms', 'meetings', 'media', 'work', 'intel')
      AND (coalesce(p.qual, '') ~ pattern OR coalesce(p.with_check, '') ~ pattern)
  LOOP
    using_expr := regexp_replace(r.qual, pattern, 'authz.\1(', 'g');
    check_expr := regexp_replace(r.with_check, pattern, 'authz.\1(', 'g');
    IF using_expr IS NOT NULL THEN
      EXECUTE format('ALTER POLICY %I ON %I.%I USING (%s)',
                     r.policyname, r.schemaname, r.tablename, using_expr);
    END IF;
    IF check_expr IS NOT NULL THEN
      EXECUTE format('ALTER POLICY %I ON %I.%I WITH CHECK (%s)',
                     r.policyname, r.schemaname, r.tablename, check_expr);
    END IF;
  END LOOP;
END
$rewrite$;

-- =============================================================================
-- Record this migration
-- =============================================================================
INSERT INTO public.schema_migrations (version, name, checksum)
VALUES ('003', '003_helpers_out_of_auth', NULL)
ON CONFLICT (version) DO NOTHING;

COMMIT;
