"""Payload validation: valid kinds round-trip, invalid input names its field, nothing but
PayloadError ever escapes parse_payload, identities are deterministic."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import uuid
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core import identity
from worker.core.payloads import (
    CommunicationPayload,
    MediaPayload,
    PayloadError,
    TranscriptPayload,
    content_hash,
    decode_json_payload,
    job_id,
    job_id_for,
    parse_payload,
)

WS = "6b1f4c1e-8d0a-4f3b-9d2e-0c5a7e9b1a23"


def communication(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": "communication",
        "workspace_id": WS,
        "source": "gmail",
        "external_id": "msg-1",
        "channel": "email",
        "subject": "Quarterly plan",
        "sender": {"name": "Ann", "address": " Ann@Example.COM "},
        "recipients": [{"address": "bob@example.com", "role": "cc"}],
        "sent_at": "2024-05-01T09:30:00",
        "body": "Let's meet on Friday.",
        "metadata": {"labels": ["inbox"], "thread": {"id": 7}},
    }
    data.update(over)
    return data


def transcript(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": "transcript",
        "workspace_id": WS,
        "source": "zoom",
        "external_id": "meet-1",
        "meeting": {
            "title": "Standup",
            "starts_at": "2024-05-01T09:00:00Z",
            "ends_at": "2024-05-01T09:15:00Z",
        },
        "participants": [{"address": "ann@example.com"}],
        "segments": [
            {"speaker": "Ann", "start_ms": i * 1000, "end_ms": i * 1000 + 900, "text": f"s{i}"}
            for i in range(5)
        ],
    }
    data.update(over)
    return data


def media(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": "media",
        "workspace_id": WS,
        "source": "drive",
        "external_id": "file-9",
        "asset": {"kind": "audio", "mime_type": "audio/mpeg", "duration_ms": 60000},
        "content_url": "https://files.example.com/a.vtt",
        "content_format": "vtt",
    }
    data.update(over)
    return data


def field_of(data: Any) -> str:
    with pytest.raises(PayloadError) as info:
        parse_payload(data)
    err = info.value
    assert str(err) == f"{err.field}: {err.reason}"
    assert err.errors and err.errors[0] == (err.field, err.reason)
    return err.field


@pytest.mark.parametrize(
    ("factory", "cls"),
    [(communication, CommunicationPayload), (transcript, TranscriptPayload), (media, MediaPayload)],
)
def test_valid_round_trip(factory: Any, cls: type) -> None:
    model = parse_payload(factory())
    assert isinstance(model, cls)
    assert model.schema_version == 1
    again = parse_payload(model.model_dump_json())
    assert again == model
    assert content_hash(again) == content_hash(model)


def test_normalisation() -> None:
    model = parse_payload(communication())
    assert isinstance(model, CommunicationPayload)
    assert model.sender is not None and model.sender.address == "ann@example.com"
    assert model.sent_at is not None and model.sent_at.utcoffset() is not None
    assert model.recipients[0].role == "cc"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({k: v for k, v in communication().items() if k != "workspace_id"}, "workspace_id"),
        (communication(workspace_id="not-a-uuid"), "workspace_id"),
        (
            transcript(
                meeting={"starts_at": "2024-05-01T10:00:00Z", "ends_at": "2024-05-01T09:00:00Z"}
            ),
            "meeting.ends_at",
        ),
        (transcript(segments=[{"start_ms": -5, "end_ms": 0, "text": "x"}]), "segments.0.start_ms"),
        (
            transcript(
                segments=[*transcript()["segments"][:3], {"start_ms": 9, "end_ms": 3, "text": "x"}]
            ),
            "segments.3.end_ms",
        ),
        (communication(content_url="https://example.com/x"), "content_url"),
        (communication(body=None), "body"),
        (media(text="both"), "content_url"),
        (communication(kind="fax"), "kind"),
        ({"workspace_id": WS}, "kind"),
        (
            communication(metadata={"a": 1, "b": {"c": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}}),
            "metadata",
        ),
        (communication(metadata={"x": "y" * 70_000}), "metadata"),
        (communication(metadata={"x": float("nan")}), "metadata"),
        (communication(source=""), "source"),
        (communication(external_id="x" * 513), "external_id"),
        (communication(external_id="\x00\x00"), "external_id"),
        (media(content_url="file:///etc/passwd"), "content_url"),
        (communication(channel="pigeon"), "channel"),
        (communication(surprise=1), "surprise"),
        (communication(schema_version=2), "schema_version"),
        ([1, 2], "payload"),
        ("not json", "payload"),
        (b"\xff\xfe{", "payload"),
    ],
)
def test_invalid_names_field(data: Any, field: str) -> None:
    assert field_of(data) == field


def test_nul_bytes_stripped_everywhere() -> None:
    model = parse_payload(
        communication(body="a\x00b", subject="s\x00", metadata={"k\x00": ["v\x00", {"n\x00": 1}]})
    )
    assert isinstance(model, CommunicationPayload)
    assert model.body == "ab" and model.subject == "s"
    assert model.metadata == {"k": ["v", {"n": 1}]}


def test_lone_surrogates_replaced() -> None:
    raw = json.dumps(communication(body="x\ud800y", metadata={"\udc00": "\ud83d\ude00"}))
    model = parse_payload(raw.encode())
    assert isinstance(model, CommunicationPayload)
    assert model.body == "x\ufffdy"
    assert model.metadata == {"\ufffd": "\U0001f600"}
    model.model_dump_json().encode("utf-8")  # storable as UTF-8


def test_decode_json_payload_replaces_invalid_utf8() -> None:
    raw = json.dumps(communication(body="BODY")).encode().replace(b"BODY", b"B\xffDY")
    data = decode_json_payload(raw)
    assert data["body"] == "B\ufffdDY"
    assert decode_json_payload(data) is data


def test_content_hash_and_job_id() -> None:
    a, b = parse_payload(communication()), parse_payload(communication())
    assert content_hash(a) == content_hash(b) and job_id(a) == job_id(b)
    changed = parse_payload(communication(body="Let's meet on Saturday."))
    assert content_hash(changed) != content_hash(a) and job_id(changed) != job_id(a)
    meta = parse_payload(communication(metadata={"labels": ["archive"]}))
    assert content_hash(meta) != content_hash(a)
    assert uuid.UUID(job_id(a)).version == 5
    assert job_id(a) == job_id_for(WS, "communication", "gmail", "msg-1", content_hash(a))
    # Equal instants in different offsets are the same content.
    z = parse_payload(communication(sent_at="2024-05-01T11:30:00+02:00"))
    assert content_hash(z) == content_hash(a)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


def _mutate(data: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    target: Any = out
    for key in path[:-1]:
        target = target.get(key) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            return out
    target[path[-1]] = value
    return out


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_only_raises_payload_error(value: Any) -> None:
    for data in (value, json.dumps(value)):
        with contextlib.suppress(PayloadError):
            parse_payload(data)


paths = st.sampled_from(
    [
        ["kind"],
        ["workspace_id"],
        ["source"],
        ["body"],
        ["sender"],
        ["recipients"],
        ["metadata"],
        ["sent_at"],
        ["meeting", "ends_at"],
        ["segments"],
        ["asset", "kind"],
        ["content_url"],
        ["schema_version"],
        ["channel"],
        ["text"],
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([communication, transcript, media]), paths, json_values)
def test_mutated_payloads_only_raise_payload_error(
    factory: Any, path: list[str], value: Any
) -> None:
    try:
        model = parse_payload(_mutate(factory(), path, value))
    except PayloadError as err:
        assert err.field and err.reason
    else:
        assert len(job_id(model)) == 36


# A pinned job id: the content hash is part of every job id (arq's de-duplication, the
# ledger's no-ops); a change to hashing would re-ingest every connector's whole history.
PINNED_JOB_ID = "cd23cacd-029e-5860-a065-942f090555e3"


@settings(max_examples=200, deadline=None)
@given(
    metadata=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    body=st.text(min_size=1, max_size=60).filter(lambda t: t.strip()),
    slice_chars=st.integers(1, 7),
)
def test_streamed_content_hash_equals_the_whole_canonical_json(
    metadata: dict[str, Any], body: str, slice_chars: int
) -> None:
    """The hash is fed a slice of a long string at a time (a 20 MB body is never dumped
    whole); it must stay the sha256 of the one canonical JSON text, escapes, non-ASCII
    and slice boundaries included."""
    try:
        model = parse_payload(communication(body=body, metadata=metadata))
    except PayloadError:
        return
    with mock.patch.object(identity, "_SLICE_CHARS", slice_chars):
        assert content_hash(model) == hashlib.sha256(identity._canonical(model)).hexdigest()


def test_long_bodies_hash_as_before_and_job_ids_are_pinned() -> None:
    body = ('Quote " and \\ and \n and é and 日本 and \x01. ' * 80_000).strip()  # > 1 slice
    model = parse_payload(communication(body=body))
    assert len(model.body or "") > identity._SLICE_CHARS
    assert content_hash(model) == hashlib.sha256(identity._canonical(model)).hexdigest()
    assert job_id(parse_payload(communication())) == PINNED_JOB_ID
