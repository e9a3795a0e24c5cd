"""HTML mail corpus and the measurement behind the HTML-to-text choice (bench/NOTES.md).

`python -m bench.html_mail` prints ms per message and output checks per library.
"""

from __future__ import annotations

import html as _html
import re
import statistics
import time
from collections.abc import Callable

from worker.text.tokens import get_encoding

STYLE = (
    "<style>"
    + "".join(
        f".c{i}{{font-family:Arial,sans-serif;color:#{i:06x};padding:{i % 9}px}}"
        "@media only screen and (max-width:600px){.c%d{width:100%%!important}}" % i
        for i in range(300)
    )
    + "</style>"
)
SCRIPT = "<script>" + "var t=" + repr(list(range(400))) + ";function x(){return t}</script>"
PIXEL = '<img src="https://t.example.com/o.gif?u=8f3a" width="1" height="1" alt="" style="display:none">'


def newsletter(sections: int = 3) -> str:
    """Nested-table newsletter: inline CSS, <style>, <script>, a tracking pixel, links."""
    rows = []
    for i in range(sections):
        rows.append(
            f'<tr><td class="c{i}" style="padding:12px;font-family:Arial"><table role="presentation" '
            'width="100%" cellpadding="0" cellspacing="0"><tr><td style="font-size:18px">'
            f"<h2>Quarterly update {i}: Café revenue &amp; growth</h2></td></tr>"
            f'<tr><td><p style="margin:0 0 12px">Revenue in region {i} grew 12&nbsp;% over the '
            "quarter, driven by the Zürich launch.</p><ul><li>New customers: 41</li>"
            '<li>Churn: 2.1&nbsp;%</li></ul><p><a href="https://news.example.com/r?id='
            f'{i}&amp;utm_source=mail&amp;utm_campaign=q3">Read the full report</a></p>'
            "</td></tr></table></td></tr>"
        )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>" + STYLE + SCRIPT + "</head>"
        '<body style="margin:0"><table width="100%" bgcolor="#eee"><tr><td align="center">'
        '<table width="600" cellpadding="0" cellspacing="0">' + "".join(rows) + "</table>"
        "</td></tr></table>" + PIXEL + "</body></html>"
    )


def gmail_reply() -> str:
    return (
        '<div dir="ltr"><div>Hi Sam,</div><div><br></div><div>The option pool we proposed '
        'to Northwind is 12&nbsp;%; see <a href="https://docs.example.com/x">the model</a>.'
        "</div><div><br></div><div>— Maya</div></div><br>"
        '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, Nov 2, 2026 at '
        "9:12 AM Sam Patel &lt;sam@acme.io&gt; wrote:<br></div>"
        '<blockquote class="gmail_quote" style="margin:0 0 0 .8ex;border-left:1px #ccc solid;'
        'padding-left:1ex"><div dir="ltr">What pool size did we land on?</div></blockquote></div>'
    )


def outlook_reply() -> str:
    return (
        '<html xmlns:o="urn:schemas-microsoft-com:office:office"><head><style><!-- '
        "p.MsoNormal{margin:0cm;font-size:11.0pt} --></style></head><body lang=EN-US>"
        "<div class=WordSection1><p class=MsoNormal>Thanks, approved.<o:p></o:p></p>"
        "<p class=MsoNormal>Naïve question: does it cover Jürgen’s team?<o:p></o:p></p>"
        '<div style="border:none;border-top:solid #E1E1E1 1.0pt"><p class=MsoNormal><b>From:</b>'
        " Lee Park<br><b>Sent:</b> Monday<br><b>Subject:</b> Budget</p></div>"
        "<p class=MsoNormal>Please approve the Q4 budget.</p></div></body></html>"
    )


def large() -> str:
    """~200 KB: a long newsletter."""
    return newsletter(160)


def nested(depth: int) -> str:
    return "<div>" * depth + "deep text" + "</div>" * depth


ENC = get_encoding()


def tokens(text: str) -> int:
    return len(ENC.encode(text, disallowed_special=()))


def _inscriptis(html: str) -> str:
    from inscriptis import get_text

    return get_text(html)


def _selectolax(html: str) -> str:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    tree.strip_tags(["style", "script", "head", "img"])
    return tree.body.text(separator="\n", strip=True) if tree.body else ""


def _html2text(html: str) -> str:
    import html2text

    h = html2text.HTML2Text()
    h.body_width = 0
    return h.handle(html)


def _trafilatura(html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, include_links=False, favor_recall=True) or ""


def _worker(html: str) -> str:
    from worker.text.html import html_to_text

    return html_to_text(html)


LIBS: dict[str, Callable[[str], str]] = {
    "worker.text.html": _worker,
    "inscriptis": _inscriptis,
    "selectolax": _selectolax,
    "html2text": _html2text,
    "trafilatura": _trafilatura,
}


def ms(fn: Callable[[str], str], html: str, n: int) -> float:
    fn(html)
    runs = []
    for _ in range(n):
        t = time.perf_counter()
        fn(html)
        runs.append((time.perf_counter() - t) * 1000)
    return statistics.median(runs)


def main() -> None:
    small = newsletter(3)
    big = large()
    visible = re.sub(
        r"\s+",
        " ",
        _html.unescape(re.sub(r"<(style|script)[^>]*>.*?</\1>|<[^>]+>", " ", small, flags=re.S)),
    )
    print(
        f"small {len(small)} B, {tokens(small)} tokens; visible ~{tokens(visible)} tokens; large {len(big)} B, {tokens(big)} tokens"
    )
    for name, fn in LIBS.items():
        out = fn(small)
        reply = fn(gmail_reply()) + fn(outlook_reply())
        checks = {
            "paras": out.count("\n") >= 10 and "Quarterly update 1" in out,
            "link": "Read the full report" in out,
            "dropped": not any(s in out for s in ("font-family", "function x", "o.gif")),
            "nomarkup": "<" not in out and "&amp;" not in out and "&nbsp;" not in out,
            "quote": "What pool size" in reply and "Jürgen" in reply and "Northwind" in reply,
        }
        row = [f"{ms(fn, small, 50):.2f} ms", f"{ms(fn, big, 5):.1f} ms", f"{tokens(out)} tok"]
        for depth in (1000, 100_000):
            t = time.perf_counter()
            try:
                res = fn(nested(depth))
                ok = "deep text" in res
            except Exception as exc:  # noqa: BLE001 - measuring
                ok = type(exc).__name__
            row.append(f"d{depth}: {(time.perf_counter() - t) * 1000:.0f} ms {ok}")
        print(name, row, {k for k, v in checks.items() if not v} or "all ok")


if __name__ == "__main__":
    main()
