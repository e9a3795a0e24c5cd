"""Deterministic synthetic corpus: emails, long meeting transcripts, media transcripts.

Everything derives from ``random.Random(seed)``, so the same size and seed always give
the same payloads (and therefore the same job ids, chunks and token counts).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

SIZES: dict[str, dict[str, int]] = {
    # emails, meetings (minutes each), media (minutes each)
    "small": {"emails": 150, "meetings": 6, "meeting_min": 45, "media": 6, "media_min": 15},
    "medium": {"emails": 600, "meetings": 20, "meeting_min": 60, "media": 20, "media_min": 20},
    "large": {"emails": 2500, "meetings": 60, "meeting_min": 75, "media": 60, "media_min": 25},
    # Issue 21's "medium" (1,000 e-mails + 100 meeting transcripts, ~2.8M tokens, ~6,100
    # vector rows): 2.49M tokens of text, 2.60M embedded in 9,127 vector rows at the
    # default CHUNK_TOKENS (~6,300 rows at 1024). bench/ingest_index.py.
    "issue21": {"emails": 1000, "meetings": 100, "meeting_min": 45, "media": 0, "media_min": 0},
}

_COMMON = [
    "the",
    "a",
    "to",
    "and",
    "of",
    "in",
    "for",
    "on",
    "with",
    "we",
    "is",
    "it",
    "that",
    "this",
    "be",
    "are",
    "our",
    "will",
    "as",
    "at",
    "by",
    "from",
    "can",
    "next",
    "week",
    "team",
    "customer",
    "plan",
    "update",
    "review",
    "launch",
    "budget",
    "contract",
    "timeline",
    "risk",
    "product",
    "release",
    "pricing",
    "design",
    "data",
    "model",
    "latency",
    "board",
    "hiring",
    "roadmap",
    "revenue",
    "migration",
    "billing",
    "invoice",
    "support",
    "meeting",
    "agenda",
    "follow",
    "call",
    "notes",
    "decision",
    "owner",
]
_SPEAKERS = ["Alice", "Bob", "Carol", "Dan", "Erin", "Frank", "Grace", "Heidi"]


def _vocab(rng: random.Random, n: int = 3000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choice(letters) for _ in range(rng.randint(3, 10))) for _ in range(n)}
    return sorted(words) + _COMMON * 20  # common words are ~20x more frequent


class TextGen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.vocab = _vocab(self.rng)

    def sentence(self) -> str:
        words = self.rng.choices(self.vocab, k=self.rng.randint(6, 22))
        return " ".join(words).capitalize() + self.rng.choice([".", ".", ".", "?", "!"])

    def paragraph(self, sentences: int) -> str:
        return " ".join(self.sentence() for _ in range(sentences))


@dataclass
class Corpus:
    emails: list[dict[str, Any]]
    meetings: list[dict[str, Any]]
    media: list[dict[str, Any]]

    @property
    def payloads(self) -> list[dict[str, Any]]:
        # Interleave kinds the way connectors would deliver them.
        out: list[dict[str, Any]] = []
        big = self.meetings + self.media
        step = max(1, len(self.emails) // max(1, len(big)))
        for i, email in enumerate(self.emails):
            out.append(email)
            if i % step == 0 and big:
                out.append(big.pop(0))
        return out + big

    def __len__(self) -> int:
        return len(self.emails) + len(self.meetings) + len(self.media)


def email(gen: TextGen, ws: uuid.UUID, i: int) -> dict[str, Any]:
    rng = gen.rng
    people = rng.sample(_SPEAKERS, 3)
    body = "\n\n".join(gen.paragraph(rng.randint(2, 6)) for _ in range(rng.randint(1, 4)))
    return {
        "kind": "communication",
        "workspace_id": str(ws),
        "source": "gmail",
        "external_id": f"mail-{i}",
        "channel": "email",
        "thread_key": f"thread-{i // 4}",
        "subject": gen.sentence()[:80],
        "sender": {"name": people[0], "address": f"{people[0].lower()}@example.com"},
        "recipients": [
            {"name": p, "address": f"{p.lower()}@example.com", "role": "to"} for p in people[1:]
        ],
        "sent_at": f"2026-0{1 + i % 9}-{1 + i % 28:02d}T10:00:00Z",
        "body": body,
    }


def turns(gen: TextGen, minutes: int, speakers: list[str] | None) -> list[dict[str, Any]]:
    """~150 spoken words per minute in turns of 1-6 sentences."""
    rng = gen.rng
    out, t, words, target = [], 0, 0, minutes * 150
    while words < target:
        text = gen.paragraph(rng.randint(1, 6))
        dur = len(text.split()) * 400
        seg: dict[str, Any] = {"start_ms": t, "end_ms": t + dur, "text": text}
        if speakers:
            seg["speaker"] = rng.choice(speakers)
        out.append(seg)
        t, words = t + dur, words + len(text.split())
    return out


def meeting(gen: TextGen, ws: uuid.UUID, i: int, minutes: int) -> dict[str, Any]:
    speakers = gen.rng.sample(_SPEAKERS, 4)
    return {
        "kind": "transcript",
        "workspace_id": str(ws),
        "source": "zoom",
        "external_id": f"meeting-{i}",
        "meeting": {
            "title": f"Weekly sync {i}",
            "starts_at": "2026-03-01T10:00:00Z",
            "ends_at": "2026-03-01T11:00:00Z",
        },
        "participants": [{"name": s, "address": f"{s.lower()}@example.com"} for s in speakers],
        "segments": turns(gen, minutes, speakers),
    }


def media_item(gen: TextGen, ws: uuid.UUID, i: int, minutes: int) -> dict[str, Any]:
    segs = turns(gen, minutes, None)
    return {
        "kind": "media",
        "workspace_id": str(ws),
        "source": "loom",
        "external_id": f"video-{i}",
        "asset": {
            "kind": "video",
            "title": f"Demo {i}",
            "mime_type": "video/mp4",
            "duration_ms": segs[-1]["end_ms"],
        },
        "segments": segs,
    }


def build(size: str, ws: uuid.UUID, seed: int = 7) -> Corpus:
    spec = SIZES[size]
    gen = TextGen(seed)
    return Corpus(
        emails=[email(gen, ws, i) for i in range(spec["emails"])],
        meetings=[meeting(gen, ws, i, spec["meeting_min"]) for i in range(spec["meetings"])],
        media=[media_item(gen, ws, i, spec["media_min"]) for i in range(spec["media"])],
    )


def short_messages(ws: uuid.UUID, n: int, seed: int = 11) -> list[dict[str, Any]]:
    gen = TextGen(seed)
    return [
        {**email(gen, ws, 100_000 + i), "body": gen.sentence(), "thread_key": None}
        for i in range(n)
    ]


def big_vtt(megabytes: float, seed: int = 13) -> str:
    """A WebVTT transcript of about ``megabytes`` MB with voice tags."""
    gen = TextGen(seed)
    rng, parts, size, t, n = gen.rng, ["WEBVTT\n\n"], 8, 0, 0
    limit = int(megabytes * 1024 * 1024)

    def ts(ms: int) -> str:
        h, rest = divmod(ms, 3_600_000)
        m, rest = divmod(rest, 60_000)
        s, ms = divmod(rest, 1000)
        return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"

    while size < limit:
        text = gen.paragraph(rng.randint(1, 4))
        dur = len(text.split()) * 400
        n += 1
        cue = f"{n}\n{ts(t)} --> {ts(t + dur)}\n<v {rng.choice(_SPEAKERS)}>{text}\n\n"
        parts.append(cue)
        size += len(cue)
        t += dur
    return "".join(parts)
