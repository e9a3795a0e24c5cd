"""Raw MIME messages to ParsedEmail (worker/extract/mime.py): body choice, forwarded
messages, attachments, the caps, hostile input, speed (header fields and charsets:
test_mime_decoding.py). Real bytes, built by tests/support/mail.py or written by hand;
nothing mocked."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.support import mail
from worker.extract.limits import Limits
from worker.extract.mime import parse_email
from worker.extract.results import Address, ParsedEmail

LIMITS = Limits()
SECRET = "Zanzibar"  # content that must never reach warnings or reasons
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def parse(raw: bytes, limits: Limits = LIMITS) -> ParsedEmail:
    parsed = parse_email(raw, limits)
    for value in (parsed.text, parsed.subject or "", *parsed.warnings, parsed.reason or ""):
        assert "\x00" not in value
        value.encode("utf-8")  # no lone surrogates
    return parsed


HEAD = mail.HEAD


# -- body choice -----------------------------------------------------------------------


def test_gmail_alternative_prefers_the_plain_text_and_reads_the_header_fields() -> None:
    raw = mail.html_alternative_message(
        "Hi Bob,\n\nThe numbers are in.\n",
        "<div>Hi Bob,<br><br>The numbers are <b>in</b>.</div>",
        sender='"Alice Example" <Alice@Example.COM>',
        to=("Bob <BOB@example.com>", "carol@example.org"),
        cc=("Dan <dan@example.net>",),
        bcc=("eve@example.com",),
        date=datetime(2024, 3, 5, 10, 30, tzinfo=timezone(timedelta(hours=1))),
        message_id="<CAB123@mail.gmail.com>",
    )
    parsed = parse(raw)
    assert parsed.status == "ok" and parsed.reason is None and parsed.warnings == ()
    assert parsed.text == "Hi Bob,\n\nThe numbers are in." and not parsed.html
    assert parsed.sender == Address("alice@example.com", "Alice Example")
    assert parsed.to == (Address("bob@example.com", "Bob"), Address("carol@example.org"))
    assert parsed.cc == (Address("dan@example.net", "Dan"),)
    assert parsed.bcc == (Address("eve@example.com"),)
    assert parsed.date == datetime(2024, 3, 5, 9, 30, tzinfo=UTC)
    assert parsed.message_id == "CAB123@mail.gmail.com" == parsed.thread_root
    assert parsed.subject == "Quarterly numbers" and parsed.attachments == ()


def test_html_only_and_empty_plain_alternative_use_the_html_text() -> None:
    html = "<html><head><style>p{}</style></head><body><p>Sale <b>today</b></p></body></html>"
    for raw in (
        mail.html_alternative_message(None, html),
        mail.html_alternative_message("  \n", html),
    ):
        parsed = parse(raw)
        assert parsed.text == "Sale today" and parsed.html and parsed.status == "ok"


# -- structure -------------------------------------------------------------------------


def test_several_inline_text_parts_are_concatenated_in_order() -> None:
    raw = mail.multipart(
        "mixed",
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nThe body.",
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n"
        b"\r\n%PDF",
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>An <b>HTML</b> note.</p>",
        b"Content-Type: text/plain\r\n\r\n--\r\nlist footer",
        head=HEAD,
    )
    parsed = parse(raw)
    assert parsed.text == "The body.\n\nAn HTML note.\n\n--\nlist footer" and parsed.html
    assert [a.filename for a in parsed.attachments] == ["a.pdf"]


def test_forwarded_message_text_and_its_attachments() -> None:
    inner = mail.with_attachments(
        mail.plain_message("Inner text.", subject="Budget", sender="Carol <carol@example.com>"),
        [("budget.xlsx", "application/vnd.ms-excel", b"PK\x03\x04 sheet")],
    )
    outer = mail.with_attachments(
        mail.forwarded(inner, "See below.\n"), [("cover.pdf", "application/pdf", b"%PDF-1.4 x")]
    )
    parsed = parse(outer)
    assert parsed.text == (
        "See below.\n\n---------- Forwarded message ---------\n"
        "From: Carol <carol@example.com>\nDate: Tue, 05 Mar 2024 09:30:00 +0000\n"
        "Subject: Budget\nTo: Bob Example <bob@example.com>\n\nInner text."
    )
    assert [(a.filename, a.data) for a in parsed.attachments] == [
        ("budget.xlsx", b"PK\x03\x04 sheet"),
        ("cover.pdf", b"%PDF-1.4 x"),
    ]
    assert parsed.subject == "Fwd: Quarterly numbers" and parsed.status == "ok"


def test_pdf_and_docx_attachments_come_back_byte_for_byte() -> None:
    pdf, docx = mail.minimal_pdf("Invoice 42"), mail.minimal_docx("Minutes")
    raw = mail.with_attachments(
        mail.html_alternative_message(),
        [("invoice.pdf", "application/pdf", pdf), ("m.docx", DOCX, docx)],
    )
    parsed = parse(raw)
    assert [(a.filename, a.mime_type, a.data, a.inline) for a in parsed.attachments] == [
        ("invoice.pdf", "application/pdf", pdf, False),
        ("m.docx", DOCX, docx, False),
    ]
    assert parsed.text == "Hi Bob,\n\nThe numbers are in." and parsed.status == "ok"


def test_filenames_rfc2231_encoded_words_paths_and_nuls() -> None:
    parts = [
        "filename*=utf-8''%E2%82%AC%20rates.pdf",
        "filename*0*=utf-8''Rapport%20; filename*1=\"annuel.pdf\"",
        'filename="=?utf-8?b?UmFwcG9ydMOpLnBkZg==?="',
        'filename="..\\\\..\\\\windows\\\\evil.pdf"',
        'filename="/etc/passwd"',
        'filename="nul%00.pdf"',
    ]
    raw = mail.multipart(
        "mixed",
        b"Content-Type: text/plain\r\n\r\nbody",
        *(
            f"Content-Type: application/pdf\r\nContent-Disposition: attachment; {p}\r\n\r\nx".encode()
            for p in parts
        ),
        b'Content-Type: application/octet-stream; name="via-name.bin"\r\n\r\nx',
        b"Content-Type: application/zip\r\n\r\nno name",
        head=HEAD,
    )
    names = [a.filename for a in parse(raw).attachments]
    assert names[:5] == ["€ rates.pdf", "Rapport annuel.pdf", "Rapporté.pdf", "evil.pdf", "passwd"]
    assert names[5] is not None and "\x00" not in names[5]
    assert names[6:] == ["via-name.bin", None]


def test_inline_images_are_skipped_attached_images_kept() -> None:
    parsed = parse(mail.with_inline_image())
    assert parsed.attachments == () and parsed.warnings == ("1 inline images skipped",)
    assert parsed.text == "Our logo:" and parsed.status == "ok"
    photo = mail.with_attachments(mail.plain_message(), [("photo.png", "image/png", mail.TINY_PNG)])
    (kept,) = parse(photo).attachments
    assert (kept.filename, kept.mime_type, kept.data) == ("photo.png", "image/png", mail.TINY_PNG)
    apple = mail.multipart(
        "mixed",
        b"Content-Type: text/plain\r\n\r\nsee photo",
        b"Content-Type: image/jpeg\r\nContent-Disposition: inline; filename=a.jpg\r\n\r\n\xff\xd8",
        b"Content-Type: application/pdf\r\nContent-Disposition: inline; filename=a.pdf\r\n\r\n%P",
        b"Content-Type: image/gif\r\nContent-ID: <unused@x>\r\n\r\nGIF89a",
        head=HEAD,
    )
    parsed = parse(apple)
    assert [(a.filename, a.inline, a.content_id) for a in parsed.attachments] == [
        ("a.pdf", True, None),
        (None, False, "unused@x"),
    ]
    assert parsed.warnings == ("1 inline images skipped",)


def test_attachments_in_the_html_alternative_and_signatures() -> None:
    related = mail.multipart(
        "related",
        b"Content-Type: text/html\r\n\r\n<p>Hello <img src=cid:i1></p>",
        b"Content-Type: image/png\r\nContent-ID: <i1>\r\n\r\npng",
        b"Content-Type: application/pdf; name=deck.pdf\r\n\r\n%PDF",
        boundary="b3",
    )
    alternative = mail.multipart(
        "alternative", b"Content-Type: text/plain\r\n\r\nHello", related, boundary="b2"
    )
    signed = mail.multipart(
        "signed",
        alternative,
        b"Content-Type: application/pgp-signature; name=signature.asc\r\n\r\n-----BEGIN",
        head=HEAD,
    )
    parsed = parse(signed)
    assert parsed.text == "Hello" and not parsed.html
    assert [a.filename for a in parsed.attachments] == ["deck.pdf"]


def test_nesting_of_50_and_1000_levels_is_cut_at_the_depth_cap() -> None:
    for depth in (50, 1000):
        parsed = parse(mail.nested(depth))
        assert parsed.status == "partial" and parsed.reason == "MIME_MAX_DEPTH"
        assert parsed.warnings == ("MIME_MAX_DEPTH (20): 1 parts nested deeper left out",)
        assert parsed.text.startswith("Text at level 0.\n\nText at level 1.")
        assert "Text at level 19." in parsed.text and "level 20." not in parsed.text
        assert "innermost" not in parsed.text and parsed.subject == "Quarterly numbers"
    shallow = parse(mail.nested(5))
    assert shallow.status == "ok" and shallow.text.endswith("The innermost text.")


def test_deeply_forwarded_messages_are_cut_too() -> None:
    raw = mail.plain_message("the bottom")
    for _ in range(8):  # each forward is two levels: multipart/mixed, message/rfc822
        raw = mail.forwarded(raw)
    assert parse(raw).text.endswith("the bottom")
    parsed = parse(raw, replace(LIMITS, max_mime_depth=10))
    assert parsed.status == "partial" and parsed.reason == "MIME_MAX_DEPTH"
    assert "the bottom" not in parsed.text and parsed.text.startswith("FYI")
    chain = b"".join(b"Content-Type: message/rfc822\r\n\r\n" for _ in range(5000)) + b"\r\nx"
    assert parse(b"From: a@b.example\r\n" + chain).reason == "MIME_MAX_DEPTH"


def test_too_many_attachments_and_parts() -> None:
    files = [(f"f{i}.pdf", "application/pdf", b"%%PDF %d" % i) for i in range(5)]
    parsed = parse(
        mail.with_attachments(mail.plain_message(), files), replace(LIMITS, max_attachments=3)
    )
    assert [a.filename for a in parsed.attachments] == ["f0.pdf", "f1.pdf", "f2.pdf"]
    assert parsed.status == "partial" and parsed.reason == "EMAIL_MAX_ATTACHMENTS"
    assert parsed.warnings == ("EMAIL_MAX_ATTACHMENTS (3): 2 attachments left out",)
    parts = [b"Content-Type: text/plain\r\n\r\npart %d" % i for i in range(100_000)]
    parsed = parse(mail.multipart("mixed", *parts, head=HEAD))
    assert parsed.status == "partial" and parsed.reason == "MIME_MAX_PARTS"
    assert parsed.text.startswith("part 0\n\npart 1") and "part 498" in parsed.text
    assert "part 499" not in parsed.text  # 500 parts: the root and 499 texts


# -- hostile input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"", b"\r\n\r\n", b"\x00" * 100, bytes(range(256)) * 10, b"\x89PNG\r\n\x1a\n\x00\x00"],
)
def test_garbage_is_skipped(raw: bytes) -> None:
    parsed = parse(raw)
    assert parsed.status == "skipped" and parsed.reason in (
        "empty",
        "not a message (no header fields)",
    )


def test_headerless_text_is_not_a_message_but_a_bare_header_block_is() -> None:
    assert parse(b"just some words\nand more").status == "skipped"
    parsed = parse(b"Subject: only a subject")
    assert parsed.status == "ok" and parsed.subject == "only a subject" and parsed.text == ""


def test_oversize_raw_is_skipped_unread() -> None:
    raw = mail.plain_message("x" * 5000)
    parsed = parse(raw, replace(LIMITS, max_email_bytes=1000))
    assert parsed.status == "skipped" and parsed.reason == "EMAIL_MAX_BYTES (1000)"
    assert parsed.subject is None and parsed.text == ""


def test_hostile_headers_and_structures_do_not_raise() -> None:
    deep_comment = b"(" * 100_000
    cases = [
        b"From: " + deep_comment + b"a@b.com\r\nSubject: x\r\n\r\nbody",
        b"From: a@b.com\r\nContent-Type: multipart/mixed; boundary=x "
        + deep_comment
        + b"\r\n\r\n--x\r\n\r\nhi\r\n--x--",
        b"From: a@b.com\r\nContent-Type: multipart/mixed\r\n\r\nno boundary at all",
        b'From: a@b.com\r\nContent-Type: text/plain; charset="'
        + SECRET.encode()
        + b'"\r\n\r\n\xe9t\xe9',
        b"From: a@b.com\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64***",
        b"From: a@b.com\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n" * 300,
        b"From: a@b.com\r\nTo: "
        + b", ".join(b"u%d@example.com" % i for i in range(50_000))
        + b"\r\n\r\nhi",
        b"".join(b"X-H%d: v\r\n" % i for i in range(20_000)) + b"From: a@b.com\r\n\r\nhi",
    ]
    for raw in cases:
        parsed = parse(raw)
        assert parsed.status in ("ok", "partial")
        for note in (*parsed.warnings, parsed.reason or ""):
            assert SECRET not in note
    assert "unknown charset '<unrecognised>'" in parse(cases[3]).warnings[0]


def test_mutated_messages_never_raise() -> None:
    rng = random.Random(7)
    seeds = [
        mail.typical_message(3000),
        mail.forwarded(mail.with_inline_image()),
        mail.with_attachments(mail.plain_message(), [("a.pdf", "application/pdf", b"%PDF")]),
        mail.nested(25),
    ]
    for _ in range(300):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 20)):
            at = rng.randrange(len(raw))
            op = rng.random()
            if op < 0.4:
                raw[at] = rng.choice(b'\x00\r\n-=?:;"<>()\\\xff\xe9 ')
            elif op < 0.7:
                del raw[at : at + rng.randint(1, 40)]
            else:
                raw[at:at] = raw[rng.randrange(len(raw)) :][: rng.randint(1, 200)]
        parsed = parse(bytes(raw))
        assert parsed.status in ("ok", "partial", "skipped")


def test_warnings_and_reasons_hold_no_content() -> None:
    raw = mail.with_attachments(
        mail.raw_message(
            f"{SECRET} café".encode("cp1252"),
            content_type="text/plain; charset=utf-8",
            subject=f"{SECRET} subject",
            headers=[("Cc", f"{SECRET} <{SECRET}>"), ("Date", f"{SECRET} 2024")],
        ),
        [(f"{SECRET}.pdf", "application/pdf", SECRET.encode())] * 3,
    )
    parsed = parse(raw, replace(LIMITS, max_attachments=1))
    assert SECRET in parsed.text and parsed.status == "partial"
    assert len(parsed.warnings) == 4
    assert all(SECRET not in w for w in parsed.warnings) and SECRET not in (parsed.reason or "")
