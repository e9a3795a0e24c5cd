"""Reply-thread corpus and the tokens embedded with and without quote separation (issue 18).

Threads of 2-12 messages, ~140 tokens of new text each, in the plain-text renderings of
Gmail (``>`` quoting under "On … wrote:", sometimes wrapped), Apple Mail (iPhone closer),
Outlook (unquoted history under a From/Sent/To/Subject block) and inline answers between
quoted lines; English, French, German and Spanish markers; signatures. Deterministic from
the seed. ``python -m bench.threads`` prints tokens per thread length, whole bodies vs
``split_reply(body).new``, and how many of each message's own sentences were kept.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from worker.text.quotes import split_reply
from worker.text.tokens import count_tokens

LANGS = ("en", "fr", "de", "es")
STYLES = ("gmail", "apple", "outlook", "inline")
NAMES = ("Alice Martin", "Bruno Keller", "Carmen Ruiz", "Denis Laurent", "Eva Schmidt")
_VOCAB = {
    "en": "the pilot budget contract renewal team review customer launch pricing option "
    "pool legal draft board deck forecast hiring plan quarter revenue margin vendor",
    "fr": "le projet budget contrat équipe revue client lancement tarif option juridique "
    "brouillon conseil prévision recrutement trimestre revenu marge fournisseur",
    "de": "das Projekt Budget Vertrag Team Prüfung Kunde Start Preis Option Entwurf "
    "Vorstand Prognose Einstellung Quartal Umsatz Marge Lieferant Plan",
    "es": "el proyecto presupuesto contrato equipo revisión cliente lanzamiento precio "
    "opción borrador junta previsión contratación trimestre ingresos margen",
}
_WORDS = {lang: words.split() for lang, words in _VOCAB.items()}
_ATTR = {
    "en": "On {date}, {name} <{mail}> wrote:",
    "fr": "Le {date}, {name} <{mail}> a écrit :",
    "de": "Am {date} schrieb {name} <{mail}>:",
    "es": "El {date}, {name} (<{mail}>) escribió:",
}
_HEADER = {
    "en": ("From", "Sent", "To", "Subject", "RE"),
    "fr": ("De :", "Envoyé :", "À :", "Objet :", "RE"),
    "de": ("Von:", "Gesendet:", "An:", "Betreff:", "AW"),
    "es": ("De:", "Enviado el:", "Para:", "Asunto:", "RE"),
}
_MOBILE = {
    "en": "Sent from my iPhone",
    "fr": "Envoyé de mon iPhone",
    "de": "Von meinem iPhone gesendet",
    "es": "Enviado desde mi iPhone",
}


@dataclass
class Message:
    body: str
    own: list[str]  # the sentences this message said first (ground truth)


def _sentences(rng: random.Random, lang: str, tokens: int = 140) -> list[str]:
    words = _WORDS[lang]
    out: list[str] = []
    while sum(count_tokens(s) for s in out) < tokens:
        n = rng.randint(8, 16)
        fact = f"{rng.randint(10, 9999)}"
        picked = [rng.choice(words) for _ in range(n)]
        picked.insert(rng.randint(1, n - 1), fact)
        out.append(" ".join(picked).capitalize() + ".")
    return out


def _signature(rng: random.Random, name: str, lang: str) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return f"-- \n{name}\nHead of Operations | Northwind\n+1 555 {rng.randint(1000, 9999)}"
    if kind == 1:
        return _MOBILE[lang]
    return f"{name.split()[0]}"  # a bare name: kept as new text, as it should be


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} Nov 2026 at {rng.randint(8, 18)}:{rng.randint(10, 59)}"


def _reply(
    rng: random.Random, style: str, lang: str, name: str, prev: Message, own: list[str]
) -> str:
    """The body of a reply in ``style`` quoting ``prev`` (whose body quotes the rest)."""
    sender = rng.choice(NAMES)
    mail = sender.lower().replace(" ", ".") + "@example.com"
    new = "\n\n".join([" ".join(own[: len(own) // 2]), " ".join(own[len(own) // 2 :])])
    sig = _signature(rng, name, lang)
    if style == "outlook":
        frm, sent, to, subj, re_ = _HEADER[lang]
        frm, sent, to, subj = (k if k.endswith(":") else k + ":" for k in (frm, sent, to, subj))
        head = f"{frm} {sender} <{mail}>\n{sent} {_date(rng)}\n{to} {name}\n{subj} {re_}: Plan"
        return f"{new}\n\n{sig}\n\n________________________________\n{head}\n\n{prev.body}"
    attr = _ATTR[lang].format(date=_date(rng), name=sender, mail=mail)
    if rng.random() < 0.3:  # Gmail wraps long attribution lines
        cut = attr.index("<")
        attr = attr[:cut] + "\n" + attr[cut:]
    quoted = "\n".join(">" if not ln else "> " + ln for ln in prev.body.splitlines())
    if style == "inline":  # answers between the quoted paragraphs, bottom-posted
        paras = quoted.split("\n>\n")
        pieces = [attr]
        for k, para in enumerate(paras):
            pieces.append(para)
            if k < len(own):
                pieces.append(own[k] if k < len(paras) - 1 else " ".join(own[k:]))
        return "\n\n".join(pieces) + f"\n\n{sig}"
    if style == "apple":
        sig = _MOBILE[lang]
    return f"{new}\n\n{sig}\n\n{attr}\n\n{quoted}"


def thread(rng: random.Random, n: int) -> list[Message]:
    """One thread of ``n`` messages; each reply quotes the previous one in full."""
    lang = rng.choice(LANGS)
    name = rng.choice(NAMES)
    own = _sentences(rng, lang)
    msgs = [Message(" ".join(own[:3]) + "\n\n" + " ".join(own[3:]) + f"\n\n{name}", own)]
    for _ in range(n - 1):
        own = _sentences(rng, lang)
        style = rng.choice(STYLES)
        msgs.append(Message(_reply(rng, style, lang, rng.choice(NAMES), msgs[-1], own), own))
    return msgs


def measure(
    split: Callable[[str], str], seed: int = 18, per_length: int = 20
) -> dict[int, tuple[int, int, float, float]]:
    """Per thread length: (whole tokens, split tokens, own sentences kept, foreign kept)."""
    rng = random.Random(seed)
    acc: dict[int, list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    for n in range(2, 13):
        for _ in range(per_length):
            msgs = thread(rng, n)
            seen: list[str] = []
            for m in msgs:
                new = split(m.body)
                a = acc[n]
                a[0] += count_tokens(m.body)
                a[1] += count_tokens(new)
                a[2] += sum(s in new for s in m.own)
                a[3] += len(m.own)
                a[4] += sum(s in new for s in seen)
                a[5] += max(len(seen), 1)
                seen.extend(m.own)
    return {n: (int(a[0]), int(a[1]), a[2] / a[3], a[4] / a[5]) for n, a in sorted(acc.items())}


def report(split: Callable[[str], str], label: str, per_length: int = 20) -> None:
    print(f"{label}: per thread length, tokens of all bodies vs new text")
    print("n  | whole | new | fewer | own kept | quoted kept")
    rows = measure(split, per_length=per_length)
    for n, (whole, new, own, foreign) in rows.items():
        print(f"{n:2} | {whole:6} | {new:5} | {1 - new / whole:5.1%} | {own:6.1%} | {foreign:5.1%}")
    big = [r for n, r in rows.items() if n >= 5]
    w, s = sum(r[0] for r in big), sum(r[1] for r in big)
    print(f"threads of 5+: {w} -> {s} tokens, {1 - s / w:.1%} fewer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-length", type=int, default=20, help="threads per length")
    args = parser.parse_args()
    report(lambda body: body, "whole bodies", args.per_length)
    report(lambda body: split_reply(body).new, "split_reply", args.per_length)


if __name__ == "__main__":
    main()
