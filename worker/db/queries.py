"""Named SQL queries, loaded once from the ``.sql`` files in ``worker/db/sql/``.

Every statement lives in a ``.sql`` file (the procrastinate way), so reviewers read the
database surface in one place; Python refers to them by name: ``Q.ledger_start``.

A name is checked before it can run: ``Queries`` declares every name, mypy rejects a
misspelled attribute, and loading fails at import when the declarations and the files
disagree (``tests/unit/test_structure.py`` also checks every ``Q.<name>`` in the code).
``@NAME@`` in a file is a constant shared with Python (``worker.db.locks``), substituted
on load; ``{table}`` marks a template whose table name the caller formats in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from worker.db.locks import SQL_CONSTANTS

SQL_DIR = Path(__file__).parent / "sql"
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$")
_CONSTANT = re.compile(r"@([A-Z_]+)@")


class QueryError(RuntimeError):
    """The ``.sql`` files and the declared names disagree (raised at import)."""


def load(path: Path) -> dict[str, str]:
    """Split a file into ``{name: sql}`` on ``-- name: x`` markers (comments dropped)."""
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _NAME.match(line)
        if match:
            if match[1] in queries:
                raise QueryError(f"{path.name}: query {match[1]!r} is defined twice")
            current = queries.setdefault(match[1], [])
            continue
        if current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return {
        name: _constants("\n".join(lines).strip().rstrip(";"), name)
        for name, lines in queries.items()
    }


def _constants(sql: str, name: str) -> str:
    def value(match: re.Match[str]) -> str:
        if match[1] not in SQL_CONSTANTS:
            raise QueryError(f"query {name!r} names an unknown constant @{match[1]}@")
        return str(SQL_CONSTANTS[match[1]])

    return _CONSTANT.sub(value, sql)


def load_dir(directory: Path) -> dict[str, str]:
    """Every named query of every ``.sql`` file in ``directory``; names are unique."""
    queries: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, sql in load(path).items():
            if name in queries:
                raise QueryError(f"{path.name}: query {name!r} is defined in two files")
            queries[name] = sql
    return queries


class Queries:
    """The named queries, one attribute each (declared here so a typo is caught early)."""

    analyze_table: str
    analyze_table_stats: str
    create_database: str
    current_comm_jobs_page: str
    current_source_job: str
    database_exists: str
    delete_comm_participants: str
    delete_media_chunks: str
    asset_hash: str
    replace_attachments: str
    link_message_assets: str
    delete_meeting_participants: str
    delete_transcript_chunks: str
    embedded_tokens: str
    # erase.sql: cos-worker erase (worker/db/erase.py, worker/db/ledger/erasure.py)
    erase_scope_job_ids: str
    erase_append_event: str
    erase_ledger_rows: str
    erase_recount_threads: str
    erase_source_assets: str
    erase_source_communications: str
    erase_source_contacts: str
    erase_source_integrations: str
    erase_source_media_chunks: str
    erase_source_meetings: str
    erase_source_remaining: str
    erase_source_threads: str
    erase_source_transcript_chunks: str
    erase_source_transcripts: str
    erase_tenant_tables: str
    erase_workspace_remaining: str
    erase_workspace_row: str
    erase_workspace_rows: str
    ensure_thread: str
    ensure_threads_page: str
    events_insert: str
    events_lock_aggregates: str
    existing_workspaces: str
    fill_item_vectors: str
    find_thread: str
    find_threads_page: str
    index_item_vectors: str
    insert_comm_participants: str
    insert_meeting_participants: str
    ledger_counts: str
    ledger_finish: str
    ledger_finish_page: str
    ledger_insert: str
    ledger_insert_page: str
    ledger_lock_item_and_row: str
    ledger_lock_page: str
    ledger_lock_row: str
    ledger_lock_rows: str
    ledger_prunable_payloads: str
    ledger_prune_payloads: str
    ledger_reject: str
    ledger_restore_payloads: str
    ledger_payload: str
    ledger_set_arq_job_id: str
    ledger_start: str
    ledger_start_page: str
    lock_items_page: str
    lock_threads: str
    maintenance_capabilities: str
    maintenance_run_append_action: str
    maintenance_run_finish: str
    maintenance_run_insert: str
    maintenance_set_config: str
    maintenance_try_lock: str
    maintenance_unlock: str
    migrate_adopt_checksum: str
    migrate_applied: str
    migrate_ensure_table: str
    migrate_lock: str
    migrate_rollback: str
    migrate_supersede_checksum: str
    migrate_table_exists: str
    oldest_queued: str
    ivfflat_lists_for: str
    ivfflat_probes_for: str
    ivfflat_replacement_ddl: str
    ivfflat_swap_drop: str
    ivfflat_swap_rename: str
    oldest_queued_by_workspace: str
    pending_contacts: str
    pending_insights: str
    quote_ident: str
    recall_approx_bit: str
    recall_approx_vector: str
    recall_exact: str
    recall_index_shape: str
    recall_sample: str
    recall_set_local: str
    recall_table_rows: str
    reconcile_candidates: str
    reconcile_lock_unchanged: str
    reconcile_touch: str
    refresh_threads: str
    reindex_build_records: str
    reindex_counters_at_build: str
    reindex_drop_invalid: str
    reindex_invalid_indexes: str
    reindex_rebuild: str
    reindex_recall_at_build: str
    reindex_upsert_build: str
    reindex_vector_indexes: str
    reuse_chunk_embeddings: str
    reuse_chunk_embeddings_staged: str
    reuse_comm_embedding: str
    reuse_comm_embeddings: str
    search_memory: str
    seed_insight: str
    seed_workspace: str
    set_contact_embedding: str
    set_insight_embedding: str
    slow_insert_report: str
    slow_previous_entries: str
    slow_statement_columns: str
    slow_top_statements: str
    stage_item_vectors: str
    upsert_asset: str
    upsert_communications: str
    # lifecycle.sql: an item deleted upstream (worker/db/delete.py)
    delete_communication: str
    delete_orphan_attachment_assets: str
    delete_thread_if_empty: str
    delete_meeting: str
    delete_media_asset: str
    delete_unreferenced_contacts: str
    delete_earlier_ledger_rows: str
    set_communication_body: str
    # sync.sql: connectors' integrations and cursors (worker/db/sync.py)
    sync_find_integration: str
    sync_create_integration: str
    sync_advance_cursor: str
    sync_read_cursor: str
    sync_record_error: str
    sync_integrations: str
    sync_full_state: str
    sync_full_set: str
    sync_mark_seen: str
    sync_count_seen: str
    sync_unseen_batch: str
    sync_forget_seen: str
    upsert_contacts: str
    upsert_meeting: str
    upsert_transcript: str
    vector_schema: str
    workspace_counts: str
    workspace_exists: str

    def __init__(self, queries: dict[str, str], prepared: Iterable[str] | None = None) -> None:
        declared = set(type(self).__annotations__)
        if missing := sorted(declared - set(queries)):
            raise QueryError(f"declared but in no .sql file: {', '.join(missing)}")
        if undeclared := sorted(set(queries) - declared):
            raise QueryError(f"in a .sql file but not declared in Queries: {', '.join(undeclared)}")
        self._queries = dict(queries)
        self._prepared = set(queries if prepared is None else prepared)
        for name, sql in queries.items():
            setattr(self, name, sql)

    def names(self) -> list[str]:
        return sorted(self._queries)

    def plain(self) -> list[str]:
        """The statements the worker prepares on every pool connection at startup: those of
        ``PREPARED`` that are not templates (``{table}``), what can be prepared before a job
        formats one; the templates use no types beyond these.

        Only ``PREPARED`` (``queries.sql``, the ingestion path): the other files hold what
        the worker's role cannot prepare as it stands, and a failed prepare would fail every
        connection: utility statements and DDL (ANALYZE, REINDEX, CREATE, ROLLBACK), views
        of extensions that may be absent (``pg_stat_statements``), the migration runner's
        bookkeeping (run before the schema exists), statements meant for the login role.
        """
        return [
            sql
            for name, sql in sorted(self._queries.items())
            if name in self._prepared and "{" not in sql
        ]


# The file whose statements every pool connection prepares (see Queries.plain).
PREPARED = SQL_DIR / "queries.sql"
Q = Queries(load_dir(SQL_DIR), prepared=load(PREPARED))

# Tables with per-chunk vectors; the only values ever formatted into {table}.
CHUNK_TABLES = {"transcript": "meetings.transcript_chunks", "media": "media.media_chunks"}
SOURCE_TABLES = {
    "communication": "comms.communications",
    "transcript": "meetings.transcripts",
    "media": "media.assets",
}
