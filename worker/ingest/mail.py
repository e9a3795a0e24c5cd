"""The fetch stage for a raw e-mail: bytes -> the parsed message -> the communication it
is, with its attachments read.

A raw message (``EmailPayload``) is parsed in a child process (``worker.ingest.parsing``)
and becomes an ordinary ``CommunicationPayload`` (sender, recipients, subject, date, the
thread from ``References``/``In-Reply-To`` unless the connector named one), validated like
one a connector would send, so from here on it takes the communication's path. Its
attachments become rows, and those that are documents are read (each in its own parse, so
one hostile attachment never costs its message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.core.payloads import CommunicationPayload, EmailPayload, PayloadError, parse_payload
from worker.core.settings import Settings
from worker.extract.results import Address, ParsedEmail
from worker.ingest.document import PulledAttachment, read_attachment
from worker.ingest.fetch import fetch_parts
from worker.ingest.parsing import ParseError, Parser

#: Message ids kept in a communication's metadata (the thread's first and latest matter).
MAX_REFERENCES = 20


async def raw_message(payload: EmailPayload, settings: Settings) -> bytes:
    """The message's bytes, inline or fetched, within ``EMAIL_MAX_BYTES``."""
    cap = settings.email_max_bytes
    if payload.content_url is not None:
        return (await fetch_parts(payload.content_url, settings, max_bytes=cap)).data()
    raw = payload.raw_bytes()
    if len(raw) > cap:
        raise ParseError(f"is {len(raw)} bytes; over EMAIL_MAX_BYTES ({cap})", field="raw")
    return raw


def _person(address: Address) -> dict[str, Any]:
    return {"name": address.name, "address": address.address}


def communication_of(payload: EmailPayload, parsed: ParsedEmail) -> CommunicationPayload:
    """The communication a parsed message is; a field it cannot be is a ``PayloadError``
    naming ``raw.<field>`` (the message, not the connector, is at fault)."""
    recipients = [
        {**_person(a), "role": role}
        for role, group in (("to", parsed.to), ("cc", parsed.cc), ("bcc", parsed.bcc))
        for a in group
    ]
    refs = parsed.references
    kept = refs if len(refs) <= MAX_REFERENCES else (refs[0], *refs[-(MAX_REFERENCES - 1) :])
    email = {"message_id": parsed.message_id, "in_reply_to": parsed.in_reply_to}
    data = {
        "kind": "communication",
        "workspace_id": str(payload.workspace_id),
        "source": payload.source,
        "external_id": payload.external_id,
        "channel": "email",
        "thread_key": payload.thread_key or parsed.thread_root,
        "subject": parsed.subject,
        "sender": _person(parsed.sender) if parsed.sender else None,
        "recipients": recipients,
        "sent_at": parsed.date.isoformat() if parsed.date else None,
        "body": parsed.text,
        "content_type": "text/plain",
        "metadata": {
            **payload.metadata,
            "email": {**email, "references": list(kept), "html": parsed.html},
        },
    }
    try:
        communication = parse_payload(data)
    except PayloadError as exc:
        errors = [(f"raw.{f}", r) for f, r in exc.errors]
        raise PayloadError(errors[0][0], errors[0][1], errors) from None
    assert isinstance(communication, CommunicationPayload)
    return communication


@dataclass(frozen=True)
class Message:
    """A raw message, read: what the rest of the pipeline needs of it (the attachments'
    bytes are not kept)."""

    communication: CommunicationPayload
    attachments: list[PulledAttachment]
    warnings: tuple[str, ...]  # the parse's (part numbers, counts, charsets: no content)
    nbytes: int


async def read_message(payload: EmailPayload, settings: Settings, parser: Parser) -> Message:
    """Parse the message and read its attachments."""
    raw = await raw_message(payload, settings)
    nbytes = len(raw)
    parsed = await parser.email(raw)
    del raw
    if parsed.status == "skipped":
        raise ParseError(parsed.reason or "is not a readable message", field="raw")
    communication = communication_of(payload, parsed)
    attachments = [
        await read_attachment(parser, i, a.filename, a.mime_type, a.data, settings)
        for i, a in enumerate(parsed.attachments, 1)
    ]
    warnings = parsed.warnings
    # A cap's reason is its name, which its warning already starts with ("MIME_MAX_DEPTH
    # (20): ..."): not a second content.warning for it.
    reason = parsed.reason
    if parsed.status == "partial" and reason and not any(w.startswith(reason) for w in warnings):
        warnings = (*warnings, reason)
    return Message(communication, attachments, warnings, nbytes)
