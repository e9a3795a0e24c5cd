"""Raw MIME messages to ParsedEmail (worker/extract/mime.py), the decoding half: transfer
encodings, declared / lying / unknown charsets, NULs and surrogates, encoded words,
addresses, dates, threading ids. Real bytes from tests/support/mail.py; nothing mocked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support import mail
from worker.extract import charsets
from worker.extract.limits import Limits
from worker.extract.mime import parse_email
from worker.extract.results import Address, ParsedEmail

SECRET = "Zanzibar"


def parse(raw: bytes) -> ParsedEmail:
    parsed = parse_email(raw, Limits())
    for value in (parsed.text, parsed.subject or "", *parsed.warnings, parsed.reason or ""):
        assert "\x00" not in value
        value.encode("utf-8")  # no lone surrogates
    return parsed


@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "8bit", "7bit"])
def test_transfer_encodings(cte: str) -> None:
    body = "Line one\nLine two" if cte == "7bit" else "Grüße — naïve café ½\nsecond line"
    parsed = parse(mail.plain_message(body, cte=cte))
    assert parsed.text == body and parsed.warnings == ()
    assert "\r" not in parse(mail.html_alternative_message("a\nb", "<p>a</p>", cte=cte)).text


@pytest.mark.parametrize(
    ("charset", "cte", "body"),
    [
        ("utf-8", "base64", "Grüße, 日本語, emoji 🎉"),
        ("iso-8859-1", "quoted-printable", "Café crème à la française"),
        ("windows-1252", "8bit", "“Quoted” – 10 € café"),
        ("shift_jis", "base64", "会議は明日の十時からです。よろしくお願いします。"),
        ("iso-2022-jp", "7bit", "会議は明日の十時からです。"),
    ],
)
def test_declared_charsets_decode(charset: str, cte: str, body: str) -> None:
    parsed = parse(mail.plain_message(body, charset=charset, cte=cte))
    assert parsed.text == body and parsed.warnings == () and parsed.status == "ok"


@pytest.mark.parametrize(
    ("declared", "data", "used"),
    [
        ("utf-8", "Café crème – “déjà vu” 10 €".encode("cp1252"), "windows-1252"),
        ("iso-8859-1", "Café crème – “déjà vu” 10 €".encode(), "utf-8"),
        ("x-unknown", "Café crème – “déjà vu” 10 €".encode(), "utf-8"),
        ("utf-8", "会議は明日の十時からです。よろしくお願いします。".encode("shift_jis"), "cp932"),
    ],
)
def test_lying_or_unknown_charsets_fall_back_with_a_warning(
    declared: str, data: bytes, used: str
) -> None:
    raw = mail.raw_message(data, content_type=f"text/plain; charset={declared}")
    parsed = parse(raw)
    expected = "会議" if used == "cp932" else "Café crème – “déjà vu” 10 €"
    assert parsed.text.startswith(expected)
    (warning,) = parsed.warnings
    assert warning.startswith("part 1: ") and f"{declared}'" in warning
    assert warning.endswith(f"used {used}") and "Caf" not in warning


def test_latin1_label_reads_as_windows_1252_without_a_warning() -> None:
    raw = mail.raw_message(
        "“Hi” – 5 €".encode("cp1252"), content_type="text/plain; charset=iso-8859-1"
    )
    parsed = parse(raw)
    assert parsed.text == "“Hi” – 5 €" and parsed.warnings == ()


def test_nuls_and_surrogates_never_survive() -> None:
    raw = mail.raw_message(
        b"be\x00fore \xff\xfe after",
        subject=b"=?utf-8?q?nul=00here?= Gr\xc3\xbc\xc3\x9fe \xe9t\xe9",
        headers=[("X-Junk", b"\xed\xa0\x80")],
    )
    parsed = parse(raw)
    assert parsed.text == "before ÿþ after"
    assert parsed.subject == "nulhere Grüße été"
    assert charsets.clean("a\udcff\ud800b\x00") == "aÿ\ufffdb"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (b"=?UTF-8?B?R3LDvMOfZQ==?=", "Grüße"),
        (b"=?iso-8859-1?Q?Caf=E9_cr=E8me?= du jour", "Café crème du jour"),
        (b"=?UTF-8?B?5pel5pys?= =?UTF-8?B?6Kqe?=", "日本語"),  # split over two words
        (b"=?UTF-8?B?5pel?=\r\n =?UTF-8?B?5pys6Kqe?= ok", "日本語 ok"),  # folded
        (b"=?utf-8?q?Caf=E9?= (lying charset)", "Café (lying charset)"),
        (b"=?x-unknown?q?plain?= text", "plain text"),
        (b"=?utf-8?b?!!broken!!?= stays", "=?utf-8?b?!!broken!!?= stays"),
        (b"=?utf-8?q?unterminated", "=?utf-8?q?unterminated"),
        (b"Raw UTF-8 Gr\xc3\xbc\xc3\x9fe", "Raw UTF-8 Grüße"),
        (b"  spaced\r\n\tout  ", "spaced out"),
    ],
)
def test_subject_encoded_words(subject: bytes, expected: str) -> None:
    assert parse(mail.raw_message(b"x", subject=subject)).subject == expected


def test_threading_headers() -> None:
    first = mail.plain_message(message_id="<root@example.com>")
    second = mail.reply(first, message_id="<second@example.com>")
    third = parse(mail.reply(second, message_id="<third@example.com>"))
    assert third.message_id == "third@example.com"
    assert third.in_reply_to == "second@example.com"
    assert third.references == ("root@example.com", "second@example.com")
    assert third.thread_root == "root@example.com"
    assert third.subject == "Re: Quarterly numbers"
    assert "> Thanks, looks good." in third.text


def test_long_references_keep_the_first_and_the_last_99() -> None:
    refs = [f"<r{i}@example.com>" for i in range(500)]
    parsed = parse(mail.plain_message(references=refs, in_reply_to="<r499@example.com>"))
    assert len(parsed.references) == 100
    assert parsed.references[0] == "r0@example.com" == parsed.thread_root
    assert parsed.references[1] == "r401@example.com"
    assert parsed.references[-1] == "r499@example.com" == parsed.in_reply_to


def test_ids_without_brackets_and_missing_ids() -> None:
    raw = mail.raw_message(b"x", headers=[("References", "a@x b@y"), ("In-Reply-To", "b@y")])
    parsed = parse(raw)
    assert parsed.references == ("a@x", "b@y") and parsed.in_reply_to == "b@y"
    bare = parse(b"From: a@example.com\r\nSubject: s\r\n\r\nhi\r\n")
    assert bare.message_id is None and bare.references == () and bare.thread_root is None


def test_addresses_are_lower_cased_and_implausible_ones_dropped_with_a_count() -> None:
    raw = mail.raw_message(
        b"x",
        headers=[
            (
                "To",
                f'"{SECRET}, Jr." <Z@Example.COM>, undisclosed-recipients:;, {SECRET}, '
                f"<{SECRET}@localhost>, team: x@y.org, z@w.org;, =?utf-8?q?J=C3=B6rg?= "
                f"<jorg@example.de>",
            ),
            ("Cc", "Jos\xe9 M\xfcller <jose@example.es>".encode()),
        ],
    )
    parsed = parse(raw)
    assert parsed.to == (
        Address("z@example.com", f"{SECRET}, Jr."),
        Address("x@y.org"),
        Address("z@w.org"),
        Address("jorg@example.de", "Jörg"),
    )
    assert parsed.cc == (Address("jose@example.es", "José Müller"),)
    assert parsed.warnings == ("2 implausible addresses dropped",)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tue, 5 Mar 2024 10:30:00 +0100", datetime(2024, 3, 5, 9, 30, tzinfo=UTC)),
        ("5 Mar 2024 09:30:00 -0000", datetime(2024, 3, 5, 9, 30, tzinfo=UTC)),
        ("Tue, 05 Mar 2024 04:30:00 EST", datetime(2024, 3, 5, 9, 30, tzinfo=UTC)),
        ("yesterday-ish", None),
        ("Tue, 5 Mar 99999 10:30:00 +0100", None),
    ],
)
def test_dates_are_aware_utc_or_none_with_a_warning(value: str, expected: datetime | None) -> None:
    parsed = parse(mail.raw_message(b"x", headers=[("Date", value)]))
    assert parsed.date == expected
    assert (parsed.warnings == ("Date unparseable",)) is (expected is None)
