"""Versioned job payloads that connectors enqueue, and their validation.

Every payload is a pydantic model with ``schema_version: Literal[1]`` and a ``kind``
discriminator (``communication`` | ``transcript`` | ``media`` | ``email``). Payloads arrive from Redis
written by other services, so nothing about them is trusted:

* :func:`parse_payload` turns *any* input into a model or a :class:`PayloadError` naming the
  first offending field (``meeting.ends_at``, ``segments.3.end_ms``, ``kind``) - it never
  raises anything else, so a poison message fails its job cleanly instead of the worker.
* Text hygiene (``worker.core.field_checks``) runs on every string, including metadata keys
  and values: NUL bytes are **stripped** because PostgreSQL ``text``/``jsonb`` cannot
  store U+0000 (the insert would fail far from the cause), and lone UTF-16 surrogates
  (legal in JSON ``\\ud800`` escapes, illegal in UTF-8) become U+FFFD. Invalid UTF-8 can
  only arrive as bytes; use :func:`decode_json_payload`, which decodes with
  ``errors="replace"``.
* Sizes are capped so one message cannot exhaust a worker: ids <= 512 characters, metadata
  nesting <= 16 and <= 64 KiB as compact JSON, inline text <= :data:`MAX_TEXT_CHARS`.

:func:`content_hash` and :func:`job_id` give deterministic identities: re-sending unchanged
content yields the same job id (arq de-duplicates it), any change yields a new one.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from worker.core.field_checks import (
    MAX_METADATA_DEPTH,
    MAX_TEXT_CHARS,
    BodyMediaType,
    ContentFormat,
    HttpUrl,
    Identifier,
    LongText,
    ShortText,
    Text,
    UtcDatetime,
    clean_json,
    json_depth,
    one_of,
)

SCHEMA_VERSION = 1
#: A job argument ``{LEDGER_PAYLOAD_KEY: "<job id>"}`` names the ledger row that holds the
#: payload instead of carrying it (large items; ``worker.queue.client``, ``ingest.receive``).
LEDGER_PAYLOAD_KEY = "ledger_payload"
MAX_METADATA_BYTES = 64 * 1024
MAX_LIST_ITEMS = 100_000

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class PayloadError(ValueError):
    """An invalid payload: ``field`` is the dotted path of the first error, ``reason`` why.

    ``errors`` holds every ``(field, reason)`` found. Not retryable: the same input fails
    the same way.
    """

    def __init__(self, field: str, reason: str, errors: list[tuple[str, str]] | None = None):
        self.field = field
        self.reason = reason
        self.errors = errors if errors is not None else [(field, reason)]
        super().__init__(f"{field}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across arq/process boundaries
        return (type(self), (self.field, self.reason, self.errors))


# --- models -----------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=MAX_TEXT_CHARS)


class Person(_Model):
    """A participant: e-mail address or chat handle. Addresses are stripped; e-mail
    addresses are lower-cased so the same person always hashes and matches the same."""

    name: ShortText | None = None
    address: Identifier

    @field_validator("address")
    @classmethod
    def _normalise_address(cls, value: str) -> str:
        value = value.strip()
        return value.lower() if _EMAIL.match(value) else value


class Recipient(Person):
    role: Literal["to", "cc", "bcc", "mention"] = "to"


class Segment(_Model):
    """One timed (or untimed) stretch of speech.

    Times are optional but paired: plain-text transcripts have no clock, and inventing
    ``0..0`` would make every such chunk claim to start at the beginning of the meeting.
    """

    speaker: ShortText | None = None
    start_ms: int | None = Field(default=None, ge=0)
    end_ms: int | None = Field(default=None, ge=0)
    text: LongText

    @model_validator(mode="after")
    def _times(self) -> Segment:
        if (self.start_ms is None) != (self.end_ms is None):
            field = "end_ms" if self.end_ms is None else "start_ms"
            raise PydanticCustomError(
                "paired_times",
                "start_ms and end_ms must both be set or both be null",
                {"field": field},
            )
        if self.start_ms is not None and self.end_ms is not None and self.end_ms < self.start_ms:
            raise PydanticCustomError(
                "time_range", "must not be before start_ms", {"field": "end_ms"}
            )
        return self


class MeetingInfo(_Model):
    title: ShortText | None = None
    starts_at: UtcDatetime | None = None
    ends_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _range(self) -> MeetingInfo:
        if self.starts_at and self.ends_at and self.ends_at < self.starts_at:
            raise PydanticCustomError(
                "time_range", "must not be before starts_at", {"field": "ends_at"}
            )
        return self


class AssetInfo(_Model):
    kind: Literal["audio", "video", "image", "document"]
    title: ShortText | None = None
    mime_type: ShortText | None = None
    duration_ms: int | None = Field(default=None, ge=0)
    uri: ShortText | None = None


class _Payload(_Model):
    schema_version: Literal[1] = 1
    workspace_id: uuid.UUID
    source: Identifier
    external_id: Identifier
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def item_kind(self) -> str:
        """The kind of item this payload becomes (the ledger's ``kind``, the item lock's):
        the payload's own kind, except that a raw e-mail is a communication."""
        return str(self.kind)  # type: ignore[attr-defined]

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # pydantic reports the type error
        if json_depth(value) > MAX_METADATA_DEPTH:
            raise ValueError(f"is nested deeper than {MAX_METADATA_DEPTH} levels")
        cleaned = clean_json(value)
        size = len(json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")).encode())
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
        return cleaned


def _segments_size(segments: list[Segment] | None) -> None:
    if segments and sum(len(s.text) for s in segments) > MAX_TEXT_CHARS:
        raise PydanticCustomError(
            "too_long",
            "together hold more than {limit} characters; send them by content_url",
            {"field": "segments", "limit": MAX_TEXT_CHARS},
        )


class CommunicationPayload(_Payload):
    """An e-mail, chat message, SMS, call note... Exactly one of ``body``/``body_html``/
    ``content_url``.

    ``content_type`` (``text/plain`` | ``text/html``) says what ``body`` or the fetched
    content is; without it a ``body`` that clearly is HTML (``worker.text.html.
    looks_like_html``) and a fetch answered ``text/html`` are converted. The text embedded
    is the converted one; the body stored is the one received.
    """

    kind: Literal["communication"] = "communication"
    channel: Literal["email", "chat", "sms", "voice", "social", "other"]
    thread_key: ShortText | None = None
    subject: Annotated[Text, Field(max_length=16 * 1024)] | None = None
    sender: Person | None = None
    recipients: list[Recipient] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    sent_at: UtcDatetime | None = None
    body: LongText | None = None
    body_html: LongText | None = None
    content_url: HttpUrl | None = None
    content_type: BodyMediaType | None = None

    @model_validator(mode="after")
    def _content(self) -> CommunicationPayload:
        one_of(self, ("body", "body_html", "content_url"))
        if self.body_html is not None and self.content_type == "text/plain":
            raise PydanticCustomError(
                "content_type",
                "must not be text/plain with body_html (it is HTML by name)",
                {"field": "content_type"},
            )
        return self

    @property
    def html(self) -> bool | None:
        """True when the content is HTML by the payload's word, False when it says plain
        text, None when the content decides (detection / the response's type)."""
        if self.body_html is not None or self.content_type == "text/html":
            return True
        return False if self.content_type == "text/plain" else None


class TranscriptPayload(_Payload):
    """A meeting transcript, inline as segments or by URL (vtt/srt/plain)."""

    kind: Literal["transcript"] = "transcript"
    meeting: MeetingInfo = Field(default_factory=MeetingInfo)
    participants: list[Person] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    segments: list[Segment] | None = Field(default=None, max_length=10 * MAX_LIST_ITEMS)
    content_url: HttpUrl | None = None
    content_format: ContentFormat | None = None
    language: ShortText | None = None

    @model_validator(mode="after")
    def _content(self) -> TranscriptPayload:
        one_of(self, ("segments", "content_url"))
        _segments_size(self.segments)
        return self


class MediaPayload(_Payload):
    """Audio/video/image/document: already-transcribed segments, text, or a URL."""

    kind: Literal["media"] = "media"
    asset: AssetInfo
    segments: list[Segment] | None = Field(default=None, max_length=10 * MAX_LIST_ITEMS)
    text: LongText | None = None
    content_url: HttpUrl | None = None
    content_format: ContentFormat | None = None

    @model_validator(mode="after")
    def _content(self) -> MediaPayload:
        one_of(self, ("segments", "text", "content_url"))
        _segments_size(self.segments)
        return self


class EmailPayload(_Payload):
    """A raw RFC 5322 message (what IMAP, Gmail's ``format=raw`` and Graph's ``$value``
    give), as base64 ``raw`` (standard or URL-safe alphabet, padding optional) or by
    ``content_url`` to the ``.eml``. The worker parses it (``worker.extract.mime``) into a
    communication with its attachments; ``thread_key``, when given (Gmail's threadId),
    takes the place of the thread found from References/In-Reply-To."""

    kind: Literal["email"] = "email"
    raw: LongText | None = None
    content_url: HttpUrl | None = None
    thread_key: ShortText | None = None

    @field_validator("raw")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            decode_raw(value)
        return value

    @model_validator(mode="after")
    def _content(self) -> EmailPayload:
        one_of(self, ("raw", "content_url"))
        return self

    @property
    def item_kind(self) -> str:
        return "communication"

    def raw_bytes(self) -> bytes:
        """The message's bytes (``raw`` decoded)."""
        assert self.raw is not None
        return decode_raw(self.raw)


class DeletionPayload(_Payload):
    """An item deleted upstream (a message trashed, a recording removed): its rows, chunks,
    vectors, attachments and asset links go (``worker.db.delete``).

    Ordered with the item's ingests by when the client recorded each in the ledger
    (``queued_at``): an ingest recorded before the deletion and still queued or running
    when it lands is skipped; one recorded after it creates the item again. ``deleted_at``
    (the source's time of the deletion; the client fills in its own clock when absent)
    makes each deletion a job of its own, so the same item can be deleted again after it
    came back."""

    kind: Literal["deletion"] = "deletion"
    deleted_kind: Literal["communication", "transcript", "media", "email"]
    deleted_at: UtcDatetime | None = None

    @property
    def item_kind(self) -> str:
        return "communication" if self.deleted_kind == "email" else self.deleted_kind


def decode_raw(value: str) -> bytes:
    """Base64 in either alphabet, whitespace and missing padding tolerated."""
    text = "".join(value.split())
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not base64 (standard or URL-safe alphabet)") from None


Payload = Annotated[
    CommunicationPayload | TranscriptPayload | MediaPayload | EmailPayload | DeletionPayload,
    Field(discriminator="kind"),
]
AnyPayload = (
    CommunicationPayload | TranscriptPayload | MediaPayload | EmailPayload | DeletionPayload
)
ADAPTER: TypeAdapter[AnyPayload] = TypeAdapter(Payload)
KINDS = ("communication", "transcript", "media", "email", "deletion")
#: The kind of item each payload kind becomes (``_Payload.item_kind``; the ledger's kind).
ITEM_KINDS = {
    "communication": "communication",
    "transcript": "transcript",
    "media": "media",
    "email": "communication",
}


# Validation of raw input (``parse_payload``) and deterministic identities live in
# ``worker.core.validation`` and ``worker.core.identity``; imported here too, where callers
# have always found them.
from worker.core.identity import (  # noqa: E402
    JOB_NAMESPACE,
    content_hash,
    job_id,
    job_id_for,
)
from worker.core.validation import decode_json_payload, parse_payload  # noqa: E402

__all__ = [
    "JOB_NAMESPACE",
    "AnyPayload",
    "CommunicationPayload",
    "DeletionPayload",
    "EmailPayload",
    "MediaPayload",
    "PayloadError",
    "TranscriptPayload",
    "content_hash",
    "decode_json_payload",
    "job_id",
    "job_id_for",
    "parse_payload",
]
