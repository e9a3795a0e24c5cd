"""A founder's mailbox as raw MIME, through the real worker (issue 18, item 6).

    python -m bench.mail_corpus [--size small|medium] [--threads N] [--variant NAME ...]
                                [--out DIR] [--keep] [--corpus-only]

The corpus (deterministic from ``--seed``): conversation threads of 1-10 messages whose
replies quote the history as Gmail (``>`` under "On ... wrote:", sometimes wrapped), Apple
Mail (iPhone closer), Outlook (unquoted history under a From/Sent/To/Subject block) and
inline answers write it, EN/FR/DE/ES (the text generator of ``bench.threads``); half of
the messages multipart/alternative with the HTML those clients write (``gmail_quote``
blockquotes, ``blockquote type=cite``, ``MsoNormal`` with a signature logo as a related
image) or HTML only, among them newsletters (layout tables, ``<style>``, ``<script>``, a
tracking pixel: ``bench.html_mail``'s pieces). A third of the threads carry documents (PDF
decks, contracts, reports, invoices; DOCX term sheets and memos, written by fpdf2 and
python-docx): ~15 % of the messages, some attached again down the thread (the same bytes)
or revised (new bytes).

It starts the servers of ``bench.run`` (embedded PostgreSQL 18 + pgvector, fsync on;
redis-server; the OpenAI-compatible stand-in counting cl100k tokens) and ingests the
corpus once per variant (``VARIANTS``: the stand-in's latency, worker settings), each
time into a fresh database with one worker process (``bench.worker_proc``: the real arq
Worker; one parsing child, the default). Reported:

* **items/s**: from the first enqueue (8 producers, pages of 50, ``client.enqueue_many``
  through the ledger) to the last committed job; embedding requests and tokens the
  stand-in saw;
* **tokens embedded per message** as run (ledger ``embedded_tokens``/``attachment_tokens``)
  and, computed once, **with and without** quote separation: each message's text as
  ``parse_email`` gives it (what the worker chunks), chunked by ``chunk_communication``
  whole and after ``split_reply`` (the run's ledger must equal the latter: checked);
* **parse times** on the corpus itself, after the ingests: ``parse_email`` per message and
  ``extract_document`` per attachment by type, in this process (the function the child
  runs), and as a round trip through the worker's ``Parser`` (pebble child, pickling),
  with the time a parsing child takes to start;
* **peak RSS**: the worker's VmHWM, and its process tree (forkserver, parsing children)
  sampled every 50 ms with psutil, each process's VmHWM kept.

Output: ``DIR/mail_corpus_<size>.json`` (default ``bench/results``); the figures NOTES.md
quotes are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import html
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench import run as brun
from bench.html_mail import PIXEL, SCRIPT, STYLE
from bench.threads import _ATTR, _HEADER, _MOBILE, _sentences
from tests.support import documents as docs
from tests.support.mail import TINY_PNG, envelope, to_bytes

SIZES = {"small": 60, "medium": 240}  # conversation threads; newsletters = threads / 4
SEED = 18
WS = brun.WS
FOUNDER = ("Maya Chen", "maya@brightloop.example")
PEOPLE = (
    ("Sam Patel", "sam@acme-capital.example"),
    ("Lena Vogel", "lena.vogel@nordwerk.example"),
    ("Julien Moreau", "j.moreau@cabinet-moreau.example"),
    ("Carmen Ruiz", "carmen@ruiz-legal.example"),
    ("Tom Becker", "tom@brightloop.example"),
    ("Priya Nair", "priya@northwind-retail.example"),
    ("Denis Laurent", "denis@seedfund.example"),
    ("Eva Schmidt", "eva.schmidt@kanzlei-schmidt.example"),
    ("Kenji Sato", "kenji@brightloop.example"),
    ("Olivia Grant", "olivia.grant@bigbank.example"),
)
TOPICS = (
    "Seed extension",
    "Pilot with Northwind",
    "Term sheet",
    "Board deck Q3",
    "Hiring: senior backend",
    "Office lease",
    "Pricing for Acme",
    "Data processing agreement",
    "Customer renewal",
    "Monthly investor update",
    "Payroll provider",
    "Security questionnaire",
)
#: A reply's style: what its client writes (plain rendering; HTML when it sends one).
STYLES = ("gmail", "gmail", "gmail", "apple", "outlook", "outlook", "inline")
LANGS, LANG_WEIGHTS = ("en", "fr", "de", "es"), (70, 12, 12, 6)
#: Thread lengths 1..10 (a mailbox is mostly short exchanges).
LENGTH_WEIGHTS = (30, 20, 14, 10, 8, 6, 4, 3, 3, 2)
PRODUCT = "BrightLoop"


# ----------------------------------------------------------------------------- corpus
@dataclass
class Doc:
    type: str  # pdf | docx
    name: str
    data: bytes

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Mail:
    thread: int
    position: int  # 0 = the thread's first message
    kind: str  # "conversation" | "newsletter"
    style: str  # first | gmail | apple | outlook | inline | newsletter
    html: str  # none | alt | only
    lang: str
    subject: str
    raw: bytes = b""
    plain: str = ""  # the text/plain rendering (the quoted history included)
    html_body: str | None = None
    docs: list[Doc] = field(default_factory=list)
    reattached: int = 0  # documents this message carries again (same bytes as before)
    inline_logo: bool = False

    @property
    def external_id(self) -> str:
        return f"t{self.thread}-m{self.position}"


def _esc_paras(paras: list[str]) -> str:
    return "".join(f"<div>{html.escape(p)}</div><div><br></div>" for p in paras)


def _plain_as_html(text: str) -> str:
    return "<div>" + html.escape(text).replace("\n", "<br>\n") + "</div>"


def _date_words(when: datetime) -> str:
    return f"{when.day} {when:%b %Y} at {when:%H:%M}"


def _document(rng: random.Random, n: int) -> Doc:
    """A document a founder gets: deck, contract, report or invoice (PDF); term sheet or
    memo (DOCX). English text in the shape of the real thing (pages, headings, a table)."""
    kind = rng.choices(
        ["deck", "contract", "report", "invoice", "termsheet", "memo"], weights=(3, 2, 2, 2, 2, 2)
    )[0]
    if kind == "deck":
        pages = [
            " ".join(_sentences(rng, "en", rng.randint(40, 90))) for _ in range(rng.randint(10, 18))
        ]
        return Doc("pdf", f"{PRODUCT}_deck_v{n}.pdf", docs.pdf(pages, title="Deck"))
    if kind == "contract":
        pages = [
            "\n\n".join(" ".join(_sentences(rng, "en", 90)) for _ in range(4))
            for _ in range(rng.randint(4, 12))
        ]
        return Doc("pdf", f"Agreement_{n}.pdf", docs.pdf(pages, title="Agreement"))
    if kind == "report":
        pages = [
            " ".join(_sentences(rng, "en", rng.randint(150, 300))) for _ in range(rng.randint(3, 8))
        ]
        return Doc("pdf", f"report-{n}.pdf", docs.pdf(pages))
    if kind == "invoice":
        lines = "\n".join(
            f"{rng.choice(['Seats', 'Support', 'Hosting', 'Onboarding'])} {rng.randint(1, 40)} x "
            f"EUR {rng.randint(20, 900)}"
            for _ in range(rng.randint(3, 9))
        )
        return Doc(
            "pdf", f"INV-{2026_0000 + n}.pdf", docs.pdf([f"Invoice {n}\n{lines}\nTotal due"])
        )
    blocks: list[tuple[str, object]] = [("h1", "Term Sheet" if kind == "termsheet" else "Memo")]
    for _ in range(rng.randint(3, 7)):
        blocks.append(("h2", " ".join(_sentences(rng, "en", 8))[:60]))
        blocks += [("p", " ".join(_sentences(rng, "en", rng.randint(60, 160)))) for _ in range(2)]
    if kind == "termsheet":
        rows = [["Term", "Value"]] + [
            [
                rng.choice(["Pre-money", "Pool", "Liquidation pref.", "Board seats"]),
                str(rng.randint(1, 20)),
            ]
            for _ in range(rng.randint(4, 10))
        ]
        blocks.append(("table", rows))
    name = f"{'Term_Sheet' if kind == 'termsheet' else 'memo'}_{n}.docx"
    return Doc("docx", name, docs.docx(blocks))


def _newsletter_html(rng: random.Random) -> str:
    """``bench.html_mail.newsletter``'s shape with text of its own each issue (identical
    issues would reuse each other's vectors)."""
    rows = []
    for _ in range(rng.randint(2, 6)):
        head = " ".join(_sentences(rng, "en", 8))[:70]
        body = " ".join(_sentences(rng, "en", rng.randint(40, 120)))
        rows.append(
            '<tr><td style="padding:12px;font-family:Arial"><table role="presentation" '
            'width="100%" cellpadding="0" cellspacing="0"><tr><td style="font-size:18px">'
            f'<h2>{html.escape(head)}</h2></td></tr><tr><td><p style="margin:0 0 12px">'
            f'{html.escape(body)}</p><p><a href="https://news.example.com/r?id='
            f'{rng.randint(1, 99999)}&amp;utm_source=mail">Read more</a></p></td></tr></table>'
            "</td></tr>"
        )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>" + STYLE + SCRIPT + "</head>"
        '<body style="margin:0"><table width="100%" bgcolor="#eee"><tr><td align="center">'
        '<table width="600" cellpadding="0" cellspacing="0">' + "".join(rows) + "</table>"
        '<p style="font-size:11px">You receive this because you subscribed. '
        '<a href="https://news.example.com/u">Unsubscribe</a></p>'
        "</td></tr></table>" + PIXEL + "</body></html>"
    )


def _signature(
    rng: random.Random, person: tuple[str, str], style: str, lang: str
) -> tuple[str, str]:
    """(plain, html) signature: a mobile closer, a first name or a ``-- `` block."""
    name = person[0]
    if style == "apple":
        return _MOBILE[lang], f"<div>{html.escape(_MOBILE[lang])}</div>"
    if rng.random() < 0.5:
        first = name.split()[0]
        return first, f"<div>{html.escape(first)}</div>"
    phone = f"+1 555 {rng.randint(1000, 9999)}"
    role = rng.choice(("CEO", "Partner", "Head of Sales", "Counsel", "CTO"))
    company = person[1].split("@")[1].split(".")[0].replace("-", " ").title()
    return (
        f"-- \n{name}\n{role} | {company}\n{phone}",
        f"<div>-- <br>{html.escape(name)}<br>{role} | {company}<br>{phone}</div>",
    )


def _render_reply(
    rng: random.Random,
    mail: Mail,
    prev: Mail,
    prev_sender: tuple[str, str],
    sender: tuple[str, str],
    when: datetime,
    paras: list[str],
) -> None:
    """Fill ``mail.plain`` (and ``mail.html_body``) as ``mail.style``'s client writes a
    reply quoting ``prev`` (whose own bodies already quote the rest)."""
    lang, style = mail.lang, mail.style
    pname, pmail = prev_sender
    sig, sig_html = _signature(rng, sender, style, lang)
    new = "\n\n".join(paras)
    prev_html = prev.html_body if prev.html_body is not None else _plain_as_html(prev.plain)
    if style == "outlook":
        frm, sent, to, subj, re_ = _HEADER[lang]
        frm, sent, to, subj = (k if k.endswith(":") else k + ":" for k in (frm, sent, to, subj))
        head = [
            f"{frm} {pname} <{pmail}>",
            f"{sent} {_date_words(when)}",
            f"{to} {sender[0]}",
            f"{subj} {re_}: {prev.subject.removeprefix('Re: ')}",
        ]
        mail.plain = f"{new}\n\n{sig}\n\n________________________________\n" + "\n".join(head)
        mail.plain += f"\n\n{prev.plain}"
        head_html = "<br>".join(
            f"<b>{html.escape(h.split(' ', 1)[0])}</b> {html.escape(h.split(' ', 1)[1])}"
            for h in head
        )
        logo = '<img src="cid:image001.png@01DA" width="80">' if mail.inline_logo else ""
        mail.html_body = (
            '<html xmlns:o="urn:schemas-microsoft-com:office:office"><head><style><!-- '
            "p.MsoNormal{margin:0cm;font-size:11.0pt;font-family:Calibri} --></style></head>"
            "<body lang=EN-US><div class=WordSection1>"
            + "".join(f"<p class=MsoNormal>{html.escape(p)}<o:p></o:p></p>" for p in paras)
            + sig_html.replace("<div>", "<p class=MsoNormal>").replace("</div>", "</p>")
            + logo
            + '<div id="divRplyFwdMsg" style="border:none;border-top:solid #E1E1E1 1.0pt;'
            f'padding:3.0pt 0cm 0cm 0cm"><p class=MsoNormal>{head_html}</p></div>'
            f"<p class=MsoNormal>&nbsp;</p>{prev_html}</div></body></html>"
        )
        return
    attr = _ATTR[lang].format(date=_date_words(when), name=pname, mail=pmail)
    quoted = "\n".join(">" if not ln else "> " + ln for ln in prev.plain.splitlines())
    if style == "inline":  # bottom-posted answers between quoted paragraphs: plain only
        pieces = [attr]
        blocks = quoted.split("\n>\n")
        for k, block in enumerate(blocks):
            pieces.append(block)
            if k < len(paras):
                pieces.append(paras[k] if k < len(blocks) - 1 else "\n\n".join(paras[k:]))
        mail.plain = "\n\n".join(pieces) + f"\n\n{sig}"
        mail.html_body = None
        return
    wrapped = attr
    if style == "gmail" and rng.random() < 0.3:  # Gmail wraps long attribution lines
        cut = attr.index("<")
        wrapped = attr[:cut] + "\n" + attr[cut:]
    mail.plain = f"{new}\n\n{sig}\n\n{wrapped}\n\n{quoted}\n"
    if style == "apple":
        mail.html_body = (
            '<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8">'
            '</head><body dir="auto"><div dir="ltr">' + _esc_paras(paras) + "</div>"
            f'<div dir="ltr">{sig_html}</div><div dir="ltr"><br><blockquote type="cite">'
            f'{html.escape(attr)}<br><br></blockquote></div><blockquote type="cite">'
            f'<div dir="ltr">{prev_html}</div></blockquote></body></html>'
        )
    else:
        mail.html_body = (
            '<div dir="ltr">' + _esc_paras(paras) + sig_html + '</div><br><div class="gmail_quote">'
            f'<div dir="ltr" class="gmail_attr">{html.escape(attr)}<br></div>'
            '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:1px '
            f'solid rgb(204,204,204);padding-left:1ex">{prev_html}</blockquote></div>'
        )


def _mime(
    mail: Mail,
    sender: tuple[str, str],
    to: list[tuple[str, str]],
    when: datetime,
    message_id: str,
    refs: list[str],
) -> bytes:
    msg = envelope(
        EmailMessage(),
        subject=mail.subject,
        sender=f"{sender[0]} <{sender[1]}>",
        to=[f"{n} <{a}>" for n, a in to],
        date=when,
        message_id=message_id,
        in_reply_to=refs[-1] if refs else None,
        references=refs,
    )
    if mail.html == "only" and mail.html_body is not None:
        msg.set_content(mail.html_body, subtype="html")
    elif mail.html == "alt" and mail.html_body is not None:
        msg.set_content(mail.plain)
        msg.add_alternative(mail.html_body, subtype="html")
        if mail.inline_logo:
            html_part = msg.get_payload()[1]  # type: ignore[index]
            assert isinstance(html_part, EmailMessage)
            html_part.add_related(
                TINY_PNG, maintype="image", subtype="png", cid="<image001.png@01DA>"
            )
    else:
        mail.html = "none"
        msg.set_content(mail.plain)
    for doc in mail.docs:
        mime = (
            "application/pdf"
            if doc.type == "pdf"
            else ("application/vnd.openxmlformats-officedocument.wordprocessingml.document")
        )
        maintype, subtype = mime.split("/")
        msg.add_attachment(doc.data, maintype=maintype, subtype=subtype, filename=doc.name)
    return to_bytes(msg)


def build(threads: int, seed: int = SEED) -> list[Mail]:
    """The mailbox: ``threads`` conversations and ``threads // 4`` newsletters, in the
    order they were sent."""
    rng = random.Random(seed)
    start = datetime(2026, 9, 1, 8, tzinfo=UTC)
    out: list[tuple[datetime, Mail]] = []
    n_doc = 0
    for t in range(threads):
        lang = rng.choices(LANGS, LANG_WEIGHTS)[0]
        length = rng.choices(range(1, 11), LENGTH_WEIGHTS)[0]
        other = rng.choice(PEOPLE)
        cast = [FOUNDER, other] + ([rng.choice(PEOPLE)] if rng.random() < 0.3 else [])
        topic = rng.choice(TOPICS)
        when = start + timedelta(minutes=rng.randint(0, 60 * 24 * 90))
        # a third of the threads are about a document, attached at its first message or
        # a later one, then sometimes again (same bytes) or revised (new bytes)
        thread_docs: list[Doc] = []
        doc_at = rng.randrange(length) if rng.random() < 0.35 else None
        ids: list[str] = []
        msgs: list[Mail] = []
        senders: list[tuple[str, str]] = []
        for k in range(length):
            sender = cast[k % 2] if len(cast) == 2 or k < 2 else rng.choice(cast)
            if k and sender == senders[-1]:
                sender = cast[(cast.index(sender) + 1) % len(cast)]
            style = "first" if k == 0 else rng.choice(STYLES)
            mode = rng.choices(["alt", "only", "none"], (50, 10, 40))[0]
            if style == "inline" and mode != "none":
                mode = "none"
            subject = topic if k == 0 else f"Re: {topic}"
            mail = Mail(t, k, "conversation", style, mode, lang, subject)
            mail.inline_logo = style == "outlook" and mode == "alt" and rng.random() < 0.5
            paras = [
                " ".join(s)
                for s in _split(_sentences(rng, lang, rng.choice((30, 60, 120, 200))), rng)
            ]
            if k == 0:
                sig, sig_html = _signature(rng, sender, "gmail", lang)
                mail.plain = "\n\n".join(paras) + f"\n\n{sig}\n"
                mail.html_body = '<div dir="ltr">' + _esc_paras(paras) + sig_html + "</div>"
            else:
                _render_reply(rng, mail, msgs[-1], senders[-1], sender, when, paras)
            if doc_at is not None and k == doc_at:
                n_doc += 1
                thread_docs = [_document(rng, n_doc)]
                if rng.random() < 0.2:
                    n_doc += 1
                    thread_docs.append(_document(rng, n_doc))
                mail.docs = list(thread_docs)
            elif thread_docs and rng.random() < 0.45:
                if rng.random() < 0.25:  # a revised version: new bytes
                    n_doc += 1
                    thread_docs = [_document(rng, n_doc)]
                    mail.docs = list(thread_docs)
                else:
                    mail.docs = list(thread_docs)
                    mail.reattached = len(thread_docs)
            message_id = f"<t{t}.m{k}.{seed}@{sender[1].split('@')[1]}>"
            to = [p for p in cast if p != sender]
            mail.raw = _mime(mail, sender, to, when, message_id, ids)
            ids = [*ids, message_id]
            msgs.append(mail)
            senders.append(sender)
            out.append((when, mail))
            when += timedelta(minutes=rng.randint(5, 60 * 30))
    for i in range(threads // 4):
        when = start + timedelta(days=7 * (i % 13), hours=i % 5)
        mail = Mail(threads + i, 0, "newsletter", "newsletter", "only", "en", f"Weekly brief #{i}")
        mail.html_body = _newsletter_html(rng)
        sender = ("The Weekly Brief", "news@brief.example")
        mail.raw = _mime(mail, sender, [FOUNDER], when, f"<nl{i}.{seed}@brief.example>", [])
        out.append((when, mail))
    out.sort(key=lambda pair: pair[0])
    return [m for _, m in out]


def _split(sentences: list[str], rng: random.Random) -> list[list[str]]:
    """Sentences into 1-3 paragraphs."""
    n = min(len(sentences), rng.randint(1, 3))
    cuts = sorted(rng.sample(range(1, len(sentences)), n - 1)) if n > 1 else []
    bounds = [0, *cuts, len(sentences)]
    return [sentences[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def payload(mail: Mail) -> dict[str, Any]:
    return {
        "kind": "email",
        "workspace_id": str(WS),
        "source": "gmail",
        "external_id": mail.external_id,
        "raw": base64.urlsafe_b64encode(mail.raw).decode().rstrip("="),
    }


def describe(mails: list[Mail]) -> dict[str, Any]:
    docs_all = [d for m in mails for d in m.docs]
    lengths = Counter(
        sum(1 for m in mails if m.thread == t)
        for t in {m.thread for m in mails if m.kind == "conversation"}
    )
    return {
        "messages": len(mails),
        "threads": len({m.thread for m in mails if m.kind == "conversation"}),
        "thread_lengths": dict(sorted(lengths.items())),
        "newsletters": sum(m.kind == "newsletter" for m in mails),
        "html": dict(Counter(m.html for m in mails)),
        "styles": dict(Counter(m.style for m in mails)),
        "langs": dict(Counter(m.lang for m in mails)),
        "with_documents": sum(bool(m.docs) for m in mails),
        "with_documents_share": round(sum(bool(m.docs) for m in mails) / len(mails), 3),
        "attachments": len(docs_all),
        "attached_again": sum(m.reattached for m in mails),
        "unique_documents": dict(Counter(d.type for d in {d.sha: d for d in docs_all}.values())),
        "document_bytes": sum(len(d.data) for d in {d.sha: d for d in docs_all}.values()),
        "raw_bytes": sum(len(m.raw) for m in mails),
        "inline_logos": sum(m.inline_logo for m in mails),
    }


# ----------------------------------------------------------------------------- RSS
class TreeWatch:
    """Samples a process and its descendants every ``every`` s: the tree's summed RSS
    and each process's VmHWM (its own peak, also between samples)."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.root = psutil.Process(pid)
        self.every = every
        self.peak_sum_kb = 0
        self.hwm_kb: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss // 1024
                    hwm = _vm_hwm_kb(p.pid)
                    if p.pid not in self.names:
                        self.names[p.pid] = _label(p, self.root.pid)
                except (psutil.Error, OSError):
                    continue
                self.hwm_kb[p.pid] = max(self.hwm_kb.get(p.pid, 0), hwm)
            self.peak_sum_kb = max(self.peak_sum_kb, total)
            self._stop.wait(self.every)

    def summary(self) -> dict[str, Any]:
        by_role: dict[str, list[int]] = defaultdict(list)
        for pid, kb in self.hwm_kb.items():
            by_role[self.names.get(pid, "?")].append(kb)
        return {
            "tree_peak_rss_mb": round(self.peak_sum_kb / 1024, 1),
            "vm_hwm_mb": {
                role: {"processes": len(v), "max": round(max(v) / 1024, 1)}
                for role, v in sorted(by_role.items())
            },
        }


def _vm_hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _label(p: psutil.Process, root: int) -> str:
    """worker; its children the forkserver and resource tracker; the forkserver's
    children the parsing processes (forked: their command line is the forkserver's)."""
    if p.pid == root:
        return "worker"
    if p.ppid() != root:
        return "parse child"
    return "resource_tracker" if "resource_tracker" in " ".join(p.cmdline()) else "forkserver"


# ----------------------------------------------------------------------------- ingest
#: Configurations run on the same corpus, each in a fresh database: the embedder's
#: latency (the stand-in answers at once; OpenAI takes ~100-500 ms) and worker settings.
VARIANTS: dict[str, tuple[float, dict[str, Any]]] = {
    "default": (0.0, {}),
    "large64": (0.0, {"large_items_max": 64}),
    "latency200": (200.0, {}),
    "latency200_large64": (200.0, {"large_items_max": 64}),
}


async def ingest(
    env: brun.Env, payloads: list[dict[str, Any]], latency_ms: float, overrides: dict[str, Any]
) -> dict[str, Any]:
    """``bench.run.ingest`` with the worker's process tree watched (fresh database)."""
    dsn = await env.fresh_db()
    await brun.clear_arq_results(env)
    queue = f"bench:{uuid.uuid4().hex[:8]}"
    settings = brun.worker_settings(env, dsn, queue, **overrides)
    procs = brun.start_workers(env, settings, 1, "mail")
    clients = await brun.Producer.open(env, queue, dsn)
    try:
        with TreeWatch(procs[0].proc.pid) as watch:
            env.control(reset_stats=True, latency_ms=latency_ms)
            t0 = time.time()
            producer = asyncio.create_task(clients.enqueue(payloads))
            seconds, series = await brun.wait_done(dsn, t0, len(payloads))
            await producer
    finally:
        await clients.close()
        workers = brun.stop_workers(procs)
        env.control(latency_ms=0)
    server = brun.summarize_server(env.server_stats())
    per_request = [tokens for _, tokens in server["accepted"]]
    db = await stored(dsn)
    await env.drop_db(dsn)
    first = next((t for t, done, _ in series if done), None)
    return {
        "latency_ms": latency_ms,
        "overrides": overrides,
        "seconds": round(seconds, 3),
        "items_per_s": round(len(payloads) / seconds, 1),
        "first_done_s": first,
        "server": {
            **{k: server[k] for k in ("requests", "inputs", "tokens", "status_429")},
            "tokens_per_request": _stats(per_request),
        },
        "worker": workers[0],
        "rss": watch.summary(),
        **db,
    }


async def stored(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        jobs = await conn.fetch(
            "SELECT external_id, status::text AS status, last_error, result FROM ops.ingestion_jobs"
        )
        counts = await conn.fetchrow("""
            SELECT (SELECT count(*) FROM comms.communications) AS communications,
                   (SELECT count(*) FROM comms.threads) AS threads,
                   (SELECT count(*) FROM comms.attachments) AS attachments,
                   (SELECT count(*) FROM media.assets) AS assets,
                   (SELECT count(*) FROM media.media_chunks) AS document_chunks""")
    finally:
        await conn.close()
    results = {r["external_id"]: json.loads(r["result"]) for r in jobs}
    return {
        "status": dict(Counter(r["status"] for r in jobs)),
        "errors": sorted({r["last_error"] for r in jobs if r["last_error"]})[:5],
        "rows": dict(counts),
        "results": results,
    }


# ----------------------------------------------------------------------------- offline
def tokens_offline(mails: list[Mail]) -> dict[str, Any]:
    """Per message, the tokens of its chunks with and without quote separation, from the
    text ``parse_email`` gives (what the worker chunks); documents' chunk tokens."""
    from worker.core.settings import Settings
    from worker.extract.documents import extract_document
    from worker.extract.mime import parse_email
    from worker.ingest.parsing import limits_from
    from worker.text.chunking import chunk_communication
    from worker.text.quotes import split_reply
    from worker.text.sections import chunk_sections

    settings = Settings()
    limits, target, overlap = (
        limits_from(settings),
        settings.chunk_tokens,
        settings.chunk_overlap_tokens,
    )
    per: dict[str, dict[str, int]] = {}
    doc_tokens: dict[str, int] = {}
    for m in mails:
        parsed = parse_email(m.raw, limits)
        whole = chunk_communication(parsed.subject, parsed.text, target, overlap)
        new = chunk_communication(parsed.subject, split_reply(parsed.text).new, target, overlap)
        per[m.external_id] = {
            "whole": sum(c.token_count for c in whole),
            "new": sum(c.token_count for c in new),
        }
        for d in m.docs:
            if d.sha not in doc_tokens:
                document = extract_document(d.data, limits)
                sections = [(s.text, s.position) for s in document.sections]
                doc_tokens[d.sha] = sum(
                    c.token_count for c in chunk_sections(sections, target, overlap)
                )
    return {"messages": per, "documents": doc_tokens}


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 2),
        "max": round(ordered[-1], 2),
    }


async def parse_times(mails: list[Mail]) -> dict[str, Any]:
    """``parse_email`` per message and ``extract_document`` per attachment (every
    occurrence, as the worker parses each), in ms: here (the function the child runs,
    after a warm-up) and as a round trip through the worker's ``Parser``."""
    from worker.core.settings import Settings
    from worker.extract.documents import extract_document
    from worker.extract.mime import parse_email
    from worker.ingest.parsing import TASKS_PER_CHILD, Parser, limits_from

    settings = Settings()
    limits = limits_from(settings)
    for m in mails[:5]:
        parse_email(m.raw, limits)
    for d in [d for m in mails for d in m.docs][:4]:
        extract_document(d.data, limits)
    email_ms: dict[str, list[float]] = defaultdict(list)
    doc_ms: dict[str, list[float]] = defaultdict(list)
    per_page: dict[str, list[float]] = defaultdict(list)  # PDFs (DOCX have no pages)
    for m in mails:
        t = time.perf_counter()
        parse_email(m.raw, limits)
        ms = (time.perf_counter() - t) * 1000
        email_ms["all"].append(ms)
        email_ms[_shape(m)].append(ms)
        for d in m.docs:
            t = time.perf_counter()
            document = extract_document(d.data, limits)
            ms = (time.perf_counter() - t) * 1000
            doc_ms[d.type].append(ms)
            if document.pages:
                per_page[d.type].append(ms / document.pages)
    # Through the worker's Parser: pickling both ways, the pebble child. A child's first
    # parse includes its start (forkserver children import the parent's ``__main__``,
    # here this module), as does the parse after every TASKS_PER_CHILD-th.
    parser = Parser(settings)
    child_email: list[float] = []
    child_doc: dict[str, list[float]] = defaultdict(list)
    starts: list[float] = []
    try:
        t = time.perf_counter()
        await parser.email(mails[0].raw)
        starts.append((time.perf_counter() - t) * 1000)
        for m in mails:
            t = time.perf_counter()
            await parser.email(m.raw)
            child_email.append((time.perf_counter() - t) * 1000)
            for d in m.docs:
                t = time.perf_counter()
                await parser.document(d.data)
                child_doc[d.type].append((time.perf_counter() - t) * 1000)
    finally:
        await parser.aclose()
    slow = statistics.median(child_email) * 20
    return {
        "parse_email_ms": {k: _stats(v) for k, v in sorted(email_ms.items())},
        "extract_document_ms": {k: _stats(v) for k, v in sorted(doc_ms.items())},
        "extract_document_ms_per_pdf_page": _stats(per_page["pdf"]),
        "round_trip_email_ms": _stats([x for x in child_email if x < slow]),
        "round_trip_document_ms": {k: _stats(v) for k, v in sorted(child_doc.items())},
        "child_start_ms": {
            "first_parse": round(starts[0], 1),
            "later_starts": [round(x, 1) for x in child_email if x >= slow],
            "tasks_per_child": TASKS_PER_CHILD,
        },
    }


def _shape(m: Mail) -> str:
    if m.kind == "newsletter":
        return "newsletter"
    if m.docs:
        return "with documents"
    return {"none": "plain", "alt": "text+html", "only": "html only"}[m.html]


# ----------------------------------------------------------------------------- main
async def amain(args: argparse.Namespace) -> dict[str, Any]:
    threads = args.threads or SIZES[args.size]
    t = time.perf_counter()
    mails = build(threads, args.seed)
    corpus = {**describe(mails), "build_s": round(time.perf_counter() - t, 2)}
    print(f"corpus: {json.dumps(corpus)}", flush=True)
    payloads = [payload(m) for m in mails]
    results: dict[str, Any] = {
        "meta": {
            "command": " ".join(["python -m bench.mail_corpus", *sys.argv[1:]]),
            "size": args.size,
            "threads": threads,
            "seed": args.seed,
            "cpus": os.cpu_count(),
            "machine": f"{platform.machine()}, {psutil.virtual_memory().total // 2**30} GiB",
            "python": platform.python_version(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "postgres": "embedded 18 + pgvector, fsync=on, synchronous_commit=on",
            "embedder": "tests/support/openai_server.py (cl100k, --procs 2)",
            "load_before": os.getloadavg(),
        },
        "corpus": corpus,
    }
    offline = tokens_offline(mails)
    runs: dict[str, Any] = {}
    env = brun.Env.start()
    try:
        await env._migrate_template()
        for name in args.variant or list(VARIANTS):
            latency_ms, overrides = VARIANTS[name]
            run = await ingest(env, payloads, latency_ms, overrides)
            run["tokens"] = _tokens(mails, run.pop("results"), offline)
            runs[name] = run
            print(
                f"{name}: {run['seconds']} s, {run['items_per_s']} items/s, "
                f"{run['server']['requests']} requests, status {run['status']}",
                flush=True,
            )
    finally:
        env.stop(keep=args.keep)
        if args.keep:
            print(f"kept: {env.root}", flush=True)
    results["runs"] = runs
    results["tokens"] = _computed(mails, offline)
    results["parse"] = await parse_times(mails)
    results["meta"]["load_after"] = os.getloadavg()
    return results


def _tokens(mails: list[Mail], jobs: dict[str, Any], offline: dict[str, Any]) -> dict[str, Any]:
    """What a run embedded (ledger results), against the computed figures."""
    n = len(mails)

    def total(key: str) -> int:
        return sum(int(jobs.get(m.external_id, {}).get(key, 0)) for m in mails)

    body, attach = total("embedded_tokens"), total("attachment_tokens")
    computed = sum(v["new"] for v in offline["messages"].values())
    return {
        "body_chunk_tokens": total("tokens"),
        "body_embedded": body,
        "body_matches_computed": total("tokens") == computed,
        "documents_embedded": attach,
        "documents_unique": sum(offline["documents"].values()),
        "per_message": round((body + attach) / n, 1),
    }


def _computed(mails: list[Mail], offline: dict[str, Any]) -> dict[str, Any]:
    """Message bodies chunked with and without quote separation (documents apart)."""
    per = offline["messages"]
    n = len(mails)
    whole = sum(v["whole"] for v in per.values())
    new = sum(v["new"] for v in per.values())
    replies = [m.external_id for m in mails if m.position > 0]
    r_whole = sum(per[k]["whole"] for k in replies)
    r_new = sum(per[k]["new"] for k in replies)
    sizes = Counter(m.thread for m in mails)
    by_len: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for m in mails:
        if m.kind == "conversation":
            by_len[sizes[m.thread]][0] += per[m.external_id]["whole"]
            by_len[sizes[m.thread]][1] += per[m.external_id]["new"]
    docs_unique = sum(offline["documents"].values())
    docs_every = sum(offline["documents"][d.sha] for m in mails for d in m.docs)
    return {
        "with_separation": new,
        "without": whole,
        "per_message_with": round(new / n, 1),
        "per_message_without": round(whole / n, 1),
        "fewer": round(1 - new / whole, 3),
        "replies": {
            "n": len(replies),
            "with": r_new,
            "without": r_whole,
            "fewer": round(1 - r_new / r_whole, 3) if r_whole else None,
        },
        "by_thread_length": {
            k: {"without": v[0], "with": v[1], "fewer": round(1 - v[1] / v[0], 3)}
            for k, v in sorted(by_len.items())
        },
        "documents": {"unique": docs_unique, "every_attachment": docs_every},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="E-mail corpus through the worker (bench/README.md)")
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument(
        "--threads", type=int, default=None, help="conversation threads (overrides --size)"
    )
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument(
        "--variant",
        action="append",
        choices=sorted(VARIANTS),
        help="configurations to ingest with (repeatable; default: all of them)",
    )
    p.add_argument("--out", type=Path, default=brun.RESULTS)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (worker logs)")
    p.add_argument("--corpus-only", action="store_true", help="build and describe the corpus")
    args = p.parse_args(argv)
    if args.corpus_only:
        mails = build(args.threads or SIZES[args.size], args.seed)
        print(json.dumps(describe(mails), indent=1))
        return
    results = asyncio.run(amain(args))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"mail_corpus_{args.threads or args.size}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(summary(results), indent=1))
    print(f"written: {path}")


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The figures NOTES.md quotes."""
    parse = results["parse"]
    return {
        "corpus": {
            k: results["corpus"][k]
            for k in (
                "messages",
                "threads",
                "html",
                "with_documents_share",
                "attachments",
                "attached_again",
            )
        },
        "runs": {
            name: {
                "items_per_s": r["items_per_s"],
                "seconds": r["seconds"],
                "first_done_s": r["first_done_s"],
                "requests": r["server"]["requests"],
                "tokens_per_message": r["tokens"]["per_message"],
                "documents_embedded": r["tokens"]["documents_embedded"],
                "worker_vm_hwm_mb": round(r["worker"].get("vm_hwm_kb", 0) / 1024, 1),
                "rss": r["rss"],
                "server_tokens": r["server"]["tokens"],
                "status": r["status"],
            }
            for name, r in results["runs"].items()
        },
        "tokens": {k: v for k, v in results["tokens"].items() if k != "by_thread_length"},
        "parse_email_ms": {k: (v["median"], v["p95"]) for k, v in parse["parse_email_ms"].items()},
        "extract_document_ms": {
            k: (v["median"], v["p95"]) for k, v in parse["extract_document_ms"].items()
        },
        "round_trip": [parse["round_trip_email_ms"], parse["round_trip_document_ms"]],
        "child_start_ms": parse["child_start_ms"],
    }


if __name__ == "__main__":
    main()
