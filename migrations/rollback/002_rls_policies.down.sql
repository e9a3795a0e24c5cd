-- =============================================================================
-- 002_rls_policies.down.sql — undo 002_rls_policies.sql
--
-- Drops every policy on the 30 tables, disables RLS, drops the 5 helpers (schema authz)
-- and their wrappers in auth (where 002 created them), revokes the grants 002 made,
-- restores core.workspaces.created_by's default and deletes the '002' tracking row.
--
-- Deliberately kept: the Supabase shim (schema auth, auth.uid()/jwt()/role(), roles
-- anon/authenticated/service_role) and USAGE on schema auth. On Supabase they are
-- Supabase's own; on plain PostgreSQL roles are cluster-wide and may be shared with
-- other databases. Re-applying 002 finds them and leaves them as they are.
-- =============================================================================

BEGIN;

SET LOCAL client_min_messages = warning;

-- Policies and RLS (only if 001 is still there)
DO $down$
DECLARE
  r record;
BEGIN
  FOR r IN
    SELECT p.schemaname, p.tablename, p.policyname
    FROM pg_policies p
    WHERE p.schemaname IN ('core', 'ops', 'comms', 'meetings', 'media', 'work', 'intel')
  LOOP
    EXECUTE format('DROP POLICY IF EXISTS %I ON %I.%I', r.policyname, r.schemaname, r.tablename);
  END LOOP;

  FOR r IN
    SELECT schemaname, tablename
    FROM pg_tables
    WHERE schemaname IN ('core', 'ops', 'comms', 'meetings', 'media', 'work', 'intel')
  LOOP
    EXECUTE format('ALTER TABLE %I.%I DISABLE ROW LEVEL SECURITY', r.schemaname, r.tablename);
  END LOOP;

  IF to_regclass('core.workspaces') IS NOT NULL THEN
    ALTER TABLE core.workspaces ALTER COLUMN created_by DROP DEFAULT;
  END IF;
END
$down$;

-- Helper functions: the wrappers in auth (only where auth accepts CREATE: where it does
-- not, 002 created none), then the helpers and their schema
DO $wrappers$
BEGIN
  IF has_schema_privilege('auth', 'CREATE') THEN
    DROP FUNCTION IF EXISTS auth.user_workspaces();
    DROP FUNCTION IF EXISTS auth.has_workspace_role(uuid, core.role_type);
    DROP FUNCTION IF EXISTS auth.is_workspace_admin(uuid);
    DROP FUNCTION IF EXISTS auth.is_founder(uuid);
    DROP FUNCTION IF EXISTS auth.get_founder_id(uuid);
  END IF;
END
$wrappers$;
DROP FUNCTION IF EXISTS authz.user_workspaces();
DROP FUNCTION IF EXISTS authz.has_workspace_role(uuid, core.role_type);
DROP FUNCTION IF EXISTS authz.is_workspace_admin(uuid);
DROP FUNCTION IF EXISTS authz.is_founder(uuid);
DROP FUNCTION IF EXISTS authz.get_founder_id(uuid);
DROP SCHEMA IF EXISTS authz;

-- Grants (roles exist: the shim is kept)
DO $grants$
DECLARE
  s text;
  present text[];
BEGIN
  SELECT array_agg(nspname) INTO present
  FROM pg_namespace
  WHERE nspname IN ('core', 'ops', 'comms', 'meetings', 'media', 'work', 'intel');
  IF present IS NULL THEN
    RETURN;
  END IF;
  FOREACH s IN ARRAY present LOOP
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM anon, authenticated, service_role', s);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM anon, authenticated, service_role', s);
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM anon, authenticated, service_role', s);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON TABLES FROM service_role', s);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON SEQUENCES FROM service_role', s);
  END LOOP;
  IF to_regprocedure('core.workspace_has_members(uuid)') IS NOT NULL THEN
    REVOKE ALL ON FUNCTION core.workspace_has_members(uuid) FROM authenticated, service_role;
  END IF;
END
$grants$;

DELETE FROM public.schema_migrations WHERE version = '002';

COMMIT;
