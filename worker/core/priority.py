"""Live or bulk: which items go ahead (issue 20's fairness policy). Pure: no I/O.

Why: one workspace's 50,000-message backfill must not starve another's fresh e-mail,
and nothing may sit idle while it waits. So an item is *live* or *bulk*:

* live: recent (its own time, sent or started, at most ``LIVE_ITEM_MAX_AGE`` old), small
  (payload JSON at most ``LIVE_ITEM_MAX_BYTES``, inline: no ``content_url``), and not
  part of a full sync. A connector may say so itself (``enqueue(priority="live")``).
* bulk: everything else (backfills, full syncs, large media, deletions, items whose
  time is unknown).

Live jobs are scored ``LIVE_SCORE_LEAD_MS`` (30 days) earlier in arq's queue (a sorted
set read lowest score first), so they are taken before any bulk job still waiting, while
bulk jobs keep the order they came in; a live-lane process (``worker.queue.lanes``) takes
only them. In the worker a live item's rows go
to the embedding batcher's live lane (own requests, no linger) and take from the budget's
live reserve (``worker.embedding.budget``). Bulk work still gets every slot and all of the
rate the live items leave.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from typing import Literal

from worker.core.payloads import (
    AnyPayload,
    CommunicationPayload,
    EmailPayload,
    TranscriptPayload,
)

Priority = Literal["auto", "live", "bulk"]

#: How much earlier than its enqueue time a live job is scored in arq's queue: 30 days, so
#: every live job sorts before every bulk job still waiting (and the live lane,
#: ``worker.queue.lanes``, tells them apart by score alone). The worker knows a live job
#: by it (``is_live_score``); arq's own log line is told the real delay.
LIVE_SCORE_LEAD_MS = 30 * 24 * 3_600_000

#: Base64 characters of a raw message read for its Date header (12 KiB of headers).
_HEADER_PREFIX_CHARS = 16_384


def item_time(model: AnyPayload) -> datetime | None:
    """The item's own time (sent, meeting start, the Date header); None when unknown."""
    if isinstance(model, CommunicationPayload):
        return model.sent_at
    if isinstance(model, TranscriptPayload):
        return model.meeting.starts_at if model.meeting else None
    if isinstance(model, EmailPayload) and model.raw:
        return _date_header(model.raw)
    return None


def _date_header(raw: str) -> datetime | None:
    prefix = raw[:_HEADER_PREFIX_CHARS].strip().replace("-", "+").replace("_", "/")
    prefix = prefix[: len(prefix) // 4 * 4]
    try:
        head = base64.b64decode(prefix, validate=False)
    except (binascii.Error, ValueError):
        return None
    value = BytesHeaderParser().parsebytes(head).get("date")
    if not value:
        return None
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def is_live(
    model: AnyPayload,
    size: int,
    *,
    max_age: timedelta,
    max_bytes: int,
    now: datetime | None = None,
) -> bool:
    """Whether an item of ``size`` payload characters is live by the rule above."""
    if size > max_bytes or getattr(model, "content_url", None) is not None:
        return False
    when = item_time(model)
    if when is None:
        return False
    age = (now or datetime.now(UTC)) - when
    return age <= max_age


def queue_score(enqueued_ms: int, live: bool) -> int:
    """The job's score in arq's queue: live jobs ahead of every waiting bulk one."""
    return enqueued_ms - LIVE_SCORE_LEAD_MS if live else enqueued_ms


def is_live_score(score: int | None, enqueued_ms: int) -> bool:
    """Whether arq's score says the client queued this job as live (``queue_score``)."""
    # (half the lead: arq hands the enqueue time over as a datetime, rounded)
    return score is not None and enqueued_ms - score >= LIVE_SCORE_LEAD_MS // 2
