-- Scheduled database maintenance (worker/maintenance/): the single-flight lock and session
-- settings, the ANALYZE and REINDEX policies' catalog reads and statements, the slow-query
-- report, and the run's bookkeeping. The catalog reads and utility statements run on the
-- dedicated connection that keeps the DSN's login role; the bookkeeping (ops.*) on a
-- second one under the worker's role. None is prepared on the worker's pool
-- (Queries.plain() takes queries.sql only): utility statements cannot be prepared, and
-- pg_stat_statements may be absent.

-- name: maintenance_try_lock
-- Single flight across workers, held by the dedicated connection for the pass; a pass that
-- cannot take it records a skipped run. A dead worker's connection closes and releases it.
SELECT pg_try_advisory_lock(@MAINTENANCE_LOCK_KEY@);

-- name: maintenance_unlock
SELECT pg_advisory_unlock(@MAINTENANCE_LOCK_KEY@);

-- name: maintenance_set_config
-- A session setting (GUC) of the dedicated connection, for the run: $1 name, $2 value.
SELECT set_config($1, $2, false);

-- name: maintenance_capabilities
-- What the server offers, read once per run (worker/maintenance/capabilities.py): its
-- version, the login role, pgvector's version, and pg_stat_statements: on the server at
-- all, installed here (version, schema), preloaded. pg_settings hides
-- shared_preload_libraries from roles without pg_read_all_settings: NULL, "unknown".
SELECT current_setting('server_version_num')::int AS server_version_num,
       current_setting('server_version')           AS server_version,
       r.rolname                                    AS login_role,
       r.rolsuper                                   AS superuser,
       (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector_version,
       EXISTS (SELECT 1 FROM pg_available_extensions
               WHERE name = 'pg_stat_statements')   AS pgss_available,
       e.extversion                                 AS pgss_version,
       n.nspname                                    AS pgss_schema,
       (SELECT setting FROM pg_settings
        WHERE name = 'shared_preload_libraries')    AS preload_libraries
FROM pg_roles r
LEFT JOIN pg_extension e ON e.extname = 'pg_stat_statements'
LEFT JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE r.rolname = current_user;

-- name: analyze_table_stats
-- Counters are per table; they live in shared memory and survive until a stats reset.
-- Who may ANALYZE (capabilities.analyze_access): has_maintain only when the server knows
-- MAINTAIN ($2, PostgreSQL 17+; before, naming it is an error, and CASE never evaluates
-- it), ownership of the table or the database otherwise (pg_has_role: the owner's
-- privileges, as the server checks them; true for a superuser), and USAGE on the schema
-- (without it the table cannot be named).
SELECT s.schemaname,
       s.relname,
       quote_ident(s.schemaname) || '.' || quote_ident(s.relname) AS qualified,
       s.n_live_tup,
       s.n_mod_since_analyze,
       greatest(s.last_analyze, s.last_autoanalyze) AS last_analyzed,
       CASE WHEN $2::bool THEN has_table_privilege(s.relid, 'MAINTAIN') END AS has_maintain,
       pg_has_role(c.relowner, 'USAGE') AS owns_table,
       pg_has_role(d.datdba, 'USAGE') AS owns_database,
       has_schema_privilege(c.relnamespace, 'USAGE') AS schema_usage
FROM pg_stat_user_tables s
JOIN pg_class c ON c.oid = s.relid
CROSS JOIN (SELECT datdba FROM pg_database WHERE datname = current_database()) d
WHERE s.schemaname = ANY($1::text[])
ORDER BY s.schemaname, s.relname;

-- name: analyze_table
-- {table}: analyze_table_stats' qualified, quoted by quote_ident in the catalog query.
-- Plain ANALYZE: SHARE UPDATE EXCLUSIVE, blocks neither reads nor writes.
ANALYZE {table};

-- name: reindex_vector_indexes
-- Valid HNSW/IVFFlat indexes of the project's schemas ($1) with what the policy needs:
-- size in pages, the table's live/dead rows (reltuples when the counters are empty), the
-- index's first column's type (the column's, or an expression's: bit(1536) for the
-- binary-quantized index of migration 006) and the index options (m) for the
-- expected-size estimate. Who may REINDEX (capabilities.reindex_access): MAINTAIN when
-- the server knows it ($2, 17+), ownership of the table before (an index's owner is its
-- table's).
SELECT n.nspname                                             AS schema,
       ic.relname                                            AS index,
       quote_ident(n.nspname) || '.' || quote_ident(ic.relname) AS qualified,
       tn.nspname || '.' || tc.relname                       AS table_name,
       am.amname                                             AS method,
       pg_relation_size(ic.oid) / current_setting('block_size')::int AS pages,
       coalesce(s.n_live_tup, 0)                             AS live_rows,
       coalesce(s.n_dead_tup, 0)                             AS dead_rows,
       coalesce(s.n_tup_ins, 0)                              AS inserted_total,
       coalesce(s.n_tup_del, 0)                              AS deleted_total,
       greatest(tc.reltuples, 0)::bigint                     AS reltuples,
       format_type(a.atttypid, a.atttypmod)                  AS column_type,
       ic.reloptions                                         AS reloptions,
       CASE WHEN $2::bool THEN has_table_privilege(tc.oid, 'MAINTAIN') END AS has_maintain,
       pg_has_role(tc.relowner, 'USAGE')                     AS owns_table,
       has_schema_privilege(tc.relnamespace, 'USAGE')        AS schema_usage
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_am am ON am.oid = ic.relam
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace tn ON tn.oid = tc.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = ic.oid AND a.attnum = 1
LEFT JOIN pg_stat_user_tables s ON s.relid = tc.oid
WHERE am.amname IN ('hnsw', 'ivfflat')
  AND i.indisvalid
  AND n.nspname = ANY($1::text[])
ORDER BY n.nspname, ic.relname;

-- name: reindex_invalid_indexes
-- INVALID indexes of the project's schemas ($1): leftovers of interrupted concurrent
-- builds, unless their table has an index build in progress (someone's running
-- CREATE INDEX CONCURRENTLY: left alone). DROP needs ownership of the table (MAINTAIN
-- does not grant it), on every version.
SELECT n.nspname || '.' || ic.relname                        AS name,
       quote_ident(n.nspname) || '.' || quote_ident(ic.relname) AS qualified,
       tn.nspname || '.' || tc.relname                       AS table_name,
       pg_relation_size(ic.oid)                              AS bytes,
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
               WHERE p.relid = i.indrelid)                   AS build_in_progress,
       pg_has_role(tc.relowner, 'USAGE')                     AS owns_table
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace tn ON tn.oid = tc.relnamespace
WHERE NOT i.indisvalid
  AND n.nspname = ANY($1::text[])
ORDER BY 1;

-- name: reindex_build_records
-- The table's live rows when each index was last built: the growth policy's baseline.
SELECT index_name, rows_at_build FROM ops.index_builds;

-- name: reindex_upsert_build
-- Remember the table size at this (re)build (or the first-seen baseline).
INSERT INTO ops.index_builds (index_name, table_name, rows_at_build, built_at, reason,
                              duration_ms)
VALUES ($1, $2, $3, now(), $4, $5)
ON CONFLICT (index_name) DO UPDATE
SET table_name = EXCLUDED.table_name, rows_at_build = EXCLUDED.rows_at_build,
    built_at = EXCLUDED.built_at, reason = EXCLUDED.reason,
    duration_ms = EXCLUDED.duration_ms, updated_at = now();

-- name: reindex_rebuild
-- {index}: reindex_vector_indexes' qualified (quoted). Cannot run inside a transaction
-- block; reads and writes continue while the new index is built.
REINDEX INDEX CONCURRENTLY {index};

-- name: reindex_recall_at_build
-- The recall the probe measured right after each index's last rebuild by this job
-- (the reindex action's details.recall_after), if that rebuild is still the index's last
-- build (ops.index_builds: a later build, e.g. by a migration, makes it stale). A recall
-- that low right after a rebuild is not drift: rebuilding again would not restore it.
SELECT DISTINCT ON (b.index_name) b.index_name,
       (a -> 'details' ->> 'recall_after')::float8 AS recall_after
FROM ops.maintenance_runs r
CROSS JOIN LATERAL jsonb_array_elements(r.actions) a
JOIN ops.index_builds b ON b.index_name = a ->> 'target'
WHERE NOT r.dry_run
  AND a ->> 'kind' = 'reindex' AND a ->> 'status' = 'done'
  AND a -> 'details' ->> 'recall_after' IS NOT NULL
  AND coalesce(r.finished_at, now()) >= b.built_at
ORDER BY b.index_name, r.started_at DESC;

-- name: reindex_counters_at_build
-- The table's cumulative insert/delete counters (pg_stat_user_tables n_tup_ins/n_tup_del,
-- kept in each run's summary -> 'indexes') as the first finished run after each index's
-- last build saw them: rows churned since the build are today's counters minus these.
-- A build made during a run is first seen by the next one (what happened in between is
-- missed: the churn errs low). Counters that went down since were reset: the caller
-- treats the churn as unknown.
SELECT DISTINCT ON (b.index_name) b.index_name,
       (i ->> 'inserted_total')::bigint AS inserted_total,
       (i ->> 'deleted_total')::bigint  AS deleted_total
FROM ops.index_builds b
JOIN ops.maintenance_runs r ON r.started_at >= b.built_at
CROSS JOIN LATERAL jsonb_array_elements(r.summary -> 'indexes') i
WHERE NOT r.dry_run AND r.finished_at IS NOT NULL
  AND i ->> 'index' = b.index_name AND i ? 'deleted_total'
ORDER BY b.index_name, r.started_at;

-- name: recall_index_shape
-- What the recall probe (worker/maintenance/recall.py) needs of index $1 (schema.index):
-- its table (quoted), access method, definition (the indexed column or expression and
-- operator class are parsed from it) and pgvector's schema (quoted), to name its
-- functions and operators whatever the search_path.
SELECT quote_ident(tn.nspname) || '.' || quote_ident(tc.relname) AS qualified_table,
       am.amname                                             AS method,
       pg_get_indexdef(i.indexrelid)                         AS indexdef,
       ic.reloptions                                         AS reloptions,
       (SELECT quote_ident(n.nspname) FROM pg_extension e
        JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'vector')                          AS vector_schema
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace tn ON tn.oid = tc.relnamespace
WHERE i.indexrelid = to_regclass($1);

-- name: recall_table_rows
-- The table's ($1, quoted) estimated rows: the probe's sampling rate.
SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::regclass;

-- name: recall_set_local
-- A transaction-local setting of the probe ($1 name, $2 value): gone at COMMIT/ROLLBACK.
SELECT set_config($1, $2, true);

-- name: recall_sample
-- {table}, {column}: from recall_index_shape (quoted / parsed from the definition). About
-- $1 % of the heap's rows (BERNOULLI reads every heap page but no TOAST), $2 of them at
-- random: the stored vectors the probe's queries are made from.
SELECT {column} FROM {table} TABLESAMPLE BERNOULLI ($1)
WHERE {column} IS NOT NULL
ORDER BY random()
LIMIT $2;

-- name: recall_approx_vector
-- The probe's query for an index on a vector column: {operator} the operator class's
-- distance, {schema} pgvector's; $1 the query vector, $2 k. Run with the index forced.
SELECT ctid FROM {table}
ORDER BY {column} OPERATOR({schema}.{operator}) $1::{schema}.vector
LIMIT $2;

-- name: recall_approx_bit
-- The probe's query for a binary-quantized index (migration 006): $3 candidates by
-- Hamming distance on the index ({bits} the expression's length), re-ranked by exact
-- cosine distance, the first $2. As search_memory runs it.
SELECT c FROM (
  SELECT ctid AS c, {column} AS e FROM {table}
  ORDER BY ({schema}.binary_quantize({column}))::bit({bits})
           OPERATOR({schema}.<~>) {schema}.binary_quantize($1::{schema}.vector)
  LIMIT $3) x
ORDER BY e OPERATOR({schema}.<=>) $1::{schema}.vector
LIMIT $2;

-- name: recall_exact
-- The exact answer the probe compares with (run with index scans off): every embedding
-- of the table read and compared, so bounded by the probe's statement_timeout.
SELECT ctid FROM {table}
WHERE {column} IS NOT NULL
ORDER BY {column} OPERATOR({schema}.{operator}) $1::{schema}.vector
LIMIT $2;

-- name: reindex_drop_invalid
-- {index}: reindex_invalid_indexes' qualified (quoted). Does not block writes.
DROP INDEX CONCURRENTLY IF EXISTS {index};

-- name: slow_statement_columns
-- The columns of the pg_stat_statements view in schema $1: they differ by extension version
-- (mean_time/total_time before 1.8; blk_read_time until 1.10, shared_blk_read_time and
-- stats_since from 1.11, PostgreSQL 17), so slow_queries.choose_columns picks by name.
SELECT a.attname
FROM pg_attribute a
WHERE a.attrelid = to_regclass(quote_ident($1) || '.pg_stat_statements')
  AND a.attnum > 0 AND NOT a.attisdropped;

-- name: slow_top_statements
-- {schema} is the extension's schema from the catalog, quoted with quote_ident; {mean},
-- {total}, {read_time} and {stats_since} are column names of that view (unqualified: it is
-- the only relation in scope) from slow_queries.COLUMNS, chosen by slow_statement_columns,
-- or NULL where this version has none. Statements of this database with a mean of at least $1 ms, the $2 slowest by mean,
-- text cut to $3 characters; the maintenance run's own statements (slow by nature,
-- reported as actions anyway) are left out. read_time_ms needs track_io_timing.
SELECT *
FROM (SELECT s.queryid,
             left(s.query, $3)                                   AS query,
             s.calls,
             {mean}::float8                                      AS mean_ms,
             {total}::float8                                     AS total_ms,
             s.rows,
             CASE WHEN s.shared_blks_hit + s.shared_blks_read > 0
                  THEN s.shared_blks_hit::float8 / (s.shared_blks_hit + s.shared_blks_read)
             END                                                 AS hit_ratio,
             {read_time}::float8                                 AS read_time_ms,
             {stats_since}::timestamptz                          AS stats_since
      FROM {schema}.pg_stat_statements s
      WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND s.query !~* '^\s*(analyze|reindex|vacuum|drop\s+index)\M') s
WHERE s.mean_ms >= $1
ORDER BY s.mean_ms DESC
LIMIT $2;

-- name: slow_previous_entries
-- Latest earlier report entry per queryid ($1), from a run other than $2 (dry runs
-- excluded: never stored).
SELECT DISTINCT ON (r.queryid) r.queryid, r.calls, r.mean_ms, r.total_ms, r.captured_at
FROM ops.slow_query_reports r
JOIN ops.maintenance_runs m ON m.id = r.run_id
WHERE r.queryid = ANY($1::bigint[]) AND r.run_id <> $2 AND NOT m.dry_run
ORDER BY r.queryid, r.captured_at DESC, r.id DESC;

-- name: slow_insert_report
-- One entry of the run's report: the baseline for the next regression check.
INSERT INTO ops.slow_query_reports (run_id, queryid, query, calls, mean_ms, total_ms, rows,
                                    hit_ratio, previous_mean_ms, regression, captured_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now());

-- name: maintenance_run_insert
-- The run row, written with its maintenance.started (or .skipped) event; a skipped run is
-- finished as soon as it is recorded.
INSERT INTO ops.maintenance_runs (id, status, trigger, dry_run, summary, finished_at)
VALUES ($1, $2::ops.maintenance_status, $3, $4, $5::jsonb,
        CASE WHEN $2 = 'skipped' THEN now() END);

-- name: maintenance_run_append_action
-- One action appended to the run's list, with its maintenance.action event.
UPDATE ops.maintenance_runs
SET actions = actions || jsonb_build_array($2::jsonb), updated_at = now()
WHERE id = $1;

-- name: maintenance_run_finish
-- The run's outcome and summary, with its maintenance.finished event.
UPDATE ops.maintenance_runs
SET status = $2::ops.maintenance_status, summary = summary || $3::jsonb, error = $4,
    finished_at = now(), updated_at = now()
WHERE id = $1;

-- name: ledger_prune_payloads
-- Payload retention (worker/maintenance/retention.py, through worker/db/ledger/retention.py):
-- drop the payload of up to $3 jobs that finished (done, skipped, failed) more than $1
-- seconds ago, after job id $2. A keyset walk over the primary key: each batch starts where
-- the last one ended, so a pass reads each row once however many batches it takes. Rows
-- another transaction holds (a re-sent job being recorded as a no-op) are skipped, not
-- waited for: the next pass takes them. What the job was stays: content_hash, status,
-- last_error, result, with the payload's size as JSON text in result.payload_bytes (and
-- when it was dropped). A row whose payload is already NULL is not selected: idempotent.
-- last_id: where the next batch starts; stored_bytes: the payloads' size as stored
-- (pg_column_size: compressed, in TOAST), what the table gives back once vacuumed.
WITH batch AS MATERIALIZED (
  SELECT id, pg_column_size(payload) AS stored_bytes
  FROM ops.ingestion_jobs
  WHERE id > $2
    AND status IN ('done', 'skipped', 'failed')
    AND payload IS NOT NULL
    AND finished_at < now() - make_interval(secs => $1)
  ORDER BY id
  LIMIT $3
  FOR UPDATE SKIP LOCKED
), pruned AS (
  UPDATE ops.ingestion_jobs j
  SET result = j.result || jsonb_build_object('payload_bytes', octet_length(j.payload::text),
                                              'payload_pruned_at', now()),
      payload = NULL
  FROM batch
  WHERE j.id = batch.id
  RETURNING j.id, (j.result ->> 'payload_bytes')::bigint AS payload_bytes, batch.stored_bytes
)
SELECT count(*)::int                                    AS rows,
       (array_agg(id ORDER BY id DESC))[1]              AS last_id,
       coalesce(sum(payload_bytes), 0)::bigint          AS payload_bytes,
       coalesce(sum(stored_bytes), 0)::bigint           AS stored_bytes
FROM pruned;

-- name: ledger_prunable_payloads
-- What ledger_prune_payloads would drop (a dry run): finished more than $1 seconds ago,
-- payload still held. Read-only; pg_column_size reads the stored size without detoasting.
SELECT count(*)::int                                    AS rows,
       coalesce(sum(pg_column_size(payload)), 0)::bigint AS stored_bytes
FROM ops.ingestion_jobs
WHERE status IN ('done', 'skipped', 'failed')
  AND payload IS NOT NULL
  AND finished_at < now() - make_interval(secs => $1);

-- name: ivfflat_lists_for
-- The lists an IVFFlat index over $1 embedded rows should have (migration 007's rule,
-- ops.ivfflat_lists: one place for the migration, search and this job).
SELECT ops.ivfflat_lists($1::bigint);

-- name: ivfflat_probes_for
-- The lists a search probes in an IVFFlat index of $1 lists (ops.ivfflat_probes, 007).
SELECT ops.ivfflat_probes($1::integer);

-- name: ivfflat_replacement_ddl
-- The statement that builds index $1's (quoted) replacement $2 (bare name) with $3 lists:
-- its own definition, concurrently, renamed, other lists. Run by the caller outside a
-- transaction block: reads and writes continue while it is built.
SELECT regexp_replace(
         regexp_replace(pg_get_indexdef($1::regclass), '^CREATE INDEX \S+ ON',
                        'CREATE INDEX CONCURRENTLY ' || quote_ident($2) || ' ON'),
         'lists=''?\d+''?', 'lists=' || $3::integer);

-- name: ivfflat_swap_drop
-- {index}: the old index (quoted). Inside the swap's transaction, with the rename after it:
-- the table is locked for the moment the two take, never for the build.
DROP INDEX {index};

-- name: ivfflat_swap_rename
-- {replacement}: the new index (quoted); {name}: the old one's bare name (quoted).
ALTER INDEX {replacement} RENAME TO {name};
