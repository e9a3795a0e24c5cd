"""All configuration in one place.

Every knob has a default and an environment variable of the same name (upper case).
With nothing set, the worker runs against embedded PostgreSQL and Redis servers it
starts itself, and embeds with the offline ``local`` provider, so a fresh checkout can
run end to end.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
EMBEDDING_DIMENSIONS = 1536
# OpenAI's hard limit for a single input of the text-embedding-3 family.
MAX_INPUT_TOKENS = 8191
LOCAL_MODEL_NAME = "local-hash-1536-v2"  # v2: rotated (dense) vectors, same cosines


class Settings(BaseSettings):
    """Worker configuration, read from the environment (and ``.env`` if present)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- connections -------------------------------------------------------------
    database_url: str | None = Field(
        default=None, description="PostgreSQL DSN; unset = embedded server under data_dir"
    )
    redis_url: str | None = Field(
        default=None, description="Redis URL; unset = embedded redis-server under data_dir"
    )
    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".local" / "share" / "cos-worker",
        description="Where embedded servers keep their data",
    )
    database_role: str | None = Field(
        default="service_role",
        description="Role every worker connection switches to (SET ROLE); empty = login role",
    )
    db_pool_min: int | None = Field(
        default=None,
        ge=1,
        description="Connections opened at startup and kept open (default: DB_POOL_MAX). "
        "Opened on demand, they are opened when a burst arrives: connect, role, codecs and "
        "type lookups on the event loop the burst's first jobs are waiting for",
    )
    db_pool_max: int = Field(default=8, ge=1)
    db_pool_live: int = Field(
        default=2,
        ge=0,
        description="Connections kept for live items (worker.core.priority), so a fresh "
        "e-mail does not queue behind a backfill's writes for one; 0 = none kept",
    )
    migrations_dir: Path = Field(default=REPO_ROOT / "migrations")

    # --- embeddings --------------------------------------------------------------
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    embedding_provider: Literal["auto", "openai", "local"] = Field(
        default="auto", description="auto = openai when OPENAI_API_KEY is set, else local"
    )
    embedding_model: str = "text-embedding-3-small"
    embedding_dimensions: int = EMBEDDING_DIMENSIONS
    embedding_encoding_format: Literal["float", "base64"] = "base64"
    embed_batch_max_inputs: int = Field(default=2048, ge=1, le=2048)
    embed_batch_max_tokens: int = Field(default=300_000, ge=MAX_INPUT_TOKENS)
    embed_batch_linger_ms: int = Field(
        default=50,
        ge=0,
        description="Light load: how long a partial request waits for jobs already started "
        "(nobody on the way: it goes at once)",
    )
    embed_batch_max_linger_ms: int = Field(
        default=30_000,
        ge=0,
        description="Bulk load (jobs seen waiting in the queue, until a request finds nobody "
        "on the way): how long a partial request waits for more rows. Long: under bulk "
        "load the database is the bottleneck and rows arrive as it frees handoff budget",
    )
    embed_max_concurrent_requests: int = Field(default=4, ge=1)
    embed_requests_per_minute: int = Field(default=3_000, ge=1)
    embed_tokens_per_minute: int = Field(default=1_000_000, ge=1)
    embed_rate_period_s: float = Field(
        default=60.0,
        gt=0,
        description="The window the account's per-minute limits are counted over (60 s at "
        "OpenAI; shorter only for test servers)",
    )
    embed_rate_headroom: float = Field(
        default=0.96,
        gt=0,
        le=1,
        description="Steady-state share of the limits spent; with EMBED_RATE_BURST_FRACTION "
        "at most 1, a strict sliding minute is never exceeded (bench/NOTES.md, the fleet)",
    )
    embed_rate_burst_fraction: float = Field(
        default=0.04,
        gt=0,
        le=1,
        description="Bucket capacity as a share of the per-minute limits (caps a request's tokens)",
    )
    embed_budget_shared: bool = Field(
        default=True,
        description="Every worker on this Redis takes from one budget per account "
        "(worker/embedding/budget.py); false: each worker paces itself alone",
    )
    embed_budget_id: str | None = Field(
        default=None,
        description="The shared budget's name; unset = derived from OPENAI_BASE_URL, the API "
        "key and the model. Give workers whose keys share an OpenAI organization one id",
    )
    embed_budget_timeout_s: float = Field(
        default=0.5,
        gt=0,
        description="A budget call Redis has not answered by then falls back to this "
        "worker's local share of the limits (logged), until Redis answers again",
    )
    embed_live_reserve: float = Field(
        default=0.25,
        ge=0,
        lt=1,
        description="Share of the budget's bucket that bulk (backfill) requests leave to live "
        "items: a fresh e-mail finds its tokens at once while a backfill spends the rate",
    )
    live_item_max_age: timedelta = Field(
        default=timedelta(days=2),
        ge=timedelta(0),
        description="An item is live (ahead of backfill in the queue and the budget) when "
        "its own time (sent, started) is at most this old, it is small "
        "(LIVE_ITEM_MAX_BYTES) and it does not come from a full sync; enqueue(priority=) "
        "overrides",
    )
    live_item_max_bytes: int = Field(
        default=256 * 1024,
        ge=0,
        description="A live item's payload JSON is at most this long (with no content_url)",
    )
    embed_request_timeout_s: float = Field(default=60.0, gt=0)
    embed_max_retries: int = Field(default=6, ge=0)
    embed_retry_max_wait_s: float = Field(default=60.0, gt=0)

    # --- chunking ----------------------------------------------------------------
    chunk_tokens: int = Field(default=512, ge=16, le=MAX_INPUT_TOKENS)
    chunk_overlap_tokens: int = Field(default=64, ge=0)
    stream_threshold_chunks: int = Field(
        default=1024,
        ge=1,
        description="Transcripts/media with more chunks than this are streamed: embedded and "
        "written window by window inside the item's one transaction (bounded memory)",
    )
    stream_window_chunks: int = Field(
        default=512, ge=1, description="Chunks per window when an item is streamed"
    )
    large_items_max: int = Field(
        default=2,
        ge=1,
        description="Large items processed at once per worker: those fetched by content_url "
        "(bodies up to FETCH_MAX_BYTES) and streamed ones (a pool connection for minutes)",
    )

    # --- content_url fetching ----------------------------------------------------
    fetch_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    fetch_timeout_s: float = Field(default=30.0, gt=0)
    fetch_allow_private: bool = Field(
        default=False, description="Allow content_url to reach loopback/private/link-local hosts"
    )

    # --- parsing: raw MIME messages and documents (README "Documents and e-mail") ----
    parse_workers: int = Field(
        default=1,
        ge=1,
        description="Child processes that parse MIME messages and documents (off the event "
        "loop: a hostile file can be killed without touching the worker)",
    )
    parse_timeout_s: float = Field(
        default=30.0, gt=0, description="Wall-clock seconds one parse may take; then killed"
    )
    parse_memory_mb: int = Field(
        default=1024,
        ge=128,
        description="Address-space limit (RLIMIT_AS) of a parsing child, in MiB: a zip bomb "
        "or a runaway parser fails with MemoryError there instead of growing the host",
    )
    malloc_mmap_threshold_bytes: int = Field(
        default=1024 * 1024,
        ge=0,
        le=32 * 1024 * 1024,
        description="glibc: allocations of at least this many bytes are mapped on their own and "
        "returned to the system when freed (worker/core/allocator.py); 0 leaves glibc's default",
    )
    parse_inline_html_chars: int = Field(
        default=256 * 1024,
        ge=0,
        description="HTML bodies up to this many characters are converted on the event loop "
        "(tens of microseconds); larger ones in the parsing child, under its timeout",
    )
    email_max_bytes: int = Field(default=40 * 1024 * 1024, ge=1, description="Raw MIME bytes")
    document_max_bytes: int = Field(
        default=25 * 1024 * 1024, ge=1, description="Bytes of one document or attachment read"
    )
    document_max_pages: int = Field(
        default=1_000, ge=1, description="PDF pages / slides / sheets read from one document"
    )
    document_max_chars: int = Field(
        default=2_000_000, ge=1, description="Characters extracted from one document"
    )
    document_max_unzipped_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1, description="Uncompressed bytes read from a DOCX/PPTX/XLSX"
    )
    mime_max_depth: int = Field(default=20, ge=1, description="MIME nesting levels followed")
    mime_max_parts: int = Field(default=500, ge=1, description="MIME parts read per message")
    email_max_attachments: int = Field(
        default=100, ge=0, description="Attachments kept per message"
    )

    # --- jobs --------------------------------------------------------------------
    queue_name: str = "cos:queue"
    worker_concurrency: int = Field(
        default=256,
        ge=1,
        description="arq max_jobs: jobs receiving, fetching or chunking at once (a job gives "
        "its slot back once its rows are queued for embedding: HANDOFF_MAX_ROWS)",
    )
    worker_poll_delay_s: float = Field(
        default=0.02,
        gt=0,
        description="How often arq polls Redis for new jobs (arq's default 0.5 s adds up to "
        "0.5 s of latency to every job and idles free job slots between polls)",
    )
    handoff_max_rows: int = Field(
        default=8192,
        ge=0,
        description="A job whose rows are queued for embedding gives its queue slot back "
        "while the handed-off jobs hold at most this many rows (0: jobs keep their slots)",
    )
    page_items_in_flight: int = Field(
        default=2000,
        ge=1,
        description="Items of page jobs one worker runs at once; further pages wait for "
        "room before their items start (bounds memory, the event loop's and the pool's "
        "queues: a fresh e-mail is not queued behind a backfill's thousands)",
    )
    handoff_drain_s: float = Field(
        default=30.0,
        ge=0,
        description="At shutdown, how long handed-off jobs may take to finish before they "
        "are cancelled (the reconciler re-enqueues them)",
    )
    enqueue_page_items: int = Field(
        default=500,
        ge=1,
        description="client.enqueue_many: jobs per ledger transaction and Redis call",
    )
    enqueue_page_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1,
        description="client.enqueue_many: a page also ends at this many bytes of payload JSON",
    )
    enqueue_job_items: int = Field(
        default=100,
        ge=1,
        description="client.enqueue_many: new items of a page travel as one arq job of at "
        "most this many (1: one job per item); pickups and queue round trips are then paid "
        "once per job",
    )
    enqueue_job_bytes: int = Field(
        default=256 * 1024,
        ge=1,
        description="client.enqueue_many: a page job also ends at this many bytes of payload "
        "JSON (a bigger item travels alone): bounds what a worker's job slots hold",
    )
    group_write_connections: int = Field(
        default=2,
        ge=1,
        description="Communications whose vectors are ready together are written in groups, "
        "one transaction each: at most this many groups at once (each holds a pool connection)",
    )
    group_write_max_items: int = Field(
        default=100,
        ge=1,
        description="Most communications in one group write (1: one transaction per item)",
    )
    group_write_max_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1,
        description="A group write also ends at this many characters of message bodies (one "
        "statement carries them all); a larger message is written on its own",
    )
    worker_name: str | None = Field(
        default=None,
        description="Names this worker's arq health-check key (`arq --check` finds it); "
        "unset = the host name (one per container). Give workers sharing a host their own",
    )
    worker_lane: Literal["all", "live"] = Field(
        default="all", description="live: take only live jobs (cos-worker live-lane)"
    )
    worker_health_check_s: float = Field(
        default=10.0,
        gt=0,
        description="How often each worker writes its arq health-check key and its fleet "
        "record (cos-worker status counts a worker alive while they exist)",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics on this port (0: any free port); unset = off",
    )
    metrics_host: str = Field(default="0.0.0.0", description="Address the metrics port binds")
    job_timeout_s: int = Field(default=1800, ge=1)
    job_max_tries: int = Field(default=5, ge=1)
    retry_base_delay_s: float = Field(default=2.0, ge=0)
    embed_pending_batch: int = Field(default=512, ge=1)
    reconcile_grace_s: float = Field(
        default=300.0,
        ge=0,
        description="A queued/running ledger row untouched this long with no live arq job "
        "is re-enqueued by the reconciler",
    )
    reconcile_every_minutes: int = Field(default=5, ge=1, le=60, description="reconciler cron")
    inline_payload_max_bytes: int = Field(
        default=1024 * 1024,
        ge=1,
        description="client.enqueue_many with db: a payload longer than this (JSON "
        "characters) stays in its ledger row and its Redis job names the row; the worker "
        "reads it from there (a 20 MB body is not copied through Redis and arq's buffers)",
    )
    sync_cleanup_batch: int = Field(
        default=500,
        ge=1,
        description="worker.client.end_full_sync: unseen items turned into deletion jobs per "
        "ledger transaction",
    )
    erase_batch_size: int = Field(
        default=2000,
        ge=1,
        description="cos-worker erase: rows per statement (and transaction), small enough "
        "that no lock is held long while workers keep ingesting",
    )

    # --- maintenance -------------------------------------------------------------
    maintenance_hour: int = Field(default=3, ge=0, le=23, description="nightly run, UTC hour")
    maintenance_minute: int = Field(default=17, ge=0, le=59)
    analyze_min_changed_rows: int = Field(default=1000, ge=0)
    analyze_min_changed_fraction: float = Field(default=0.10, ge=0)
    reindex_growth_factor: float = Field(default=2.0, gt=1)
    reindex_bloat_ratio: float = Field(default=0.30, gt=0)
    reindex_max_per_run: int = Field(default=2, ge=0)
    reindex_recall_target: float = Field(default=0.90, ge=0, le=1, description="0: no probe")
    maintenance_work_mem: str = "1GB"
    maintenance_parallel_workers: int = Field(default=2, ge=0)
    maintenance_lock_timeout: str = "5s"
    maintenance_statement_timeout: str = "2h"
    slow_query_min_mean_ms: float = Field(default=100.0, ge=0)
    slow_query_top_n: int = Field(default=20, ge=1)
    slow_query_regression_factor: float = Field(default=1.5, gt=1)
    ledger_payload_retention: timedelta = Field(
        default=timedelta(days=7),
        ge=timedelta(0),
        description="A finished job's (done, skipped, failed) ledger payload is dropped by "
        "the nightly maintenance this long after it finished; hash, sizes and outcome stay. "
        "Nothing reads it once the job is finished; the week is for people diagnosing one. "
        "ISO 8601 (P7D, PT36H) or 7d / '7 days' / HH:MM:SS",
    )

    # --- logging -----------------------------------------------------------------
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _overlap_below_target(self) -> Settings:
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError("CHUNK_OVERLAP_TOKENS must be smaller than CHUNK_TOKENS")
        if self.db_pool_min is not None and self.db_pool_min > self.db_pool_max:
            raise ValueError("DB_POOL_MIN must not be greater than DB_POOL_MAX")
        return self

    @property
    def provider(self) -> Literal["openai", "local"]:
        """The provider actually used: ``auto`` resolves on the presence of an API key."""
        if self.embedding_provider == "auto":
            return "openai" if self.openai_api_key else "local"
        return self.embedding_provider

    @property
    def effective_model(self) -> str:
        """Model name recorded on every vector row (the local provider has its own)."""
        return LOCAL_MODEL_NAME if self.provider == "local" else self.embedding_model


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return Settings()
