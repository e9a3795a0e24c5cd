"""The ingestion worker end to end: real PostgreSQL, real Redis, real arq Worker, and the
OpenAI-compatible HTTP server from tests/support (the official SDK talks to it)."""

from __future__ import annotations

import http.server
import itertools
import json
import threading
import time
from typing import Any

import numpy as np
import pytest

from tests.support.harness import (
    communication,
    db_fetch,
    db_val,
    media,
    mutate,
    new_workspace,
    run_worker_burst,
    transcript,
)
from worker import client
from worker.core.payloads import job_id, parse_payload
from worker.db.ledger import project
from worker.db.pool import create_pool
from worker.embedding.local import local_embed
from worker.text.chunking import chunk_communication

TURNS = [
    ("Alice", 0, 4000, "Welcome everyone, today we review the quarterly roadmap."),
    ("Alice", 4000, 9000, "First item is the billing migration to usage tiers."),
    ("Bob", 9000, 15000, "The billing migration is blocked on the tax provider integration."),
    ("Carol", 15000, 21000, "I can unblock tax by Friday if legal signs the contract."),
]


async def enqueue_all(settings: Any, payloads: list[dict[str, Any]]) -> list[str]:
    redis = await client.connect(settings.redis_url)
    try:
        return [await client.enqueue(redis, p, settings=settings) for p in payloads]
    finally:
        await redis.aclose()


async def test_each_kind_end_to_end(settings_factory, migrated_dsn, fake_openai) -> None:
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    payloads = [
        communication(ws, "m1", "Can we move the board meeting to Thursday?"),
        communication(ws, "m2", "Thursday works. I'll update the invite.", subject="Re: board"),
        transcript(ws, "call-1", TURNS),
        media(ws, "video-1", [(0, 5000, "Intro to the dashboard"), (5000, 9000, "Billing tiers")]),
    ]
    ids = await enqueue_all(settings, payloads)
    assert ids == [job_id(parse_payload(p)) for p in payloads]
    await run_worker_burst(settings)

    comms = await db_fetch(
        migrated_dsn,
        "SELECT * FROM comms.communications WHERE workspace_id=$1 ORDER BY external_id",
        ws,
    )
    assert [c["external_id"] for c in comms] == ["m1", "m2"]
    assert all(c["embedding_model"] == "text-embedding-3-small" for c in comms)
    [only] = chunk_communication(
        "subject m1", "Can we move the board meeting to Thursday?", 512, 64
    )
    expected = local_embed([only.text])[0]
    got = comms[0]["embedding"].to_numpy()
    assert got.shape == (1536,)
    assert float(np.dot(got, expected)) > 0.99  # subject + body embedded, vector as served
    thread = await db_fetch(migrated_dsn, "SELECT * FROM comms.threads WHERE workspace_id=$1", ws)
    assert len(thread) == 1 and thread[0]["message_count"] == 2
    parts = await db_val(
        migrated_dsn, "SELECT count(*) FROM comms.participants WHERE workspace_id=$1", ws
    )
    assert parts == 4
    contacts = await db_fetch(
        migrated_dsn,
        "SELECT primary_address FROM core.contacts WHERE workspace_id=$1 ORDER BY 1",
        ws,
    )
    assert [c[0] for c in contacts] == [
        "alice@example.com",
        "ann@example.com",
        "bob@example.com",
        "carol@example.com",
    ]

    chunks = await db_fetch(
        migrated_dsn,
        "SELECT * FROM meetings.transcript_chunks WHERE workspace_id=$1 ORDER BY chunk_index",
        ws,
    )
    assert chunks, "transcript produced no chunks"
    assert chunks[0]["start_ms"] == 0 and chunks[-1]["end_ms"] == 21000
    spoken = {s for c in chunks for s in c["speakers"]}
    assert spoken == {"Alice", "Bob", "Carol"}
    assert all(c["embedding"] is not None and c["token_count"] > 0 for c in chunks)
    media_chunks = await db_fetch(
        migrated_dsn,
        "SELECT * FROM media.media_chunks WHERE workspace_id=$1 ORDER BY chunk_index",
        ws,
    )
    assert media_chunks[0]["start_ms"] == 0 and media_chunks[-1]["end_ms"] == 9000

    jobs = await db_fetch(
        migrated_dsn,
        "SELECT status::text, attempts FROM ops.ingestion_jobs WHERE workspace_id=$1",
        ws,
    )
    assert [(j[0], j[1]) for j in jobs] == [("done", 1)] * 4
    types = await db_fetch(
        migrated_dsn,
        "SELECT event_type FROM ops.events WHERE aggregate_id=$1 ORDER BY version",
        ids[2],
    )
    assert [t[0] for t in types] == [
        "job.received",
        "job.started",
        "content.pulled",
        "content.chunked",
        "content.embedded",
        "content.stored",
        "job.completed",
    ]


async def test_redelivery_and_reingest_are_noops(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    payload = transcript(ws, "call-dedup", TURNS)
    first = await enqueue_all(settings, [payload])
    await run_worker_burst(settings)
    requests_after_first = fake_openai.stats()["count"]
    rows_before = await db_val(
        migrated_dsn, "SELECT count(*) FROM meetings.transcript_chunks WHERE workspace_id=$1", ws
    )

    # the same payload again: same job id; arq still knows it, so no second job
    again = await enqueue_all(settings, [payload])
    assert again == first
    # a re-delivery after arq forgot the job (result expired): the ledger makes it a no-op
    redis = await client.connect(settings.redis_url)
    await redis.delete(f"arq:result:{first[0]}")
    await redis.enqueue_job(
        "ingest", json.loads(json.dumps(payload)), _job_id=first[0], _queue_name=settings.queue_name
    )
    await redis.aclose()
    await run_worker_burst(settings)

    assert fake_openai.stats()["count"] == requests_after_first  # no embedding call
    rows_after = await db_val(
        migrated_dsn, "SELECT count(*) FROM meetings.transcript_chunks WHERE workspace_id=$1", ws
    )
    assert rows_after == rows_before
    events = await db_fetch(
        migrated_dsn,
        "SELECT event_type FROM ops.events WHERE aggregate_id=$1 ORDER BY version",
        first[0],
    )
    assert [e[0] for e in events].count("job.noop") == 1
    assert [e[0] for e in events].count("content.stored") == 1


async def test_changed_content_replaces_chunks_and_embeds_only_new_text(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    # small chunks so each turn is its own chunk
    settings = settings_factory(chunk_tokens=16, chunk_overlap_tokens=0)
    ws = await new_workspace(migrated_dsn)
    v1 = transcript(ws, "call-change", TURNS)
    await enqueue_all(settings, [v1])
    await run_worker_burst(settings)
    before = await db_fetch(
        migrated_dsn,
        "SELECT content_hash FROM meetings.transcript_chunks "
        "WHERE workspace_id=$1 ORDER BY chunk_index",
        ws,
    )
    fake_openai.reset()

    turns = list(TURNS)
    turns[3] = ("Carol", 15000, 21000, "Legal signed, so tax integration ships Monday.")
    v2 = transcript(ws, "call-change", turns)
    await enqueue_all(settings, [v2])
    await run_worker_burst(settings)

    after = await db_fetch(
        migrated_dsn,
        "SELECT content_hash, content FROM meetings.transcript_chunks "
        "WHERE workspace_id=$1 ORDER BY chunk_index",
        ws,
    )
    new_hashes = {a[0] for a in after} - {b[0] for b in before}
    assert new_hashes, "the changed turn must produce a new chunk"
    assert fake_openai.stats()["inputs"] == len(new_hashes)  # only changed texts embedded
    assert not any("unblock tax by Friday" in a[1] for a in after)  # old text replaced
    transcripts = await db_val(
        migrated_dsn, "SELECT count(*) FROM meetings.transcripts WHERE workspace_id=$1", ws
    )
    assert transcripts == 1


async def test_batching_across_jobs_is_close_to_minimum(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    settings = settings_factory(worker_concurrency=40, embed_batch_linger_ms=1500, db_pool_max=20)
    ws = await new_workspace(migrated_dsn)
    payloads = [
        communication(ws, f"b{i}", f"note {i}: budget line {i * 7} approved", thread_key=f"t{i}")
        for i in range(40)
    ]
    await enqueue_all(settings, payloads)
    await run_worker_burst(settings)
    stats = fake_openai.stats()
    assert stats["inputs"] == 40
    # 40 inputs fit in one request; arq starts jobs over several poll cycles (~1 s here),
    # so a long linger collects them; without batching this would be 40 requests
    assert stats["count"] <= 3, stats["count"]
    done = await db_val(
        migrated_dsn,
        "SELECT count(*) FROM ops.ingestion_jobs WHERE workspace_id=$1 AND status='done'",
        ws,
    )
    assert done == 40


@pytest.mark.parametrize(
    "faults",
    [
        [{"status": 429, "retry_after": 0.2}, {"status": 429, "retry_after": 0.1}],
        [{"status": 500}, {"status": 503}],
        [{"timeout": True}],
    ],
    ids=["429-retry-after", "5xx", "timeout"],
)
async def test_transient_api_faults_are_retried(
    settings_factory, migrated_dsn, fake_openai, faults
) -> None:
    settings = settings_factory(embed_request_timeout_s=0.5)
    fake_openai.configure(timeout_sleep_s=1.5)
    ws = await new_workspace(migrated_dsn)
    fake_openai.push_faults(*faults)
    await enqueue_all(settings, [communication(ws, "r1", "retry me please")])
    await run_worker_burst(settings)
    status = await db_val(
        migrated_dsn, "SELECT status::text FROM ops.ingestion_jobs WHERE workspace_id=$1", ws
    )
    assert status == "done"
    statuses = fake_openai.stats()["statuses"]
    assert statuses.get("200") == 1


async def test_wrong_dimension_is_never_stored_and_dead_letters(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    settings = settings_factory(job_max_tries=2, embed_max_retries=1)
    ws = await new_workspace(migrated_dsn)
    fake_openai.push_faults(*[{"wrong_dim": True}] * 20)
    await enqueue_all(settings, [transcript(ws, "bad-dim", TURNS)])
    await run_worker_burst(settings)
    fake_openai.reset()
    rows = await db_val(
        migrated_dsn, "SELECT count(*) FROM meetings.transcript_chunks WHERE workspace_id=$1", ws
    )
    assert rows == 0
    job = (
        await db_fetch(
            migrated_dsn,
            "SELECT status::text, attempts, last_error FROM "
            "ops.ingestion_jobs WHERE workspace_id=$1",
            ws,
        )
    )[0]
    assert job["status"] == "failed" and job["attempts"] == 2
    assert "dimension" in job["last_error"].lower()
    kinds = await db_fetch(
        migrated_dsn, "SELECT event_type FROM ops.events WHERE workspace_id=$1 ORDER BY id", ws
    )
    assert [k[0] for k in kinds].count("job.retrying") == 1
    assert [k[0] for k in kinds][-1] == "job.failed"


BAD = {
    "communication": ({"channel": "pigeon"}, "channel"),
    "transcript": (
        {"segments": [{"speaker": "A", "start_ms": 500, "end_ms": 100, "text": "x"}]},
        "segments.0",
    ),
    "media": ({"asset": {"kind": "hologram"}}, "asset.kind"),
}


async def test_bad_payloads_fail_once_and_others_continue(
    settings_factory, migrated_dsn, fake_openai, capfd
) -> None:
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    good = [communication(ws, "good-1", "all fine here")]
    bad = {
        "communication": mutate(communication(ws, "bad-c", "x"), **BAD["communication"][0]),
        "transcript": mutate(transcript(ws, "bad-t", TURNS), **BAD["transcript"][0]),
        "media": mutate(media(ws, "bad-m", [(0, 1, "x")]), **BAD["media"][0]),
    }
    redis = await client.connect(settings.redis_url)
    for name, payload in bad.items():  # straight to Redis, as a non-Python connector would
        await redis.enqueue_job(
            "ingest", payload, _job_id=f"bad-{name}-{ws}", _queue_name=settings.queue_name
        )
    await redis.aclose()
    await enqueue_all(settings, good)
    await run_worker_burst(settings)

    rows = await db_fetch(
        migrated_dsn,
        "SELECT kind::text, status::text, attempts, error_field, "
        "last_error FROM ops.ingestion_jobs WHERE workspace_id=$1",
        ws,
    )
    by_kind = {(r["kind"], r["status"]): r for r in rows}
    assert ("communication", "done") in by_kind
    for kind, (_, field) in BAD.items():
        row = by_kind[(kind, "failed")]
        assert row["attempts"] == 1
        assert row["error_field"].startswith(field), (kind, row["error_field"])
        assert row["last_error"]
    failed_events = await db_val(
        migrated_dsn,
        "SELECT count(*) FROM ops.events WHERE workspace_id=$1 AND event_type='job.failed'",
        ws,
    )
    assert failed_events == 3
    out = capfd.readouterr()
    lines = [
        json.loads(line)
        for line in (out.out + out.err).splitlines()
        if line.startswith("{") and "invalid_payload" in line
    ]
    assert {(line["kind"], line["field"].split(".")[0]) for line in lines} >= {
        ("communication", "channel"),
        ("transcript", "segments"),
        ("media", "asset"),
    }


async def test_ledger_is_a_projection_of_events(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    settings = settings_factory(job_max_tries=2, embed_max_retries=0)
    ws = await new_workspace(migrated_dsn)
    fake_openai.push_faults({"status": 500})
    await enqueue_all(settings, [communication(ws, "p1", "one"), transcript(ws, "p2", TURNS)])
    redis = await client.connect(settings.redis_url)
    await redis.enqueue_job(
        "ingest", {"kind": "media", "workspace_id": str(ws)}, _queue_name=settings.queue_name
    )
    await redis.aclose()
    await run_worker_burst(settings)
    events = await db_fetch(
        migrated_dsn,
        "SELECT aggregate_id, event_type, payload FROM ops.events "
        "WHERE workspace_id=$1 ORDER BY aggregate_id, version",
        ws,
    )
    projected = project([dict(e) for e in events])
    ledger = await db_fetch(
        migrated_dsn,
        "SELECT id, kind::text, source, content_hash, "
        "status::text, attempts, error_field FROM ops.ingestion_jobs "
        "WHERE workspace_id=$1",
        ws,
    )
    assert len(ledger) == 3 and set(projected) == {r["id"] for r in ledger}
    for row in ledger:
        p = projected[row["id"]]
        assert p.columns() == tuple(row)[1:], row


def _long_turns(
    n: int, changed: int | None = None, prefix: str = ""
) -> list[tuple[str, int, int, str]]:
    """``n`` short turns, alternating speakers, each its own chunk at chunk_tokens=16."""
    words = ["budget", "roadmap", "billing", "hiring", "security", "pricing", "launch"]
    turns = []
    for i in range(n):
        text = f"{prefix}Point {i}: the {words[i % len(words)]} plan needs review {i * 3}."
        if i == changed:
            text = f"Point {i}: the {words[i % len(words)]} plan was replaced entirely."
        turns.append((("Alice", "Bob", "Carol")[i % 3], i * 1000, i * 1000 + 900, text))
    return turns


async def test_large_item_is_streamed_in_windows(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    from worker.core.payloads import Segment
    from worker.text.chunking import chunk_segments

    settings = settings_factory(
        chunk_tokens=16,
        chunk_overlap_tokens=0,
        stream_threshold_chunks=8,
        stream_window_chunks=4,
        job_max_tries=1,
    )
    ws = await new_workspace(migrated_dsn)
    turns = _long_turns(30)
    [jid] = await enqueue_all(settings, [transcript(ws, "long-call", turns)])
    await run_worker_burst(settings)

    expected = list(
        chunk_segments(
            [Segment(speaker=s, start_ms=a, end_ms=b, text=t) for s, a, b, t in turns], 16, 0
        )
    )
    assert len(expected) > 8
    sql = (
        "SELECT chunk_index, content, content_hash, speaker, speakers, start_ms, end_ms, "
        "token_count FROM meetings.transcript_chunks WHERE workspace_id=$1 ORDER BY chunk_index"
    )
    rows = await db_fetch(migrated_dsn, sql, ws)
    assert [
        (
            r["chunk_index"],
            r["content"],
            r["speaker"],
            list(r["speakers"]),
            r["start_ms"],
            r["end_ms"],
            r["token_count"],
        )
        for r in rows
    ] == [
        (c.index, c.text, c.speaker, list(c.speakers), c.start_ms, c.end_ms, c.token_count)
        for c in expected
    ]
    job = (
        await db_fetch(
            migrated_dsn, "SELECT status::text, result FROM ops.ingestion_jobs WHERE id=$1", jid
        )
    )[0]
    result = json.loads(job["result"]) if isinstance(job["result"], str) else job["result"]
    assert job["status"] == "done" and result["windows"] == -(-len(expected) // 4)
    meta = await db_fetch(
        migrated_dsn,
        "SELECT segment_count, duration_ms FROM meetings.transcripts WHERE workspace_id=$1",
        ws,
    )
    assert (meta[0][0], meta[0][1]) == (len(expected), turns[-1][2])
    types = await db_fetch(
        migrated_dsn,
        "SELECT event_type FROM ops.events WHERE aggregate_id=$1 ORDER BY version",
        jid,
    )
    assert [t[0] for t in types] == [
        "job.received",
        "job.started",
        "content.pulled",
        "content.chunked",
        "content.embedded",
        "content.stored",
        "job.completed",
    ]
    before = [(r["chunk_index"], r["content_hash"]) for r in rows]

    # Re-ingest with one changed turn: only the changed chunk's text is embedded.
    fake_openai.reset()
    await enqueue_all(settings, [transcript(ws, "long-call", _long_turns(30, changed=17))])
    await run_worker_burst(settings)
    after = await db_fetch(migrated_dsn, sql, ws)
    new_hashes = {r["content_hash"] for r in after} - {h for _, h in before}
    assert len(new_hashes) == 1 and len(after) == len(before)
    assert fake_openai.stats()["inputs"] == 1
    current = [(r["chunk_index"], r["content_hash"]) for r in after]

    # A failure mid-stream (3rd embedding request: windows 1-2 already COPYed in the
    # transaction) rolls the whole item back: the previous version stays, unmixed.
    fake_openai.reset()
    fake_openai.push_faults({}, {}, *[{"wrong_dim": True}] * 10)
    # every chunk text is new: no vector can be reused, every window needs a request
    v3 = transcript(ws, "long-call", _long_turns(30, prefix="Revised "))
    [bad] = await enqueue_all(settings, [v3])
    await run_worker_burst(settings)
    assert fake_openai.stats()["count"] >= 3
    failed = (
        await db_fetch(
            migrated_dsn, "SELECT status::text, last_error FROM ops.ingestion_jobs WHERE id=$1", bad
        )
    )[0]
    assert failed["status"] == "failed" and "dimension" in failed["last_error"].lower()
    still = await db_fetch(migrated_dsn, sql, ws)
    assert [(r["chunk_index"], r["content_hash"]) for r in still] == current


async def test_streamed_items_take_turns_for_their_slots(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    # Each streamed item holds a pool connection for its whole write; with
    # LARGE_ITEMS_MAX=1 three large items arriving together are written one after another.
    settings = settings_factory(
        chunk_tokens=16,
        chunk_overlap_tokens=0,
        stream_threshold_chunks=8,
        stream_window_chunks=4,
        large_items_max=1,
    )
    fake_openai.configure(latency_ms=40)  # every window's request takes a while
    ws = await new_workspace(migrated_dsn)
    jids = await enqueue_all(
        settings, [transcript(ws, f"long-{i}", _long_turns(24, prefix=f"{i} ")) for i in range(3)]
    )
    await run_worker_burst(settings)
    spans = []
    for jid in jids:
        # finished_at is now() of the item's one transaction, i.e. when it began; the
        # embedded event is stamped when its last window was written, before the commit.
        row = (
            await db_fetch(
                migrated_dsn,
                """
            SELECT j.status::text AS status, j.finished_at AS began,
                   (j.result->>'windows')::int AS windows, e.occurred_at AS written
            FROM ops.ingestion_jobs j JOIN ops.events e ON e.aggregate_id = j.id
            WHERE j.id = $1 AND e.event_type = 'content.embedded'""",
                jid,
            )
        )[0]
        assert row["status"] == "done" and row["windows"] >= 3
        spans.append((row["began"], row["written"]))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"streamed items overlapped: {spans}"


class _SlowText(http.server.BaseHTTPRequestHandler):
    """Serves a short text after a pause, counting the requests in flight at once."""

    lock = threading.Lock()
    active = 0
    peak = 0

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        cls = type(self)
        with cls.lock:
            cls.active += 1
            cls.peak = max(cls.peak, cls.active)
        try:
            time.sleep(0.4)
            body = f"Narration of {self.path}: the launch plan and the budget.".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with cls.lock:
                cls.active -= 1


@pytest.mark.parametrize("slots", [1, 3])
async def test_fetched_items_take_turns_for_their_slots(
    settings_factory, migrated_dsn, fake_openai, slots: int
) -> None:
    # Items fetched by content_url hold bodies of up to FETCH_MAX_BYTES: with 256 jobs in
    # flight, only LARGE_ITEMS_MAX of them are fetched and held at once.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowText)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _SlowText.peak = 0
    try:
        settings = settings_factory(large_items_max=slots, fetch_allow_private=True)
        ws = await new_workspace(migrated_dsn)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        items = [
            {**media(ws, f"clip-{i}", []), "segments": None, "content_url": f"{url}/{i}"}
            for i in range(3)
        ]
        await enqueue_all(settings, items)
        await run_worker_burst(settings)
    finally:
        server.shutdown()
    done = await db_fetch(
        migrated_dsn,
        "SELECT count(*) FROM ops.ingestion_jobs WHERE workspace_id=$1 AND status='done'",
        ws,
    )
    assert done[0][0] == 3
    if slots == 1:
        assert _SlowText.peak == 1
    else:  # the same three fetches overlap when the slots allow it
        assert _SlowText.peak > 1


async def test_client_with_ledger_turns_a_resend_into_a_noop_without_redis(
    settings_factory, migrated_dsn, fake_openai
) -> None:
    settings = settings_factory()
    ws = await new_workspace(migrated_dsn)
    payload = communication(ws, "resend-1", "Quarterly numbers attached.")
    pool = await create_pool(settings, migrated_dsn, min_size=1, max_size=1)
    redis = await client.connect(settings.redis_url)
    try:
        jid = await client.enqueue(redis, payload, db=pool, settings=settings)
        await run_worker_burst(settings)
        requests = fake_openai.stats()["count"]
        assert await client.enqueue(redis, payload, db=pool, settings=settings) == jid
        assert await redis.zcard(settings.queue_name) == 0  # nothing went to Redis
    finally:
        await redis.aclose()
        await pool.close()
    assert fake_openai.stats()["count"] == requests
    events = await db_fetch(
        migrated_dsn,
        "SELECT event_type, payload->>'via' AS via FROM "
        "ops.events WHERE aggregate_id = $1 ORDER BY version",
        jid,
    )
    assert [(e["event_type"], e["via"]) for e in events][-1] == ("job.noop", "client")
    assert [e["event_type"] for e in events].count("content.stored") == 1
