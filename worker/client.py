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
    enqueue_deletion,
    integrations,
    read_cursor,
    record_sync_error,
)

__all__ = [
    "Cursor",
    "QueueStatus",
    "connect",
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
