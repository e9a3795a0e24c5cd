"""HTML mail to text (worker/text/html.py): structure, links, what is dropped, the caps,
hostile nesting, and the rule that says a plain ``body`` is HTML."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from bench.html_mail import PIXEL, SCRIPT, STYLE, gmail_reply, large, newsletter, outlook_reply
from worker.core.payloads import PayloadError, content_hash, parse_payload
from worker.text import html as html_mod
from worker.text.html import MAX_DEPTH, html_to_text, looks_like_html, nesting_depth
from worker.text.tokens import count_tokens


def test_paragraphs_lists_links_and_entities_are_kept() -> None:
    text = html_to_text(newsletter(2))
    assert "Quarterly update 0: Café revenue & growth\n\nRevenue in region 0 grew 12 %" in text
    assert "\n- New customers: 41\n- Churn: 2.1 %\n" in text
    assert "Read the full report" in text  # link text kept ...
    assert "news.example.com" not in text and "utm_" not in text  # ... its URL is not
    assert "Zürich" in text


def test_style_script_pixels_and_markup_are_dropped() -> None:
    text = html_to_text(newsletter(3))
    for gone in ("font-family", "@media", "function x", "o.gif", "<", "&amp;", "&nbsp;", "\ue000"):
        assert gone not in text, gone
    body = f"<html><head>{STYLE}</head><body><p>Hello</p>{SCRIPT}{PIXEL}<!-- c --></body></html>"
    assert html_to_text(body) == "Hello"


def test_visible_text_tokens_are_what_remains() -> None:
    body = newsletter(3)
    text = html_to_text(body)
    assert count_tokens(body) > 10_000
    assert 100 < count_tokens(text) < 250  # 3 sections of ~50 visible tokens


def test_replies_keep_line_structure_and_mark_quotes() -> None:
    gmail = html_to_text(gmail_reply())
    assert gmail.startswith("Hi Sam,\n\nThe option pool we proposed to Northwind is 12 %")
    assert "wrote:\n\n> What pool size did we land on?" in gmail
    outlook = html_to_text(outlook_reply())
    assert "Naïve question: does it cover Jürgen’s team?" in outlook
    assert "From: Lee Park\nSent: Monday\nSubject: Budget" in outlook
    nested = html_to_text(
        "<p>top</p><blockquote><p>one</p><blockquote>two</blockquote></blockquote>"
    )
    assert nested == "top\n\n> one\n>\n> > two"


def test_table_cells_are_separated() -> None:
    assert html_to_text("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>") == (
        "a b\n\nc"
    )


def test_detection_rule() -> None:
    assert looks_like_html(newsletter(1))
    assert looks_like_html("  <HTML><body>x</body></HTML>")
    assert looks_like_html(gmail_reply())
    assert looks_like_html("\ufeff<div>hi</div>")
    for plain in ("<3 thanks!", "<@U123> can you look?", "Use <div> and </div> here", "a < b"):
        assert not looks_like_html(plain), plain


def test_deep_nesting_is_bounded_and_keeps_the_text() -> None:
    for depth in (MAX_DEPTH - 10, 100_000):
        body = "<div>" * depth + "deep text" + "</div>" * depth
        started = time.perf_counter()
        assert html_to_text(body) == "deep text"
        assert time.perf_counter() - started < 2.0
    assert nesting_depth("<div>" * 5000, limit=10) == 11  # stops counting past the limit
    assert nesting_depth("<br><img><hr>" * 5000) == 0


def test_hostile_twenty_megabytes_of_unclosed_tags_is_capped() -> None:
    body = "<div><span>x</span>" * 1_000_000  # 19 MB; lexbor alone takes ~30 s on 100k
    started = time.perf_counter()
    text = html_to_text(body)
    assert time.perf_counter() - started < 5.0
    assert set(text.split()) == {"x"}
    assert len(text) <= html_mod.MAX_HTML_CHARS


def test_fallback_skips_style_and_script_and_decodes_entities() -> None:
    body = "<div>" * (MAX_DEPTH + 1) + STYLE + "<p>caf&eacute; &amp; co</p><script>x()</script>"
    assert html_to_text(body) == "café & co"


def test_large_newsletter_is_fast() -> None:
    body = large()
    html_to_text(body)
    started = time.perf_counter()
    html_to_text(body)
    assert time.perf_counter() - started < 0.5  # ~10-20 ms measured


def _comm(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "kind": "communication",
        "workspace_id": "5a3f0000-0000-4000-8000-000000000001",
        "source": "gmail",
        "external_id": "m1",
        "channel": "email",
    }
    return {**base, **kw}


def test_payload_fields() -> None:
    assert parse_payload(_comm(body_html="<p>x</p>")).html is True
    assert parse_payload(_comm(body="<p>x</p>", content_type="Text/HTML; charset=utf-8")).html
    assert parse_payload(_comm(body="x", content_type="text/plain")).html is False
    assert parse_payload(_comm(body="x")).html is None
    cases = [
        (_comm(body="x", body_html="<p>x</p>"), "body_html"),
        (_comm(body="x", content_type="application/pdf"), "content_type"),
        (_comm(body_html="<p>x</p>", content_type="text/plain"), "content_type"),
        (_comm(body_html="x" * 20_000_001), "body_html"),
    ]
    for raw, field in cases:
        with pytest.raises(PayloadError) as err:
            parse_payload(raw)
        assert err.value.field == field, (raw.keys(), err.value)


def test_unset_new_fields_leave_the_content_hash_alone() -> None:
    plain = parse_payload(_comm(body="hello"))
    assert content_hash(plain) != content_hash(parse_payload(_comm(body_html="hello")))
    # The hash of a payload that does not use the new fields is the one it had before
    # they existed: canonical JSON of the schema-1 fields only.
    old = plain.model_dump(mode="json", exclude={"schema_version", "body_html", "content_type"})
    canonical = json.dumps(old, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert content_hash(plain) == hashlib.sha256(canonical.encode()).hexdigest()
