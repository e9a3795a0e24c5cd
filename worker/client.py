"""The connector client, where connectors import it: ``worker.client`` (see
``worker.queue.client``, which holds it with the rest of the queue layer)."""

from worker.queue.client import (
    QueueStatus,
    connect,
    enqueue,
    enqueue_communication,
    enqueue_email,
    enqueue_embed_pending,
    enqueue_many,
    enqueue_media,
    enqueue_transcript,
    queue_status,
    redis_settings_for,
)
from worker.queue.lifecycle import (
    Cursor,
    FullSync,
    begin_full_sync,
    current_full_sync,
    end_full_sync,
    enqueue_deletion,
    integrations,
    read_cursor,
    record_sync_error,
)

__all__ = [
    "Cursor",
    "FullSync",
    "QueueStatus",
    "begin_full_sync",
    "connect",
    "current_full_sync",
    "end_full_sync",
    "enqueue",
    "enqueue_communication",
    "enqueue_deletion",
    "enqueue_embed_pending",
    "enqueue_many",
    "enqueue_email",
    "enqueue_media",
    "enqueue_transcript",
    "integrations",
    "queue_status",
    "read_cursor",
    "record_sync_error",
    "redis_settings_for",
]
