"""Realistic raw e-mail messages as bytes, for the MIME tests, integration tests and bench.

Built with ``email.message.EmailMessage`` and serialised with CRLF line ends (as they
arrive over SMTP / IMAP), except :func:`raw_message`, which writes bytes by hand for what
a well-behaved library will not produce (lying charsets, broken headers).

Every builder takes the same envelope keywords (:func:`envelope` lists them), so
``plain_message("hi", subject="x", to=("c@example.com",))`` works for all of them.
Message ids default to a fresh ``<msg-N@example.com>`` per call.
"""

from __future__ import annotations

import email.policy
import io
import itertools
import random
import zipfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from typing import Any

DATE = datetime(2024, 3, 5, 9, 30, tzinfo=UTC)
ALICE = "Alice Example <alice@example.com>"
BOB = "Bob Example <bob@example.com>"
#: A 1x1 transparent PNG.
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000005000157f0c1e90000000049454e44ae426082"
)
#: The header block of a hand-written message (for :func:`multipart`'s ``head``).
HEAD = b"From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: hand-made\r\n"
_ids = itertools.count(1)
_VOCABULARY = (
    "quarterly budget review meeting agenda customer proposal deadline roadmap launch "
    "contract invoice schedule design feedback team hiring release migration report "
    "forecast numbers partner onboarding metrics retention pipeline renewal"
)


def envelope(
    msg: EmailMessage,
    *,
    subject: str = "Quarterly numbers",
    sender: str = ALICE,
    to: Sequence[str] = (BOB,),
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    date: datetime | None = DATE,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    extra: Sequence[tuple[str, str]] = (),
) -> EmailMessage:
    """Set the header fields every builder accepts (ids with their angle brackets)."""
    msg["From"] = sender
    if to:
        msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    if bcc:
        msg["Bcc"] = ", ".join(bcc)
    msg["Subject"] = subject
    if date is not None:
        msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id or f"<msg-{next(_ids)}@example.com>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    for name, value in extra:
        msg[name] = value
    return msg


def to_bytes(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=email.policy.SMTP)


def plain_message(
    body: str = "Hi Bob,\n\nThe numbers are in. Revenue is up 12%.\n\nAlice\n",
    *,
    charset: str = "utf-8",
    cte: str | None = None,
    **headers: Any,
) -> bytes:
    """A text/plain message; ``cte`` is quoted-printable, base64, 7bit or 8bit."""
    msg = envelope(EmailMessage(), **headers)
    msg.set_content(body, charset=charset, cte=cte)
    return to_bytes(msg)


def html_alternative_message(
    text: str | None = "Hi Bob,\n\nThe numbers are in.\n",
    html: str = '<div dir="ltr">Hi Bob,<br><br>The numbers are <b>in</b>.</div>',
    *,
    cte: str | None = None,
    **headers: Any,
) -> bytes:
    """Gmail's shape: multipart/alternative, text/plain then text/html. ``text=None``:
    an HTML-only message (a single text/html part, as newsletters send)."""
    msg = envelope(EmailMessage(), **headers)
    if text is None:
        msg.set_content(html, subtype="html", cte=cte)
    else:
        msg.set_content(text, cte=cte)
        msg.add_alternative(html, subtype="html", cte=cte)
    return to_bytes(msg)


def with_attachments(message: bytes, attachments: Iterable[tuple[str | None, str, bytes]]) -> bytes:
    """``message`` with (filename, mime type, data) attachments added (it becomes
    multipart/mixed; a file name may be non-ASCII: it is RFC 2231 encoded)."""
    msg = _parse(message)
    for filename, mime_type, data in attachments:
        maintype, subtype = mime_type.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return to_bytes(msg)


def with_inline_image(
    html: str = '<p>Our logo: <img src="cid:logo@example.com"></p>',
    image: bytes = TINY_PNG,
    cid: str = "logo@example.com",
    text: str | None = "Our logo:\n",
    **headers: Any,
) -> bytes:
    """A signature-logo message: alternative (text, related (html, image/png with a
    Content-ID the HTML references))."""
    msg = envelope(EmailMessage(), **headers)
    if text is not None:
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        html_part = msg.get_payload()[1]
    else:
        msg.set_content(html, subtype="html")
        html_part = msg
    html_part.add_related(image, maintype="image", subtype="png", cid=f"<{cid}>")
    return to_bytes(msg)


def forwarded(
    inner: bytes,
    note: str = "FYI, see the message below.\n",
    *,
    subject: str = "Fwd: Quarterly numbers",
    **headers: Any,
) -> bytes:
    """``inner`` forwarded as an attachment (a message/rfc822 part), as Outlook and
    Gmail's "forward as attachment" send it."""
    msg = envelope(EmailMessage(), subject=subject, **headers)
    msg.set_content(note)
    msg.add_attachment(_parse(inner))
    return to_bytes(msg)


def reply(parent: bytes, body: str = "Thanks, looks good.\n", **headers: Any) -> bytes:
    """A reply to ``parent``: In-Reply-To, References (parent's plus parent), "Re:"
    subject, and the parent's text quoted below an "On ... wrote:" line."""
    old = _parse(parent)
    parent_id = str(old["Message-ID"])
    refs = str(old.get("References", "")).split() + [parent_id]
    subject = str(old.get("Subject", ""))
    headers.setdefault("subject", subject if subject.startswith("Re:") else f"Re: {subject}")
    headers.setdefault("sender", BOB)
    headers.setdefault("to", (str(old["From"]),))
    part = old.get_body(preferencelist=("plain",))
    quoted = "".join(f"> {line}\n" for line in (part.get_content() if part else "").splitlines())
    msg = envelope(EmailMessage(), in_reply_to=parent_id, references=refs, **headers)
    msg.set_content(f"{body}\nOn {old['Date']}, {old['From']} wrote:\n{quoted}")
    return to_bytes(msg)


def nested(depth: int, text: str = "Text at level {level}.", **headers: Any) -> bytes:
    """``depth`` nested multipart/mixed levels, each holding a text part (``text`` with
    its level) before the next level: hostile input for parsers that recurse."""
    envelope_msg = envelope(EmailMessage(), **headers)
    head = b"".join(f"{k}: {v}\r\n".encode() for k, v in envelope_msg.items())
    out = [head, b"MIME-Version: 1.0\r\n"]
    for level in range(depth):
        out.append(
            f'Content-Type: multipart/mixed; boundary="lvl{level}"\r\n\r\n--lvl{level}\r\n'
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text.format(level=level)}\r\n"
            f"--lvl{level}\r\n".encode()
        )
    out.append(b"Content-Type: text/plain; charset=utf-8\r\n\r\nThe innermost text.\r\n")
    out.extend(f"--lvl{level}--\r\n".encode() for level in reversed(range(depth)))
    return b"".join(out)


def multipart(subtype: str, *parts: bytes, boundary: str = "b1", head: bytes = b"") -> bytes:
    """A multipart entity written by hand: ``parts`` are each a header block, a blank
    line and a body (CRLF); ``head`` goes first (e.g. :data:`HEAD` for a whole message).
    A part may itself be a ``multipart(...)`` with another boundary."""
    out = [head, f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()]
    for part in parts:
        out.append(f"--{boundary}\r\n".encode() + part + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


def raw_message(
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    cte: str = "8bit",
    subject: bytes | str = "Raw message",
    headers: Sequence[tuple[str, bytes | str]] = (),
) -> bytes:
    """A single-part message written byte for byte: ``body`` is sent as given (already
    transfer-encoded if ``cte`` says so), whatever ``content_type`` declares; ``headers``
    replace the default fields of the same name (From, To, Subject, Date, Message-ID)."""
    given = {name.lower() for name, _ in headers}
    defaults: list[tuple[str, bytes | str]] = [
        ("From", ALICE),
        ("To", BOB),
        ("Subject", subject),
        ("Date", format_datetime(DATE)),
        ("Message-ID", f"<raw-{next(_ids)}@example.com>"),
    ]
    fields = [
        *(field for field in defaults if field[0].lower() not in given),
        *headers,
        ("MIME-Version", "1.0"),
        ("Content-Type", content_type),
        ("Content-Transfer-Encoding", cte),
    ]
    head = b"".join(
        name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()) + b"\r\n"
        for name, value in fields
    )
    return head + b"\r\n" + body


def typical_message(size: int = 20_000, seed: int = 0, **headers: Any) -> bytes:
    """A Gmail-shaped reply of about ``size`` bytes: alternative text + HTML (a styled
    div per paragraph, a quoted history in a blockquote), base64-free, one thread."""
    rng = random.Random(seed)
    vocabulary = _VOCABULARY.split()
    paragraphs: list[str] = []
    while sum(len(p) for p in paragraphs) * 2.3 < size:
        words = rng.choices(vocabulary, k=rng.randint(20, 60))
        paragraphs.append(" ".join(words).capitalize() + ".")
    new, old = paragraphs[:2], paragraphs[2:]
    text = (
        "\n\n".join(new)
        + "\n\nOn Mon, 4 Mar 2024, Bob wrote:\n"
        + "".join(f"> {p}\n>\n" for p in old)
    )
    html = (
        '<div dir="ltr">'
        + "".join(f'<div style="font-family:Arial,sans-serif">{p}</div><br>' for p in new)
        + '</div><div class="gmail_quote"><blockquote class="gmail_quote" '
        'style="margin:0 0 0 .8ex;border-left:1px #ccc solid;padding-left:1ex">'
        + "".join(f"<p>{p}</p>" for p in old)
        + "</blockquote></div>"
    )
    headers.setdefault("references", ("<root@example.com>", "<parent@example.com>"))
    headers.setdefault("in_reply_to", "<parent@example.com>")
    return html_alternative_message(text, html, cte="quoted-printable", **headers)


def minimal_pdf(text: str = "Hello PDF") -> bytes:
    """A one-page PDF with ``text`` in its text layer (ASCII), correct xref offsets."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def minimal_docx(text: str = "Hello DOCX") -> bytes:
    """A one-paragraph DOCX (the three parts Word needs), deterministic bytes."""
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.'
            'org/package/2006/content-types"><Default Extension="rels" ContentType="application/'
            'vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType='
            '"application/xml"/><Override PartName="/word/document.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
            'openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http:'
            '//schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
            'Target="word/document.xml"/></Relationships>'
        ),
        "word/document.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{w}"><w:body><w:p>'
            f"<w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>"
        ),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, xml in parts.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), xml)
    return buf.getvalue()


def _parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg
