-- =============================================================================
-- 007_ivfflat_vectors.sql — AI Chief of Staff: the bulk-written vector indexes become
-- binary-quantized IVFFlat; search_memory probes them by their lists
--
-- Chosen by measurement (bench/INDEX.md, `python -m bench.index`; 100,000 realistic
-- vectors in 5 workspaces, PostgreSQL 18 + pgvector 0.8.6, medians of 3):
-- * idx_comms_embedding, idx_chunks_embedding, idx_media_chunks_embedding become
--   `ivfflat ((binary_quantize(embedding)::bit(1536)) bit_hamming_ops)` with
--   lists = ops.ivfflat_lists(rows): an insert is one comparison with each list's
--   centre instead of an HNSW graph search (20,000-23,000 rows/s against 2,000 for
--   006's binary-quantized HNSW and 500 for the seed's; on the ingest's own vectors
--   0.035 ms of backend CPU a row against 0.8); recall@10 0.963 / p95 2.7-3.3 ms at
--   100 candidates re-ranked by exact cosine (006: 0.955 / 4.4 ms; seed at ef_search
--   40: 0.85 / 2.9 ms). Built in 2.3 s per 100k rows.
-- * The lists are centres of the rows there when the index is built: on an empty table
--   one list (every search reads all the table's 192-byte codes; fine to tens of
--   thousands of rows). The maintenance job (docs/maintenance.md) re-creates an index
--   whose lists are off by 2x for its rows, and rebuilds one whose measured recall
--   drifts: after a large first backfill, run `cos-worker maintenance` (or wait for its
--   schedule).
-- * ops.ivfflat_lists(rows) and ops.ivfflat_probes(lists): the sizing rules, one place
--   for this file, search_memory and the maintenance job.
-- * public.search_memory: as 006, and it sets ivfflat.probes per call from the indexes'
--   lists (ivfflat.iterative_scan relaxed_order on the function).
--
-- Needs pgvector >= 0.8 (binary_quantize, iterative IVFFlat scans for filtered search);
-- on older versions the indexes stay as 006 left them and a WARNING says so.
-- Building locks the three tables against writes for the build (seconds per 100k rows).
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
-- Sizing rules (pgvector's advice: rows / 1000 lists up to a million rows, sqrt(rows)
-- above; probe sqrt(lists) of them)
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION ops.ivfflat_lists(p_rows bigint)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
  SELECT CASE WHEN coalesce(p_rows, 0) <= 1000000
              THEN greatest(1, (coalesce(p_rows, 0) / 1000)::integer)
              ELSE least(32768, ceil(sqrt(p_rows))::integer) END
$$;
COMMENT ON FUNCTION ops.ivfflat_lists(bigint) IS
  'IVFFlat lists for a table of this many embedded rows (migration 007, maintenance)';

CREATE OR REPLACE FUNCTION ops.ivfflat_probes(p_lists integer)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
  SELECT least(greatest(coalesce(p_lists, 1), 1),
               greatest(ceil(sqrt(greatest(coalesce(p_lists, 1), 1)))::integer, 10))
$$;
COMMENT ON FUNCTION ops.ivfflat_probes(integer) IS
  'IVFFlat lists a search probes (ivfflat.probes) for an index of this many lists';

-- (EXECUTE stays PUBLIC's: arithmetic on a number, called by search_memory under the
-- caller's role and by the maintenance job under whichever role it logs in as)

-- ---------------------------------------------------------------------------
-- The three bulk-written vector indexes
-- ---------------------------------------------------------------------------
DO $idx$
DECLARE
  ext_schema text;
  ext_version text;
  t record;
  rows_now bigint;
  n_lists integer;
BEGIN
  SELECT n.nspname, e.extversion INTO ext_schema, ext_version
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
  WHERE e.extname = 'vector';
  IF to_regprocedure(format('%I.binary_quantize(%I.vector)', ext_schema, ext_schema)) IS NULL
     OR string_to_array(split_part(ext_version, '-', 1), '.')::int[] < ARRAY[0, 8] THEN
    RAISE WARNING 'pgvector % has no iterative IVFFlat scans (0.8): idx_comms_embedding, '
      'idx_chunks_embedding and idx_media_chunks_embedding stay as migration 006 left them',
      ext_version;
    RETURN;
  END IF;
  FOR t IN
    SELECT * FROM (VALUES
      ('comms', 'communications', 'idx_comms_embedding'),
      ('meetings', 'transcript_chunks', 'idx_chunks_embedding'),
      ('media', 'media_chunks', 'idx_media_chunks_embedding')) AS v (nsp, tbl, idx)
  LOOP
    CONTINUE WHEN EXISTS (
      SELECT 1 FROM pg_indexes
      WHERE schemaname = t.nsp AND indexname = t.idx
        AND indexdef LIKE '%USING ivfflat%binary_quantize%');
    EXECUTE format('SELECT count(*) FROM %I.%I WHERE embedding IS NOT NULL', t.nsp, t.tbl)
      INTO rows_now;
    n_lists := ops.ivfflat_lists(rows_now);
    EXECUTE format('DROP INDEX IF EXISTS %I.%I', t.nsp, t.idx);
    EXECUTE format(
      'CREATE INDEX %I ON %I.%I USING ivfflat ((%I.binary_quantize(embedding)::bit(1536)) '
      '%I.bit_hamming_ops) WITH (lists = %s)',
      t.idx, t.nsp, t.tbl, ext_schema, ext_schema, n_lists);
    INSERT INTO ops.index_builds (index_name, table_name, rows_at_build, built_at, reason)
    VALUES (t.nsp || '.' || t.idx, t.nsp || '.' || t.tbl, rows_now, now(),
            format('migration 007: binary-quantized IVFFlat, %s lists', n_lists))
    ON CONFLICT (index_name) DO UPDATE
      SET rows_at_build = EXCLUDED.rows_at_build, built_at = EXCLUDED.built_at,
          reason = EXCLUDED.reason, updated_at = now();
  END LOOP;
END
$idx$;

-- ---------------------------------------------------------------------------
-- public.search_memory (006's, plus the IVFFlat probes)
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION public.search_memory(
  p_workspace_id uuid,
  p_embedding    vector DEFAULT NULL,
  p_query        text DEFAULT NULL,
  p_limit        integer DEFAULT 10,
  p_kinds        text[] DEFAULT NULL,
  p_sources      text[] DEFAULT NULL,
  p_since        timestamptz DEFAULT NULL,
  p_until        timestamptz DEFAULT NULL,
  p_contact_id   uuid DEFAULT NULL
)
RETURNS TABLE (
  kind        text,              -- transcript | media | communication
  id          uuid,              -- the chunk (or the communication)
  item_id     uuid,              -- its meeting, asset or communication
  source      text,              -- the connector that delivered it
  content     text,
  speaker     text,
  start_ms    bigint,
  end_ms      bigint,
  "position"  jsonb,             -- where a document chunk is: {"page": 3}, ...
  came_with   text,              -- an attachment's message: its subject, else external id
  occurred_at timestamptz,       -- meeting start, message sent, linked message/meeting
  distance    double precision,  -- cosine distance to p_embedding
  text_rank   real,              -- ts_rank_cd against p_query
  score       double precision   -- reciprocal rank fusion: sum of 1 / (60 + rank)
)
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
AS $fn$
DECLARE
  kinds constant text[] := ARRAY['transcript', 'media', 'communication'];
  bad text;
  query tsquery;
  depth integer;
  candidates integer;
  quantized boolean;
  order_by text[];
  probes integer;
  q text;
BEGIN
  IF p_workspace_id IS NULL THEN
    RAISE EXCEPTION 'search_memory: p_workspace_id: required' USING ERRCODE = '22004';
  END IF;
  IF p_embedding IS NULL AND nullif(btrim(p_query), '') IS NULL THEN
    RAISE EXCEPTION 'search_memory: p_embedding or p_query: give at least one'
      USING ERRCODE = '22004';
  END IF;
  IF p_embedding IS NOT NULL AND vector_dims(p_embedding) <> 1536 THEN
    RAISE EXCEPTION 'search_memory: p_embedding: % dimensions, the schema stores 1536',
      vector_dims(p_embedding) USING ERRCODE = '22023';
  END IF;
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 100 THEN
    RAISE EXCEPTION 'search_memory: p_limit: % is outside 1..100', p_limit
      USING ERRCODE = '22023';
  END IF;
  SELECT k INTO bad FROM unnest(p_kinds) AS k WHERE k IS NULL OR k <> ALL (kinds) LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'search_memory: p_kinds: unknown kind % (transcript, media, communication)',
      coalesce(quote_literal(bad), 'NULL') USING ERRCODE = '22023';
  END IF;
  IF p_since IS NOT NULL AND p_until IS NOT NULL AND p_until <= p_since THEN
    RAISE EXCEPTION 'search_memory: p_until: % is not after p_since %', p_until, p_since
      USING ERRCODE = '22023';
  END IF;

  query := CASE WHEN nullif(btrim(p_query), '') IS NOT NULL
                THEN websearch_to_tsquery('english'::regconfig, p_query) END;
  IF query IS NOT NULL AND numnode(query) = 0 THEN
    query := NULL;  -- only stop words: nothing for full text to match
    IF p_embedding IS NULL THEN
      RETURN;
    END IF;
  END IF;
  -- Each ranked list (vector, full text) contributes its best `depth` rows to the fusion.
  depth := least(100, greatest(20, 2 * p_limit));
  -- The binary-quantized indexes (006, 007) are searched by Hamming distance and
  -- re-ranked: hnsw.ef_search (set on this function) candidates per source.
  SELECT array_agg(CASE WHEN i.indexdef LIKE '%binary_quantize%'
                        THEN 'binary_quantize(c.embedding)::bit(1536) <~> binary_quantize($2)'
                        ELSE 'c.embedding <=> $2' END
                   ORDER BY v.ord),
         bool_or(i.indexdef LIKE '%binary_quantize%')
  INTO order_by, quantized
  FROM (VALUES (1, 'meetings', 'idx_chunks_embedding'), (2, 'media', 'idx_media_chunks_embedding'),
               (3, 'comms', 'idx_comms_embedding')) AS v (ord, nsp, idx)
  LEFT JOIN pg_indexes i ON i.schemaname = v.nsp AND i.indexname = v.idx;
  candidates := CASE WHEN quantized
                     THEN greatest(depth, coalesce(current_setting('hnsw.ef_search', true), '100')::int)
                     ELSE depth END;
  -- IVFFlat indexes (007) are probed in ops.ivfflat_probes(lists) of their lists (the
  -- largest index's), read from the index each call: the maintenance job re-creates
  -- them with more lists as the tables grow. SET LOCAL here ends with this call (the
  -- function carries its own ivfflat.probes).
  SELECT max(ops.ivfflat_probes(split_part(o.opt, '=', 2)::integer)) INTO probes
  FROM pg_class ic
  JOIN pg_namespace n ON n.oid = ic.relnamespace
  JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'ivfflat'
  CROSS JOIN LATERAL unnest(ic.reloptions) AS o (opt)
  WHERE o.opt LIKE 'lists=%'
    AND (n.nspname, ic.relname) IN (('meetings', 'idx_chunks_embedding'),
                                    ('media', 'idx_media_chunks_embedding'),
                                    ('comms', 'idx_comms_embedding'));
  IF probes IS NOT NULL THEN
    PERFORM set_config('ivfflat.probes', probes::text, true);
  END IF;

  -- Written once, planned per call with the arguments known (EXECUTE ... USING): the
  -- unused branches fold away and a small workspace is sorted exactly.
  -- $1 workspace, $2 embedding, $3 tsquery, $4 limit, $5 kinds, $6 sources, $7 since,
  -- $8 until, $9 contact, $10 candidates per source, $11 depth. tstzrange($7, $8) is
  -- [since, until), a NULL bound unbounded.
  q := format($sql$
WITH
vec_t AS (
  SELECT x.id, x.embedding <=> $2 AS distance FROM (
    SELECT c.id, c.embedding FROM meetings.transcript_chunks c
    WHERE $2 IS NOT NULL AND c.workspace_id = $1 AND c.embedding IS NOT NULL AND %4$s
    ORDER BY %1$s LIMIT $10) x
  ORDER BY 2 LIMIT $11),
vec_m AS (
  SELECT x.id, x.embedding <=> $2 AS distance FROM (
    SELECT c.id, c.embedding FROM media.media_chunks c
    WHERE $2 IS NOT NULL AND c.workspace_id = $1 AND c.embedding IS NOT NULL AND %5$s
    ORDER BY %2$s LIMIT $10) x
  ORDER BY 2 LIMIT $11),
vec_c AS (
  SELECT x.id, x.embedding <=> $2 AS distance FROM (
    SELECT c.id, c.embedding FROM comms.communications c
    WHERE $2 IS NOT NULL AND c.workspace_id = $1 AND c.embedding IS NOT NULL AND %6$s
    ORDER BY %3$s LIMIT $10) x
  ORDER BY 2 LIMIT $11),
vec AS (
  SELECT u.kind, u.id, row_number() OVER (ORDER BY u.distance, u.id) AS r FROM (
    SELECT 'transcript' AS kind, id, distance FROM vec_t
    UNION ALL SELECT 'media', id, distance FROM vec_m
    UNION ALL SELECT 'communication', id, distance FROM vec_c) u
  ORDER BY r LIMIT $11),
txt AS (
  SELECT u.kind, u.id, u.rank, row_number() OVER (ORDER BY u.rank DESC, u.id) AS r FROM (
    (SELECT 'transcript' AS kind, c.id, ts_rank_cd(c.content_tsv, $3) AS rank
     FROM meetings.transcript_chunks c
     WHERE $3 IS NOT NULL AND c.workspace_id = $1 AND %4$s AND c.content_tsv @@ $3
     ORDER BY 3 DESC LIMIT $11)
    UNION ALL
    (SELECT 'media', c.id, ts_rank_cd(c.content_tsv, $3)
     FROM media.media_chunks c
     WHERE $3 IS NOT NULL AND c.workspace_id = $1 AND %5$s AND c.content_tsv @@ $3
     ORDER BY 3 DESC LIMIT $11)
    UNION ALL
    (SELECT 'communication', c.id, ts_rank_cd(c.body_tsv, $3)
     FROM comms.communications c
     WHERE $3 IS NOT NULL AND c.workspace_id = $1 AND %6$s AND c.body_tsv @@ $3
     ORDER BY 3 DESC LIMIT $11)) u
  ORDER BY r LIMIT $11),
fused AS (
  SELECT f.kind, f.id, max(f.rank) AS text_rank, sum(1.0::float8 / (60 + f.r)) AS score
  FROM (SELECT kind, id, NULL::real AS rank, r FROM vec
        UNION ALL SELECT kind, id, rank, r FROM txt) f
  GROUP BY f.kind, f.id
  ORDER BY score DESC, text_rank DESC NULLS LAST, f.kind, f.id LIMIT $4)
SELECT r.* FROM (
  SELECT 'transcript'::text AS kind, c.id, c.meeting_id AS item_id, t.source, c.content,
         c.speaker, c.start_ms, c.end_ms, NULL::jsonb AS "position", NULL::text AS came_with,
         coalesce(m.starts_at, c.created_at) AS occurred_at,
         (c.embedding <=> $2)::float8 AS distance, f.text_rank, f.score
  FROM fused f
  JOIN meetings.transcript_chunks c ON c.id = f.id
  JOIN meetings.transcripts t ON t.workspace_id = c.workspace_id AND t.id = c.transcript_id
  JOIN meetings.meetings m ON m.workspace_id = c.workspace_id AND m.id = c.meeting_id
  WHERE f.kind = 'transcript'
  UNION ALL
  SELECT 'media', c.id, c.asset_id, a.source, c.content, NULL, c.start_ms, c.end_ms,
         c.metadata -> 'position', w.came_with, coalesce(w.sent_at, a.created_at),
         (c.embedding <=> $2)::float8, f.text_rank, f.score
  FROM fused f
  JOIN media.media_chunks c ON c.id = f.id
  JOIN media.assets a ON a.workspace_id = c.workspace_id AND a.id = c.asset_id
  LEFT JOIN LATERAL (
    SELECT coalesce(cm.subject, cm.external_id) AS came_with, cm.sent_at
    FROM media.asset_links l
    JOIN comms.communications cm ON cm.workspace_id = l.workspace_id AND cm.id = l.communication_id
    WHERE l.workspace_id = c.workspace_id AND l.asset_id = c.asset_id
    ORDER BY cm.sent_at NULLS LAST, cm.id LIMIT 1) w ON true
  WHERE f.kind = 'media'
  UNION ALL
  SELECT 'communication', c.id, c.id, c.source, coalesce(c.subject || E'\n', '') || coalesce(c.body, ''),
         c.sender_name, NULL, NULL, NULL, NULL, coalesce(c.sent_at, c.created_at),
         (c.embedding <=> $2)::float8, f.text_rank, f.score
  FROM fused f
  JOIN comms.communications c ON c.id = f.id
  WHERE f.kind = 'communication') r
ORDER BY r.score DESC, r.text_rank DESC NULLS LAST, r.distance NULLS LAST, r.kind, r.id
$sql$,
    order_by[1], order_by[2], order_by[3],
    -- %4$s: a transcript chunk passes the filters
    $f$('transcript' = ANY (coalesce($5, ARRAY['transcript']))
    AND ($6 IS NULL OR EXISTS (SELECT 1 FROM meetings.transcripts t
         WHERE t.workspace_id = c.workspace_id AND t.id = c.transcript_id AND t.source = ANY ($6)))
    AND ($7 IS NULL AND $8 IS NULL OR EXISTS (SELECT 1 FROM meetings.meetings m
         WHERE m.workspace_id = c.workspace_id AND m.id = c.meeting_id
           AND coalesce(m.starts_at, c.created_at) <@ tstzrange($7, $8)))
    AND ($9 IS NULL OR EXISTS (SELECT 1 FROM meetings.participants p
         WHERE p.workspace_id = c.workspace_id AND p.meeting_id = c.meeting_id
           AND p.contact_id = $9)))$f$,
    -- %5$s: a media chunk passes the filters (its time and people: the message or
    -- meeting it is linked to; an unlinked asset's time is when it was stored)
    $f$('media' = ANY (coalesce($5, ARRAY['media']))
    AND ($6 IS NULL OR EXISTS (SELECT 1 FROM media.assets a
         WHERE a.workspace_id = c.workspace_id AND a.id = c.asset_id AND a.source = ANY ($6)))
    AND ($7 IS NULL AND $8 IS NULL OR EXISTS (SELECT 1 FROM media.assets a
         WHERE a.workspace_id = c.workspace_id AND a.id = c.asset_id
           AND coalesce((SELECT min(cm.sent_at) FROM media.asset_links l
                         JOIN comms.communications cm
                           ON cm.workspace_id = l.workspace_id AND cm.id = l.communication_id
                         WHERE l.workspace_id = a.workspace_id AND l.asset_id = a.id),
                        a.created_at) <@ tstzrange($7, $8)))
    AND ($9 IS NULL OR EXISTS (SELECT 1 FROM media.asset_links l
         WHERE l.workspace_id = c.workspace_id AND l.asset_id = c.asset_id
           AND (EXISTS (SELECT 1 FROM comms.participants p
                        WHERE p.workspace_id = l.workspace_id
                          AND p.communication_id = l.communication_id AND p.contact_id = $9)
                OR EXISTS (SELECT 1 FROM meetings.participants p
                           WHERE p.workspace_id = l.workspace_id
                             AND p.meeting_id = l.meeting_id AND p.contact_id = $9)))))$f$,
    -- %6$s: a communication passes the filters
    $f$('communication' = ANY (coalesce($5, ARRAY['communication']))
    AND ($6 IS NULL OR c.source = ANY ($6))
    AND ($7 IS NULL AND $8 IS NULL OR coalesce(c.sent_at, c.created_at) <@ tstzrange($7, $8))
    AND ($9 IS NULL OR EXISTS (SELECT 1 FROM comms.participants p
         WHERE p.workspace_id = c.workspace_id AND p.communication_id = c.id
           AND p.contact_id = $9)))$f$);

  RETURN QUERY EXECUTE q
    USING p_workspace_id, p_embedding, query, p_limit, p_kinds, p_sources, p_since, p_until,
          p_contact_id, candidates, depth;
END
$fn$;

COMMENT ON FUNCTION public.search_memory(uuid, vector, text, integer, text[], text[],
  timestamptz, timestamptz, uuid) IS
  'Top-k chunks of a workspace across transcripts, media and communications: vector, full text or both (reciprocal rank fusion); runs under the caller''s RLS (docs/search.md)';


-- Search settings per pgvector version, and the extension's schema on the search path
-- (Supabase: extensions) so the operators resolve inside the function.
DO $cfg$
DECLARE
  ext_schema text;
  ext_version text;
  fn constant text :=
    'public.search_memory(uuid, vector, text, integer, text[], text[], timestamptz, timestamptz, uuid)';
BEGIN
  SELECT n.nspname, e.extversion INTO ext_schema, ext_version
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
  WHERE e.extname = 'vector';
  EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I', fn, ext_schema);
  IF string_to_array(split_part(ext_version, '-', 1), '.')::int[] >= ARRAY[0, 8] THEN
    -- 100 candidates, and the scan goes on past them when filters drop rows
    EXECUTE format('ALTER FUNCTION %s SET hnsw.ef_search = 100', fn);
    EXECUTE format('ALTER FUNCTION %s SET hnsw.iterative_scan = relaxed_order', fn);
    -- the IVFFlat indexes (007): the body sets probes from their lists; their scans, too,
    -- go on past the probed lists when filters drop rows
    EXECUTE format('ALTER FUNCTION %s SET ivfflat.probes = 10', fn);
    EXECUTE format('ALTER FUNCTION %s SET ivfflat.iterative_scan = relaxed_order', fn);
  ELSIF string_to_array(split_part(ext_version, '-', 1), '.')::int[] >= ARRAY[0, 7] THEN
    EXECUTE format('ALTER FUNCTION %s SET hnsw.ef_search = 150', fn);  -- bench: recall 0.964
  ELSE
    EXECUTE format('ALTER FUNCTION %s SET hnsw.ef_search = 100', fn);  -- seed HNSW: ~0.95
  END IF;
END
$cfg$;

REVOKE ALL ON FUNCTION public.search_memory(uuid, vector, text, integer, text[], text[],
  timestamptz, timestamptz, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.search_memory(uuid, vector, text, integer, text[], text[],
  timestamptz, timestamptz, uuid) TO authenticated, service_role;

-- =============================================================================
-- Record this migration
-- =============================================================================
INSERT INTO public.schema_migrations (version, name, checksum)
VALUES ('007', '007_ivfflat_vectors', NULL)
ON CONFLICT (version) DO NOTHING;

COMMIT;
