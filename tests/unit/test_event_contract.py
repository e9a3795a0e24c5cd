"""The event contract's value rules (worker/db/ledger/contract.py, docs/events.md): what a
reason, a field path, a source name and an arq id look like once in the event store."""

from __future__ import annotations

import uuid

import pytest

from worker.db.ledger.contract import (
    EVENT_KEYS,
    clean,
    clean_metadata,
    safe_arq_id,
    safe_field,
    safe_reason,
    safe_source,
)


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("HTTP 404", "HTTP 404"),
        ("exceeds 1000 bytes (Content-Length 2000)", "exceeds 1000 bytes (Content-Length 2000)"),
        ("read 10 of 30 pages (DOCUMENT_MAX_PAGES)", "read 10 of 30 pages (DOCUMENT_MAX_PAGES)"),
        ("damaged pdf (cut short): trailer rebuilt", "damaged pdf (cut short): trailer rebuilt"),
        ("not a document (application/pdf)", "not a document (application/pdf)"),
        ("cannot resolve host 'zq.example' (gaierror)", "cannot resolve host '…' (gaierror)"),
        (
            "must be one of text/plain, text/html (got 'x')",
            "must be one of text/plain, text/html (got '…')",
        ),
        ("UniqueViolationError: Key (a)=(ann@example.com)", "UniqueViolationError"),
        ('line 3: bad cue: "Ann\'s notes"', "line 3: bad cue: '…'"),
        ("bad value 'unbalanced ann@example.com", "bad value …"),
        ("sent by ann@example.com via https://x.example/t?k=1 in a.pdf", "sent by … via … in …"),
    ],
)
def test_reasons_keep_our_wording_not_the_input(raw: str, kept: str) -> None:
    assert safe_reason(raw) == kept


def test_fields_sources_and_arq_ids() -> None:
    assert safe_field("recipients.3.address") == "recipients.3.address"
    assert safe_field("sender.ann@example.com") == "sender.*.*"
    assert safe_source("google-calendar") == "google-calendar"
    assert safe_source("gmail:ann@example.com").startswith("sha256:")
    own = [str(uuid.uuid4()), uuid.uuid4().hex, f"page:{uuid.uuid4().hex}", f"{uuid.uuid4()}~2"]
    assert [safe_arq_id(i) for i in own] == own
    assert safe_arq_id("<CAF1.x@mail.gmail.com>") == safe_arq_id("<CAF1.x@mail.gmail.com>")
    assert "gmail" not in str(safe_arq_id("<CAF1.x@mail.gmail.com>"))


def test_clean_drops_undeclared_keys_and_text() -> None:
    received = clean(
        "job.received",
        {"kind": "communication", "source": "gmail", "external_id": "<a@b>", "content_hash": "ab"},
    )
    assert received == {"kind": "communication", "source": "gmail", "content_hash": "ab"}
    failed = clean(
        "job.failed",
        {
            "error": "ValueError: ann@example.com",
            "field": "x",
            "result": {"subject": "s", "chunks": 1},
        },
    )
    assert failed == {"error": "ValueError", "field": "*", "result": {"chunks": 1}}
    # an event type the contract does not list keeps counts, not text
    assert clean("content.new_step", {"rows": 3, "title": "Salary", "note": "x"}) == {"rows": 3}
    assert clean_metadata({"attempt": 2, "arq_job_id": "<a@b>", "x": 1})["arq_job_id"].startswith(
        "sha256:"
    )
    assert set(EVENT_KEYS["content.stored"]) >= {"source_id", "chunks"}
