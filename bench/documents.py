"""Document text extraction: the measurement behind worker/extract's choices (bench/NOTES.md).

`python -m bench.documents [--quick]` writes realistic PDF/DOCX/PPTX/XLSX files (small and
large, tests/support/documents.py), runs every installed candidate on each in a fresh
child process and prints, per type: median parse time, peak memory (RSS high-water mark
growth, reset before the parse through /proc/self/clear_refs, and the tracemalloc peak of
Python allocations), and text quality - the share of the file's unique markers found, in
reading order, and in the right page/slide/sheet section when the library gives sections.
Then the installed size of each library with its dependencies. Needs the `dev` and
`bench` extras (writers and candidates); a candidate that is not installed is skipped.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import io
import multiprocessing
import re
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from tests.support import documents as make
from worker.extract.documents import extract_document
from worker.extract.limits import Limits

Sections = list[tuple[str, str]]  # (position, text); position "" when the library has none
_MARK = re.compile(r"M\d+X\d+")


# --- corpus: every paragraph/cell carries a marker M<section>X<n> ------------------------


def _sentence(section: int, n: int) -> str:
    return f"Paragraph M{section}X{n} explains the quarterly figures for the region in some detail."


def corpus(quick: bool) -> dict[str, dict[str, tuple[bytes, list[str]]]]:
    """Per type and size: the file and its markers in reading order."""
    sizes = {"small": (10, 10, 10, 1_000), "large": (200, 300, 200, 30_000)}
    if quick:
        sizes = {"small": (5, 5, 5, 200), "large": (30, 30, 30, 3_000)}
    files: dict[str, dict[str, tuple[bytes, list[str]]]] = {
        k: {} for k in ("pdf", "docx", "pptx", "xlsx")
    }
    for size, (pages, headings, slides, rows) in sizes.items():
        pdf = make.pdf(["\n".join(_sentence(p, n) for n in range(12)) for p in range(pages)])
        files["pdf"][size] = (pdf, [f"M{p}X{n}" for p in range(pages) for n in range(12)])
        blocks: list[tuple[str, object]] = []
        for h in range(headings):
            blocks.append(("h1" if h % 5 == 0 else "h2", f"Heading {h}"))
            blocks += [("p", _sentence(h, n)) for n in range(8)]
            blocks.append(
                ("table", [[f"M{h}X{90 + c + 3 * r}" for c in range(3)] for r in range(3)])
            )
        docx_markers = [f"M{h}X{n}" for h in range(headings) for n in [*range(8), *range(90, 99)]]
        files["docx"][size] = (make.docx(blocks), docx_markers)
        deck = [
            (f"Slide M{s}X0", [_sentence(s, n) for n in range(1, 6)], [[f"M{s}X7", f"M{s}X8"]])
            for s in range(slides)
        ]
        pptx_markers = [f"M{s}X{n}" for s in range(slides) for n in (0, 1, 2, 3, 4, 5, 7, 8)]
        files["pptx"][size] = (make.pptx(deck), pptx_markers)
        sheet = [[f"M{r // 1000}X{r}", r * 1.5, f"note {r}", "2026-01-01"] for r in range(rows)]
        xlsx = make.xlsx({"Data": sheet, "Summary": [["M1000X0", 1]]})
        files["xlsx"][size] = (xlsx, [f"M{r // 1000}X{r}" for r in range(rows)] + ["M1000X0"])
    return files


# --- candidates: bytes -> sections ------------------------------------------------------


def ours(data: bytes) -> Sections:
    doc = extract_document(data, Limits(max_chars=50_000_000, max_unzipped_bytes=1 << 30))
    return [(",".join(map(str, s.position.values())), s.text) for s in doc.sections]


def pypdfium2_pages(data: bytes) -> Sections:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    return [(str(i + 1), pdf[i].get_textpage().get_text_range()) for i in range(len(pdf))]


def pypdf_pages(data: bytes) -> Sections:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return [(str(i + 1), page.extract_text()) for i, page in enumerate(reader.pages)]


def pdfminer_pages(data: bytes) -> Sections:
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LTTextContainer

    return [
        (str(i + 1), "\n".join(el.get_text() for el in page if isinstance(el, LTTextContainer)))
        for i, page in enumerate(extract_pages(io.BytesIO(data)))
    ]


def python_docx(data: bytes) -> Sections:
    import docx

    parts: list[str] = []
    for block in docx.Document(io.BytesIO(data)).iter_inner_content():
        if hasattr(block, "rows"):
            parts += [" | ".join(c.text for c in row.cells) for row in block.rows]
        else:
            parts.append(block.text)
    return [("", "\n".join(parts))]


def mammoth_text(data: bytes) -> Sections:
    import mammoth

    return [("", mammoth.extract_raw_text(io.BytesIO(data)).value)]


def python_pptx(data: bytes) -> Sections:
    from pptx import Presentation

    out: Sections = []
    for i, slide in enumerate(Presentation(io.BytesIO(data)).slides):
        lines: list[str] = []
        for shape in slide.shapes:
            if shape.has_text_frame:
                lines.append(shape.text_frame.text)
            if getattr(shape, "has_table", False):
                lines += [" | ".join(c.text for c in row.cells) for row in shape.table.rows]
        out.append((str(i + 1), "\n".join(lines)))
    return out


def openpyxl_rows(data: bytes) -> Sections:
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    out = [
        (
            sheet.title,
            "\n".join(
                " | ".join("" if v is None else str(v) for v in row)
                for row in sheet.iter_rows(values_only=True)
            ),
        )
        for sheet in book.worksheets
    ]
    book.close()
    return out


def calamine_rows(data: bytes) -> Sections:
    from python_calamine import CalamineWorkbook

    book = CalamineWorkbook.from_filelike(io.BytesIO(data))
    return [
        (
            name,
            "\n".join(
                " | ".join(str(v) for v in row) for row in book.get_sheet_by_name(name).to_python()
            ),
        )
        for name in book.sheet_names
    ]


CANDIDATES: dict[str, list[tuple[str, str, Callable[[bytes], Sections]]]] = {
    "pdf": [
        ("ours (pypdfium2)", "pypdfium2", ours),
        ("pypdfium2 bare", "pypdfium2", pypdfium2_pages),
        ("pypdf", "pypdf", pypdf_pages),
        ("pdfminer.six", "pdfminer.six", pdfminer_pages),
    ],
    "docx": [
        ("ours (zipfile+expat)", "", ours),
        ("python-docx", "python-docx", python_docx),
        ("mammoth raw text", "mammoth", mammoth_text),
    ],
    "pptx": [("ours (zipfile+expat)", "", ours), ("python-pptx", "python-pptx", python_pptx)],
    "xlsx": [
        ("ours (zipfile+expat)", "", ours),
        ("openpyxl read_only", "openpyxl", openpyxl_rows),
        ("python-calamine", "python-calamine", calamine_rows),
    ],
}


# --- measuring ---------------------------------------------------------------------------


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def _measure(kind: str, name: str, warm: bytes, data: bytes, runs: int, conn: Any) -> None:
    """In a fresh child: warm up on ``warm`` (imports, caches), reset the RSS high-water
    mark, parse ``data`` once (peak RSS growth, output kept for the quality check), then
    time ``runs`` parses, then one more under tracemalloc (Python allocations' peak)."""
    parse = next(fn for label, _, fn in CANDIDATES[kind] if label == name)
    try:
        parse(warm)
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # VmHWM := VmRSS
        before = _status("VmRSS:")
        sections = parse(data)
        rss_peak = _status("VmHWM:") - before
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            parse(data)
            times.append(time.perf_counter() - started)
        tracemalloc.start()  # a separate run: tracing slows Python code several times
        parse(data)
        _, python_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        conn.send((statistics.median(times), rss_peak, python_peak, sections))
    except Exception as exc:  # a candidate failing is a result
        conn.send(repr(exc)[:80])


def quality(sections: Sections, kind: str) -> tuple[float, float, float | None]:
    """(markers found, in reading order, in the right section) as shares of the file's."""
    expected = _expected[kind]
    text = "\n".join(t for _, t in sections)
    found = _MARK.findall(text)
    want = set(expected)
    got = [m for m in found if m in want]
    share = len(set(got)) / len(want)
    index = {m: i for i, m in enumerate(expected)}
    ordered = sum(index[a] < index[b] for a, b in zip(got, got[1:], strict=False)) / max(
        len(got) - 1, 1
    )
    if not sections or not sections[0][0]:
        return share, ordered, None
    right = sum(
        1
        for position, section_text in sections
        for m in _MARK.findall(section_text)
        if m in want and _in_section(kind, m, position)
    )
    return share, ordered, right / len(want)


def _in_section(kind: str, marker: str, position: str) -> bool:
    section = int(marker[1:].split("X")[0])
    if kind == "xlsx":
        return position == ("Summary" if section == 1000 else "Data")
    if kind == "docx":
        return position.startswith("Heading ") and position == f"Heading {section}"
    return position.split(",")[-1] == str(section + 1)


_expected: dict[str, list[str]] = {}


def installed(dist: str, seen: set[str] | None = None) -> tuple[float, list[str]]:
    """MB installed by ``dist`` and its (installed) dependencies, and their names."""
    seen = set() if seen is None else seen
    try:
        found = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return 0.0, []
    name = found.metadata["Name"].lower()
    if name in seen:
        return 0.0, []
    seen.add(name)
    size = sum(f.size or 0 for f in found.files or []) / 1e6
    names = [name]
    for requirement in found.requires or []:
        if "extra ==" in requirement or "python_version <" in requirement:
            continue
        more, more_names = installed(re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0], seen)
        size += more
        names += more_names
    return size, names


def _empty_cells_xlsx(megabytes: int) -> bytes:
    """A valid XLSX whose one sheet is ``megabytes`` of empty styled cells: no text, so
    the character cap never stops the parse - the worst case for time."""
    book = make.xlsx({"S": [["x"]]})
    rows = []
    size, n = 0, 0
    while size < megabytes << 20:
        row = (
            f'<row r="{n + 1}">'
            + "".join(f'<c r="{c}{n + 1}" s="1"/>' for c in "ABCDEFGHIJ")
            + "</row>"
        )
        rows.append(row)
        size += len(row)
        n += 1
    xml = (
        '<?xml version="1.0"?><worksheet xmlns="http://schemas.openxmlformats.org/'
        'spreadsheetml/2006/main"><sheetData>' + "".join(rows) + "</sheetData></worksheet>"
    )
    return make.replace_member(book, "xl/worksheets/sheet1.xml", xml.encode())


def hostile() -> None:
    """Time and outcome of the hostile cases through ``extract_document`` (default caps)."""
    whole = make.pdf([f"Page {i} text. " * 30 for i in range(40)])
    cases = {
        "pdf 10,000 pages": make.pdf_many_pages(10_000),
        "pdf encrypted": make.pdf_encrypted(["x"], "pw"),
        "pdf cut at half": whole[: len(whole) // 2],
        "pdf cut at 90 %": whole[: len(whole) * 9 // 10],
        "pdf image-only, 20 pages": make.pdf_images(20),
        "docx + 64 MiB zeros (zip bomb)": make.zip_bomb_docx(64),
        "xlsx 40 MB of empty styled cells": _empty_cells_xlsx(40),
        "png": make.png(),
    }
    print("\n## hostile input (default caps)\n")
    print("| case | bytes | ms | status | reason |")
    print("|---|---|---|---|---|")
    for label, data in cases.items():
        started = time.perf_counter()
        doc = extract_document(data, Limits())
        ms = (time.perf_counter() - started) * 1000
        print(f"| {label} | {len(data):,} | {ms:.0f} | {doc.status} | {doc.reason} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller files, fewer runs")
    parser.add_argument("--hostile", action="store_true", help="only the hostile cases")
    args = parser.parse_args()
    if args.hostile:
        hostile()
        return
    files = corpus(args.quick)
    context = multiprocessing.get_context("forkserver")
    for kind, by_size in files.items():
        print(f"\n## {kind}\n")
        print(
            "| library | size | ms | RSS peak MB | py peak MB | found | ordered | right section |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for size, (data, markers) in by_size.items():
            _expected[kind] = markers
            for label, _, _ in CANDIDATES[kind]:
                here, there = context.Pipe()
                child = context.Process(
                    target=_measure,
                    args=(
                        kind,
                        label,
                        by_size["small"][0],
                        data,
                        3 if size == "large" else 5,
                        there,
                    ),
                )
                child.start()
                result = here.recv() if here.poll(600) else "timeout"
                child.join(5)
                if isinstance(result, str):
                    print(f"| {label} | {size} ({len(data) // 1024} KB) | {result} | | | | | |")
                    continue
                seconds, rss, py_peak, sections = result
                share, ordered, right = quality(sections, kind)
                placed = "-" if right is None else f"{right:.0%}"
                print(
                    f"| {label} | {size} ({len(data) // 1024} KB) | {seconds * 1000:.1f} | "
                    f"{rss / 1e6:.1f} | {py_peak / 1e6:.1f} | {share:.0%} | {ordered:.0%} | {placed} |"
                )
    print("\n## installed size (with dependencies)\n")
    for dist in [
        "pypdfium2",
        "pypdf",
        "pdfminer.six",
        "python-docx",
        "mammoth",
        "python-pptx",
        "openpyxl",
        "python-calamine",
    ]:
        size, names = installed(dist)
        print(f"- {dist}: {size:.1f} MB ({', '.join(names) or 'not installed'})")


if __name__ == "__main__":
    main()
