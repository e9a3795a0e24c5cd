-- Setting up servers and connections, outside the ingestion path: the embedded database
-- (worker/db/admin.py), every connection's pgvector codec (worker/db/pool.py), identifier
-- quoting for templates. Run as the login role, some before the schema exists: none is
-- prepared on the worker's pool (Queries.plain() takes queries.sql only).

-- name: vector_schema
-- Schema of the pgvector extension, for registering its codec on a new connection; no row
-- when the extension is not installed yet (a database before its first migration).
SELECT n.nspname
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'vector';

-- name: quote_ident
-- An identifier ($1) quoted where needed, for formatting into a template's {placeholder}.
SELECT quote_ident($1);

-- name: database_exists
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1);

-- name: create_database
-- {database}: the name, quoted by quote_ident. Cannot run inside a transaction block.
CREATE DATABASE {database};
