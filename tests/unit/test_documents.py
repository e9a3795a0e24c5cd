"""Document extraction (worker/extract/documents.py): real files written by the usual
libraries, one per type, with their positions; and every hostile case, each of which must
end in a recorded outcome (status + a reason without content), never an exception."""

from __future__ import annotations

import io
import random
import tracemalloc
import zipfile

import pytest
from pypdf import PdfReader, PdfWriter

from tests.support import documents as make
from worker.extract import documents as documents_mod
from worker.extract.documents import extract_document
from worker.extract.limits import Limits
from worker.extract.results import Document
from worker.extract.sniff import sniff
from worker.extract.zipped import Package, XmlReader, ZipBomb

LIMITS = Limits()
SECRET = "Zebra-Quokka secret sentence"  # must never appear in a reason
PAGES = ["First page about budgets.", "Second page: the roadmap.", f"Page three. {SECRET}."]


def extract(data: bytes, limits: Limits = LIMITS) -> Document:
    doc = extract_document(data, limits)
    assert SECRET not in (doc.reason or "")
    assert doc.chars == sum(len(s.text) for s in doc.sections)
    assert all(s.text.strip() and "\x00" not in s.text for s in doc.sections)
    return doc


def texts(doc: Document) -> list[tuple[dict[str, str | int], str]]:
    return [(s.position, s.text) for s in doc.sections]


@pytest.fixture(scope="module")
def pdf_bytes() -> bytes:
    return make.pdf(PAGES, title="Quarterly plan")


@pytest.fixture(scope="module")
def docx_bytes() -> bytes:
    return make.docx(
        [
            ("p", "Preamble before any heading."),
            ("h1", "Introduction"),
            ("p", "Why we write."),
            ("table", [["Name", "Role"], ["Maya", "CFO"]]),
            ("p", "After the table."),
            ("h2", "Pricing"),
            ("p", f"Pricing is 12 %. {SECRET}"),
        ],
        title="The plan",
    )


# --- sniffing --------------------------------------------------------------------------


def test_sniff_uses_the_bytes(pdf_bytes: bytes, docx_bytes: bytes) -> None:
    assert sniff(pdf_bytes) == ("pdf", "application/pdf")
    assert sniff(b"junk before\n" + pdf_bytes)[0] == "pdf"
    assert sniff(docx_bytes)[0] == "docx"
    assert sniff(make.pptx([("T", ["a"], None)]))[0] == "pptx"
    assert sniff(make.xlsx({"S": [["a"]]}))[0] == "xlsx"
    assert sniff(b"<!DOCTYPE html><html><body><p>x</p></body></html>") == ("html", "text/html")
    assert sniff(b"# Title\n\nSome *markdown* text.\n") == ("markdown", "text/markdown")
    assert sniff("Plain café text.\n".encode("cp1252")) == ("text", "text/plain")
    assert sniff("\ufeffUTF-16 text".encode("utf-16")) == ("text", "text/plain")
    other = ("other", "application/octet-stream")
    assert sniff(make.png()) == other
    assert sniff(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600)) == other  # .doc / .xls
    assert sniff(make.with_member(b"", "notes.txt", b"hi")) == other  # a plain zip
    assert sniff(bytes(random.Random(1).randbytes(4096))) == other
    assert sniff(b"") == other


# --- each type, with positions ----------------------------------------------------------


def test_pdf_one_section_per_page(pdf_bytes: bytes) -> None:
    doc = extract(pdf_bytes)
    assert (doc.type, doc.status, doc.reason, doc.pages) == ("pdf", "ok", None, 3)
    assert [s.position for s in doc.sections] == [{"page": 1}, {"page": 2}, {"page": 3}]
    assert SECRET in doc.sections[2].text and SECRET not in doc.sections[1].text
    assert doc.title == "Quarterly plan"


def test_docx_split_at_headings_in_order(docx_bytes: bytes) -> None:
    doc = extract(docx_bytes)
    assert (doc.type, doc.status, doc.title) == ("docx", "ok", "The plan")
    assert texts(doc) == [
        ({}, "Preamble before any heading."),
        (
            {"heading": "Introduction"},
            "Introduction\n\nWhy we write.\n\nName | Role\nMaya | CFO\n\nAfter the table.",
        ),
        ({"heading": "Pricing"}, f"Pricing\n\nPricing is 12 %. {SECRET}"),
    ]


def test_docx_localized_styles_text_boxes_and_deletions() -> None:
    styles = (
        '<w:style w:type="paragraph" w:styleId="berschrift1"><w:name w:val="heading 1"/></w:style>'
        '<w:style w:type="paragraph" w:styleId="Gliederung"><w:pPr><w:outlineLvl w:val="1"/>'
        "</w:pPr></w:style>"
    )
    box = (
        "<w:p><w:r><mc:AlternateContent><mc:Choice Requires='wps'><w:txbxContent>"
        + make.para("Boxed text")
        + "</w:txbxContent></mc:Choice><mc:Fallback><w:txbxContent>"
        + make.para("Boxed text")
        + "</w:txbxContent></mc:Fallback></mc:AlternateContent></w:r>"
        + "<w:r><w:t>Anchor</w:t><w:tab/><w:t>tabbed</w:t></w:r>"
        + "<w:del><w:r><w:delText>gone</w:delText></w:r></w:del></w:p>"
    )
    body = make.para("Einleitung", "berschrift1") + box + make.para("Teil zwei", "Gliederung")
    doc = extract(make.docx_raw(body, styles))
    assert texts(doc) == [
        ({"heading": "Einleitung"}, "Einleitung\n\nBoxed text\n\nAnchor tabbed"),
        ({"heading": "Teil zwei"}, "Teil zwei"),
    ]


def test_pptx_one_section_per_slide_with_tables_and_notes() -> None:
    data = make.pptx(
        [
            ("Welcome", ["Agenda", "Numbers"], None),
            ("Results", ["Revenue grew"], [["Region", "Growth"], ["EU", "12%"]]),
        ],
        notes={1: "Say the EU number slowly."},
    )
    doc = extract(data)
    assert (doc.type, doc.status, doc.pages) == ("pptx", "ok", 2)
    assert texts(doc) == [
        ({"slide": 1}, "Welcome\n\nAgenda\nNumbers"),
        (
            {"slide": 2},
            "Results\n\nRevenue grew\n\nRegion | Growth\nEU | 12%\n\nSay the EU number slowly.",
        ),
    ]


def test_xlsx_one_section_per_sheet_rows_as_lines() -> None:
    data = make.xlsx(
        {
            "Q3": make.realistic_sheet(2, cols=5),
            "Blank": [],
            "Sparse": [["a", None, None, "d"], [None], [1.5, True, 3]],
        }
    )
    doc = extract(data)
    assert (doc.type, doc.status, doc.pages) == ("xlsx", "ok", 3)
    assert texts(doc) == [
        (
            {"sheet": "Q3"},
            "Region | Customer | Amount | Date | Field 0\n"
            "Region 0 | Customer 0 | 0 | 2026-01-01 | value 0-0\n"
            "Region 1 | Customer 1 | 1.25 | 2026-01-02 | value 1-0",
        ),
        ({"sheet": "Sparse"}, "a | | | d\n1.5 | TRUE | 3"),
    ]


def test_a_huge_sheet_is_several_sections_at_the_same_position() -> None:
    doc = extract(make.xlsx({"Big": make.realistic_sheet(3000)}))
    assert len(doc.sections) >= 2 and doc.status == "ok"
    assert {s.position["sheet"] for s in doc.sections} == {"Big"}
    assert "Customer 2999" in doc.sections[-1].text


def test_html_split_at_h1_to_h3() -> None:
    html = (
        "<html><head><title>Notes &amp; plans</title><style>p{color:red}</style></head><body>"
        "<p>Intro.</p><h1>Goals</h1><p>Grow.</p><h4>Minor</h4><p>Detail.</p>"
        f"<h2 class='x'>Risks</h2><ul><li>{SECRET}</li></ul></body></html>"
    )
    doc = extract(html.encode())
    assert (doc.type, doc.status, doc.title) == ("html", "ok", "Notes & plans")
    assert texts(doc) == [
        ({}, "Intro."),
        ({"heading": "Goals"}, "Goals\n\nGrow.\n\nMinor\n\nDetail."),
        ({"heading": "Risks"}, f"Risks\n\n- {SECRET}"),
    ]


def test_markdown_split_at_headings_outside_code() -> None:
    text = (
        "---\ntitle: x\n---\nIntro line.\n\n# Setup\n\nInstall it.\n\n```sh\n# a comment\n```\n"
        "\nUsage\n-----\nRun it.\n"
    )
    doc = extract(text.encode())
    assert doc.type == "markdown"
    assert texts(doc) == [
        ({}, "---\ntitle: x\n---\nIntro line."),
        ({"heading": "Setup"}, "# Setup\n\nInstall it.\n\n```sh\n# a comment\n```"),
        ({"heading": "Usage"}, "Usage\n-----\nRun it."),
    ]


def test_text_decodings_and_nul() -> None:
    cp1252 = "Café crème – “quoted” naïve, 10 €.\r\nSecond line.".encode("cp1252")
    assert texts(extract(cp1252)) == [({}, "Café crème – “quoted” naïve, 10 €.\nSecond line.")]
    bom = "\ufeffGrüße aus Zürich".encode()
    assert extract(bom).sections[0].text == "Grüße aus Zürich"
    assert extract("Grüße".encode("utf-16")).sections[0].text == "Grüße"
    nul = ("Some text with a NUL\x00 in the middle. " + "More text. " * 30).encode()
    assert extract(nul).sections[0].text.startswith("Some text with a NUL in the middle.")


# --- hostile input ---------------------------------------------------------------------


def test_ten_thousand_pages_read_up_to_the_cap() -> None:
    doc = extract(make.pdf_many_pages(10_000))
    assert (doc.status, doc.pages, len(doc.sections)) == ("partial", 10_000, 1_000)
    assert doc.reason == "read 1000 of 10000 pages (DOCUMENT_MAX_PAGES)"
    assert doc.sections[-1].position == {"page": 1000}


def test_encrypted_pdf_is_skipped_owner_only_is_read() -> None:
    doc = extract(make.pdf_encrypted([SECRET], user_password="pw"))
    assert (doc.type, doc.status, doc.reason, doc.sections) == ("pdf", "skipped", "encrypted", ())
    owner_only = extract(make.pdf_encrypted(["Restricted but readable."], user_password=""))
    assert owner_only.status == "ok" and "readable" in owner_only.sections[0].text


def test_truncated_pdf_reads_what_remains_or_says_why() -> None:
    whole = make.pdf([f"Page {i} says {SECRET}. " * 20 for i in range(20)])
    half = extract(whole[: len(whole) // 2])
    assert half.status in ("partial", "skipped") and half.reason
    assert half.status == "skipped" or "damaged pdf (cut short)" in half.reason
    most = extract(whole[: len(whole) * 9 // 10])
    assert most.status == "partial" and "damaged pdf (cut short)" in (most.reason or "")
    assert most.sections[0].position == {"page": 1} and "Page 0 says" in most.sections[0].text
    assert extract(b"%PDF-1.7\n" + bytes(100)).status == "skipped"


def test_scanned_pdf_is_skipped_mixed_is_partial() -> None:
    doc = extract(make.pdf_images(2))
    assert (doc.status, doc.reason, doc.pages) == (
        "skipped",
        "no text layer (scanned?); OCR is not done",
        None,
    )
    writer = PdfWriter()
    for part in (make.pdf(["Typed page."]), make.pdf_images(1)):
        for page in PdfReader(io.BytesIO(part)).pages:
            writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    mixed = extract(out.getvalue())
    assert (
        mixed.status == "partial" and mixed.reason == "1 pages have no text layer (OCR is not done)"
    )


def test_zip_bomb_by_ratio_is_skipped_before_decompression(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = make.zip_bomb_docx(8)
    opened: list[str] = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append("x"))
    doc = extract(data)
    assert (doc.type, doc.status) == ("docx", "skipped")
    assert doc.reason == "zip bomb: a member expands 1028x to 8388608 bytes (over 100x)"
    assert opened == []


def test_zip_bomb_by_total_size_and_by_member_count() -> None:
    data = make.docx([("p", "x " * 200_000)])
    doc = extract(data, Limits(max_unzipped_bytes=200_000))
    assert doc.status == "skipped" and doc.reason is not None
    assert doc.reason.startswith("zip bomb: members expand to ")
    assert doc.reason.endswith("over 200000 (DOCUMENT_MAX_UNZIPPED_BYTES)")
    crowded = _crowded_zip(20_001)
    assert extract(crowded).reason == "zip bomb: over 20000 zip members"


def _crowded_zip(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
        for i in range(count):
            archive.writestr(f"{i}", b"")
    return buffer.getvalue()


def test_actual_decompression_is_bounded_when_the_check_is_fooled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Package, "check", lambda self: None)
    package = Package(make.zip_bomb_docx(8), LIMITS, "docx")
    with pytest.raises(ZipBomb, match="expands over 100x"):
        for _ in package.chunks("word/media/bomb.bin"):
            pass
    package = Package(make.docx([("p", "y " * 100_000)]), Limits(max_unzipped_bytes=50_000), "docx")
    with pytest.raises(ZipBomb, match="DOCUMENT_MAX_UNZIPPED_BYTES"):
        package.parse("word/document.xml", XmlReader())
    lying = make.lying_sizes(make.docx([("p", "z" * 5000)]), "word/document.xml", 100)
    assert extract(lying).status == "skipped"


def test_document_over_the_byte_cap_is_not_parsed(
    monkeypatch: pytest.MonkeyPatch, pdf_bytes: bytes
) -> None:
    monkeypatch.setitem(documents_mod._READERS, "pdf", lambda *a: pytest.fail("parsed"))
    doc = extract(pdf_bytes, Limits(max_document_bytes=1000))
    assert (doc.type, doc.status) == ("pdf", "skipped")
    assert doc.reason == f"{len(pdf_bytes)} bytes, over 1000 (DOCUMENT_MAX_BYTES)"


def test_text_over_the_char_cap_is_cut(docx_bytes: bytes) -> None:
    for data in (make.pdf_many_pages(50), docx_bytes, b"word " * 10_000):
        doc = extract(data, Limits(max_chars=40))
        assert doc.status == "partial" and doc.chars <= 40
        assert (
            doc.reason is not None
            and "text cut at 40 characters (DOCUMENT_MAX_CHARS)" in doc.reason
        )


def test_slides_and_sheets_over_the_page_cap() -> None:
    deck = extract(make.pptx([(f"S{i}", ["x"], None) for i in range(3)]), Limits(max_pages=2))
    assert (deck.status, deck.reason, deck.pages) == (
        "partial",
        "read 2 of 3 slides (DOCUMENT_MAX_PAGES)",
        3,
    )
    book = extract(make.xlsx({f"S{i}": [["x"]] for i in range(3)}), Limits(max_pages=1))
    assert book.reason == "read 1 of 3 sheets (DOCUMENT_MAX_PAGES)" and len(book.sections) == 1


def test_wrong_type_and_broken_xml() -> None:
    doc = extract(make.png())  # what a ".docx" that is a PNG holds
    assert (doc.type, doc.mime_type, doc.status) == ("other", "application/octet-stream", "skipped")
    assert doc.reason == "not a document (image/png?)"
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1000)
    assert extract(ole).reason == "not a document (application/x-ole-storage?)"  # .doc, .xls
    locked = ole + "EncryptedPackage".encode("utf-16-le") + bytes(100)
    assert extract(locked).reason == "encrypted (password-protected Office file)"
    broken = make.docx_raw(make.para(SECRET) + "<w:p><w:r><w:t>unclosed")
    assert (extract(broken).status, extract(broken).reason) == (
        "skipped",
        "docx parse failed (ExpatError)",
    )


def test_xml_with_a_dtd_is_refused() -> None:
    laughs = '<!DOCTYPE w:document [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
    doc = extract(make.docx_raw(make.para("&b;"), prolog=laughs))
    assert (doc.status, doc.reason) == (
        "skipped",
        "xml with a DTD (refused: OOXML parts never have one)",
    )


def test_damaged_files_never_raise() -> None:
    rng = random.Random(7)
    samples = [
        make.pdf(PAGES),
        make.docx([("h1", "A"), ("p", "b")]),
        make.pptx([("T", ["a"], [["x", "y"]])]),
        make.xlsx({"S": [["a", 1]]}),
    ]
    for data in samples:
        for _ in range(25):
            damaged = bytearray(data[: rng.randrange(1, len(data) + 1)])
            for _ in range(rng.randrange(0, 8)):
                if damaged:
                    damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            doc = extract(bytes(damaged))
            assert doc.status in ("ok", "partial", "skipped")
            assert doc.status == "skipped" or doc.sections


def test_one_giant_paragraph_or_cell_is_held_only_up_to_the_cap() -> None:
    limits = Limits(max_chars=1_000)
    giant = " ".join(f"w{i}" for i in range(600_000))  # 4 MB of text in one element
    for data in (
        make.docx([("p", giant), ("p", "after")]),
        make.pptx([("T", [giant], None)]),
        make.xlsx({"S": [[giant], ["after"]]}),
    ):
        tracemalloc.start()
        doc = extract(data, limits)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert doc.status == "partial" and doc.chars <= 1_000, doc.type
        assert peak < 2_000_000, (doc.type, peak)  # the 4 MB element was never held whole
