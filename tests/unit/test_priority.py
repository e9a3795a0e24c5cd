"""Live or bulk (worker.core.priority): which items go ahead of a backfill."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta

from worker.core.log import HideJobArguments
from worker.core.payloads import parse_payload
from worker.core.priority import (
    LIVE_SCORE_LEAD_MS,
    is_live,
    is_live_score,
    item_time,
    queue_score,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
WS = "6f1e7a52-7d0e-4a53-9c3e-3a1b2c3d4e5f"
RULE = {"max_age": timedelta(days=2), "max_bytes": 10_000, "now": NOW}


def _mail(sent_at: str | None, body: str = "hello", **kw: object) -> object:
    return parse_payload(
        {
            "kind": "communication",
            "workspace_id": WS,
            "source": "gmail",
            "external_id": "m1",
            "channel": "email",
            "body": body,
            **({"sent_at": sent_at} if sent_at else {}),
            **kw,
        }
    )


def test_recent_small_items_are_live_and_old_large_or_undated_ones_bulk() -> None:
    assert is_live(_mail("2026-12-06T09:00:00Z"), 500, **RULE)
    assert not is_live(_mail("2026-11-01T09:00:00Z"), 500, **RULE)  # a backfill's
    assert not is_live(_mail("2026-12-06T09:00:00Z"), 20_000, **RULE)  # too large
    assert not is_live(_mail(None), 500, **RULE)  # no time of its own: bulk
    by_url = _mail(None, body=None, content_url="https://example.com/m.eml")
    assert not is_live(by_url, 500, **RULE)


def test_a_raw_message_is_dated_by_its_date_header() -> None:
    raw = b"Date: Sun, 06 Dec 2026 10:30:00 +0100\r\nSubject: hi\r\n\r\nbody\r\n"
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        payload = parse_payload(
            {
                "kind": "email",
                "workspace_id": WS,
                "source": "gmail",
                "external_id": "r1",
                "raw": encode(raw).decode().rstrip("="),
            }
        )
        assert item_time(payload) == datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
        assert is_live(payload, 200, **RULE)


def test_the_queue_score_carries_the_priority_to_the_worker() -> None:
    now_ms = 1_765_000_000_000
    assert queue_score(now_ms, False) == now_ms
    assert queue_score(now_ms, True) == now_ms - LIVE_SCORE_LEAD_MS
    assert is_live_score(queue_score(now_ms, True), now_ms + 3)  # (rounded enqueue time)
    assert not is_live_score(queue_score(now_ms, False), now_ms)
    assert not is_live_score(now_ms + 5_000, now_ms)  # a deferred retry
    assert not is_live_score(None, now_ms)


def test_arqs_log_line_tells_a_live_jobs_real_delay() -> None:
    record = logging.LogRecord(
        "arq.worker", logging.INFO, "", 0, HideJobArguments.START_LINE,
        (0.05, "abc:ingest", "{'body': 'secret'}", f" delayed={LIVE_SCORE_LEAD_MS / 1000 + 0.25:.2f}s"), None,
    )  # fmt: skip
    HideJobArguments().filter(record)
    assert record.getMessage().endswith("(…) delayed=0.25s live")
    assert "secret" not in record.getMessage()
