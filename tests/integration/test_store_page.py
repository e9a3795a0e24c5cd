"""Communications written in groups (worker.db.store_group via worker.ingest.grouping) against the
real PostgreSQL and embeddings server: the same rows, events and ledger as item by item,
one bad item failing alone, and a concurrent delivery / an older version in a page."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import pytest

from tests.support.harness import communication, db_fetch, make_settings, new_workspace
from worker.core.payloads import content_hash, job_id, parse_payload
from worker.db import ledger
from worker.db.store_group import CommWrite
from worker.ingest.write import store_communications
from worker.queue.runtime import Runtime

PEOPLE = ["owner@example.com", "a@example.com", "b@example.com", "c@example.com"]


def mailbox(ws: uuid.UUID, n: int, prefix: str = "m") -> list[dict[str, Any]]:
    """``n`` emails in 3 threads; the owner is on every one, dates spread over n days."""
    start = datetime(2026, 3, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        sender = PEOPLE[i % 4]
        to = [p for p in PEOPLE if p != sender][: 1 + i % 3]
        out.append(
            communication(
                ws,
                f"{prefix}{i}",
                f"Message {i} about topic {i % 5}: the plan for week {i}.",
                thread_key=f"thread-{i % 3}",
                subject=None if i % 7 == 3 else f"Topic {i % 3}",
                sender={"name": sender.split("@")[0].title(), "address": sender},
                recipients=[
                    {
                        "address": a,
                        "role": "cc" if j else "to",
                        "name": None if i % 2 else a.split("@")[0].title(),
                    }
                    for j, a in enumerate(to)
                ],
                sent_at=(start + timedelta(days=(i * 7) % n)).isoformat(),
            )
        )
    return out


@pytest.fixture
async def runtime_factory(
    migrated_dsn: str, redis_server: Any, fake_openai: Any
) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Runtime] = []

    async def make(**overrides: Any) -> Runtime:
        settings = make_settings(migrated_dsn, redis_server.url, fake_openai.base_url, **overrides)
        rt = await Runtime.open(settings)
        opened.append(rt)
        return rt

    yield make
    for rt in opened:
        await rt.close()


async def run_all(rt: Runtime, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every payload's delivery at once, as a worker with free slots runs them."""
    return list(await asyncio.gather(*(rt.pipeline.run(p) for p in payloads)))


async def snapshot(dsn: str, ws: uuid.UUID) -> dict[str, Any]:
    """What a workspace holds, without ids and write times: comparable across workspaces."""
    q = {
        "comms": """SELECT c.external_id, t.thread_key, c.channel::text, c.subject, c.sender_name,
                           c.sender_address, c.body, c.content_hash, c.sent_at, c.metadata,
                           c.token_count, c.chunk_count, c.embedding::text, c.embedding_model
                    FROM comms.communications c LEFT JOIN comms.threads t ON t.id = c.thread_id
                    WHERE c.workspace_id = $1 ORDER BY 1""",
        "participants": """SELECT c.external_id, p.role::text, p.address, p.name,
                                  k.primary_address AS contact
                           FROM comms.participants p
                           JOIN comms.communications c ON c.id = p.communication_id
                           LEFT JOIN core.contacts k ON k.id = p.contact_id
                           WHERE p.workspace_id = $1 ORDER BY 1, 2, 3""",
        "contacts": """SELECT primary_address, display_name, addresses, first_seen_at,
                              last_seen_at, embedding IS NULL AS unembedded
                       FROM core.contacts WHERE workspace_id = $1 ORDER BY 1""",
        "threads": """SELECT thread_key, subject, channel::text, message_count, first_at, last_at
                      FROM comms.threads WHERE workspace_id = $1 ORDER BY 1""",
        "ledger": """SELECT external_id, status::text, attempts, result, last_error
                     FROM ops.ingestion_jobs WHERE workspace_id = $1 ORDER BY 1""",
        "events": """SELECT j.external_id, e.version, e.event_type,
                            e.payload - 'occurred_at' AS payload
                     FROM ops.events e JOIN ops.ingestion_jobs j ON j.id = e.aggregate_id
                     WHERE e.workspace_id = $1 ORDER BY 1, 2""",
    }
    out = {name: [dict(r) for r in await db_fetch(dsn, sql, ws)] for name, sql in q.items()}
    for row in out["events"]:
        row["payload"] = json.loads(row["payload"])
    return out


def without_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ledger rows with their results parsed and the workspace-specific row id dropped."""
    out = []
    for r in rows:
        result = json.loads(r["result"])
        assert result.pop("source_id", None) is not None or r["status"] != "done"
        out.append(r | {"result": result})
    return out


async def test_a_page_writes_what_item_by_item_writes(
    runtime_factory, migrated_dsn, fake_openai
) -> None:
    grouped_ws, single_ws = await new_workspace(migrated_dsn), await new_workspace(migrated_dsn)
    grouped = await runtime_factory(group_write_connections=2, group_write_max_items=100)
    results = await run_all(grouped, mailbox(grouped_ws, 40))
    assert {r["status"] for r in results} == {"done"}
    stats = grouped.pipeline.comm_writer.stats
    # A response answers many jobs at once: they were written in groups, not 40 transactions.
    requests = fake_openai.stats()["count"]
    assert requests < 10 and stats.items == 40
    # (How many groups exactly depends on when each job wakes; never one per item.)
    assert stats.groups <= 10 and stats.largest >= 40 // requests // 3
    assert stats.fallbacks == 0

    single = await runtime_factory(group_write_max_items=1)  # per-item statements
    await run_all(single, mailbox(single_ws, 40))
    assert single.pipeline.comm_writer.stats.largest == 1

    a, b = await snapshot(migrated_dsn, grouped_ws), await snapshot(migrated_dsn, single_ws)
    assert len(a["comms"]) == 40 and len(a["contacts"]) == 4 and len(a["threads"]) == 3
    assert sum(t["message_count"] for t in a["threads"]) == 40
    for table in ("comms", "participants", "contacts", "threads"):
        assert a[table] == b[table], table
    assert without_ids(a["ledger"]) == without_ids(b["ledger"])

    # Same event streams (received, started, pulled, chunked, embedded, stored, completed)
    # with the same payloads, but for row ids and payload hashes (they name the workspace).
    def stream(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        def clean(payload: dict[str, Any]) -> dict[str, Any]:
            payload = {k: v for k, v in payload.items() if k not in ("source_id", "content_hash")}
            if isinstance(payload.get("result"), dict):
                payload["result"] = clean(payload["result"])
            return payload

        return [
            (e["external_id"], e["version"], e["event_type"], clean(e["payload"])) for e in events
        ]

    assert stream(a["events"]) == stream(b["events"])
    assert [e["event_type"] for e in a["events"] if e["external_id"] == "m0"] == [
        ledger.JOB_RECEIVED,
        ledger.JOB_STARTED,
        ledger.CONTENT_PULLED,
        ledger.CONTENT_CHUNKED,
        ledger.CONTENT_EMBEDDED,
        ledger.CONTENT_STORED,
        ledger.JOB_COMPLETED,
    ]
    stored = {
        e["external_id"]: e["payload"]
        for e in a["events"]
        if e["event_type"] == ledger.CONTENT_STORED
    }
    assert stored["m1"]["participants"] == 3 and stored["m1"]["chunks"] == 1
    projected = ledger.project(
        await db_fetch(
            migrated_dsn,
            "SELECT e.* FROM ops.events e WHERE e.workspace_id = $1 ORDER BY aggregate_id, version",
            grouped_ws,
        )
    )
    assert {p.status for p in projected.values()} == {"done"}

    # A re-ingest of changed content replaces rows (participants, thread counters) the same
    # way, the old thread's count included when a message moves to another thread.
    for rt, ws in ((grouped, grouped_ws), (single, single_ws)):
        [res] = await run_all(
            rt,
            [
                communication(
                    ws,
                    "m1",
                    "Rewritten body",
                    thread_key="thread-9",
                    recipients=[{"address": "new@example.com", "role": "to"}],
                )
            ],
        )
        assert res["status"] == "done"
    after = await snapshot(migrated_dsn, grouped_ws)
    m1 = [p for p in after["participants"] if p["external_id"] == "m1"]
    assert [p["address"] for p in m1] == ["ann@example.com", "new@example.com"]
    counts = {t["thread_key"]: t["message_count"] for t in after["threads"]}
    assert counts["thread-9"] == 1 and sum(counts.values()) == 40
    after_single = await snapshot(migrated_dsn, single_ws)
    for table in ("comms", "participants", "contacts", "threads"):
        assert after[table] == after_single[table], table


async def test_a_bad_item_fails_alone_and_its_page_neighbours_are_written(
    runtime_factory, migrated_dsn
) -> None:
    ws = await new_workspace(migrated_dsn)
    rt = await runtime_factory()
    payloads = mailbox(ws, 12)
    payloads[5] = communication(ws, "poison-1", "The database refuses this one.")
    trigger = f"refuse_{uuid.uuid4().hex[:8]}"
    conn_sql = f"""
        CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refused by test trigger'; END $$;
        CREATE TRIGGER {trigger} BEFORE INSERT ON comms.communications FOR EACH ROW
        WHEN (NEW.workspace_id = '{ws}' AND NEW.external_id = 'poison-1')
        EXECUTE FUNCTION {trigger}();"""
    await db_fetch(migrated_dsn, f"DO $do$ BEGIN EXECUTE $q${conn_sql}$q$; END $do$")
    try:
        results = await run_all(rt, payloads)
    finally:
        await db_fetch(migrated_dsn, f"DROP TRIGGER {trigger} ON comms.communications")
        await db_fetch(migrated_dsn, f"DROP FUNCTION {trigger}()")
    by_id = {r["job_id"]: r for r in results}
    bad = by_id[job_id(parse_payload(payloads[5]))]
    assert bad["status"] == "failed" and "refused by test trigger" in bad["reason"]
    assert sum(r["status"] == "done" for r in results) == 11
    # Whether the poison item shared a group depends on when each job's vector arrived
    # (alone, it takes the per-item path); test_a_failed_group_... pins the group case.
    rows = await db_fetch(
        migrated_dsn, "SELECT external_id FROM comms.communications WHERE workspace_id = $1", ws
    )
    assert len(rows) == 11 and "poison-1" not in {r["external_id"] for r in rows}
    snap = await snapshot(migrated_dsn, ws)
    [poison] = [r for r in snap["ledger"] if r["external_id"] == "poison-1"]
    assert poison["status"] == "failed" and "refused by test trigger" in poison["last_error"]
    assert [e["event_type"] for e in snap["events"] if e["external_id"] == "poison-1"][-1] == (
        ledger.JOB_FAILED
    )
    # The poison item's people were not recorded by its failed page.
    assert sum(t["message_count"] for t in snap["threads"]) == 11


async def _started(rt: Runtime, payload: dict[str, Any], arq_id: str | None = None) -> CommWrite:
    """A delivery picked up (ledger running) whose vector is ready: a page's input."""
    p = parse_payload(payload)
    ref = ledger.JobRef(uuid.UUID(job_id(p)), p.workspace_id, p.kind, arq_job_id=arq_id)
    async with rt.pool.acquire() as conn:
        pickup = await ledger.receive_and_start(
            conn,
            ref,
            source=p.source,
            external_id=p.external_id,
            content_hash=content_hash(p),
            payload=payload,
            noop_key=f"noop:{uuid.uuid4().hex}",
        )
    vector = np.zeros(1536, np.float32)
    vector[0] = 1.0
    return CommWrite(
        ref, p, pickup.queued_at, p.body or "", content_hash(p), vector, "test-model", [], []
    )


async def test_a_failed_group_is_written_again_item_by_item_and_only_the_bad_one_fails(
    runtime_factory, migrated_dsn
) -> None:
    """The pipeline's group writer, fed 12 ready items in one loop turn (as one embedding
    response does): they form one group; the database refuses one, so the group rolls back
    and is written again item by item."""
    ws = await new_workspace(migrated_dsn)
    rt = await runtime_factory(group_write_connections=2, group_write_max_items=100)
    payloads = mailbox(ws, 12)
    payloads[5] = communication(ws, "poison-2", "The database refuses this one.")
    writes = [await _started(rt, p) for p in payloads]
    trigger = f"refuse_{uuid.uuid4().hex[:8]}"
    await db_fetch(
        migrated_dsn,
        f"""DO $do$ BEGIN EXECUTE $q$
        CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refused by test trigger'; END $$;
        CREATE TRIGGER {trigger} BEFORE INSERT ON comms.communications FOR EACH ROW
        WHEN (NEW.workspace_id = '{ws}' AND NEW.external_id = 'poison-2')
        EXECUTE FUNCTION {trigger}();$q$; END $do$""",
    )
    try:
        writer = rt.pipeline.comm_writer
        results = await asyncio.gather(*(writer.submit(w) for w in writes), return_exceptions=True)
    finally:
        await db_fetch(migrated_dsn, f"DROP TRIGGER {trigger} ON comms.communications")
        await db_fetch(migrated_dsn, f"DROP FUNCTION {trigger}()")
    assert writer.stats.as_dict() == {"groups": 1, "items": 12, "largest": 12, "fallbacks": 1}
    bad = results.pop(5)
    assert isinstance(bad, asyncpg.RaiseError) and "refused by test trigger" in str(bad)
    assert [r["status"] for r in results] == ["done"] * 11  # type: ignore[index]
    snap = await snapshot(migrated_dsn, ws)
    assert sorted(c["external_id"] for c in snap["comms"]) == sorted(
        p["external_id"] for i, p in enumerate(payloads) if i != 5
    )
    assert sum(t["message_count"] for t in snap["threads"]) == 11


async def test_a_page_skips_an_older_version_and_noops_a_finished_job(
    runtime_factory, migrated_dsn
) -> None:
    ws = await new_workspace(migrated_dsn)
    rt = await runtime_factory()
    old = await _started(rt, communication(ws, "x", "first version"))
    new = await _started(rt, communication(ws, "x", "second version"))
    other = await _started(rt, communication(ws, "y", "unrelated"))
    async with rt.pool.acquire() as conn, conn.transaction():
        [done] = await store_communications(conn, [new])
    assert done["status"] == "done"
    # The older version finishes late, in a page with another item.
    async with rt.pool.acquire() as conn, conn.transaction():
        skipped, written = await store_communications(conn, [old, other])
    assert skipped["status"] == "skipped" and written["status"] == "done"
    # Another delivery of the finished job: a no-op, nothing rewritten.
    again = await _started(rt, communication(ws, "x", "second version"), arq_id="dup")
    async with rt.pool.acquire() as conn, conn.transaction():
        [noop] = await store_communications(conn, [again])
    assert noop["status"] == "noop"
    snap = await snapshot(migrated_dsn, ws)
    assert {c["external_id"]: c["body"] for c in snap["comms"]} == {
        "x": "second version",
        "y": "unrelated",
    }
    statuses = {(r["external_id"], r["status"]) for r in snap["ledger"]}
    assert statuses == {("x", "done"), ("x", "skipped"), ("y", "done")}
    types = await db_fetch(
        migrated_dsn,
        "SELECT event_type FROM ops.events WHERE aggregate_id = $1 ORDER BY version",
        new.ref.job_id,
    )
    assert [t["event_type"] for t in types][-1] == ledger.JOB_NOOP
    with pytest.raises(ValueError, match="one job per item"):
        async with rt.pool.acquire() as conn, conn.transaction():
            await store_communications(conn, [old, new])


async def test_a_thread_takes_a_subject_from_any_page_item_that_has_one(
    runtime_factory, migrated_dsn
) -> None:
    """Item by item, any message with a subject fills its thread's missing one; a page must
    not lose it to a neighbour without a subject, whatever their order (CI once caught this)."""
    ws = await new_workspace(migrated_dsn)
    rt = await runtime_factory()

    def mail(n: int, thread: str, subject: str | None) -> dict[str, Any]:
        return communication(ws, f"s{n}", f"body {n}", thread_key=thread, subject=subject)

    # t-new: created by a page whose first item has no subject, a later one has.
    # t-old: exists without a subject; a page's subject comes before one without.
    first = [await _started(rt, mail(0, "t-old", None))]
    page = [
        await _started(rt, m)
        for m in (
            mail(1, "t-new", None),
            mail(2, "t-new", "Budget"),
            mail(3, "t-new", None),
            mail(4, "t-old", "Hiring"),
            mail(5, "t-old", None),
        )
    ]
    for writes in (first, page):
        async with rt.pool.acquire() as conn, conn.transaction():
            results = await store_communications(conn, writes)
        assert {r["status"] for r in results} == {"done"}
    threads = {t["thread_key"]: t for t in (await snapshot(migrated_dsn, ws))["threads"]}
    assert threads["t-new"]["subject"] == "Budget" and threads["t-new"]["message_count"] == 3
    assert threads["t-old"]["subject"] == "Hiring" and threads["t-old"]["message_count"] == 3


async def test_a_page_does_not_wait_for_another_page_that_created_the_same_thread(
    runtime_factory, migrated_dsn
) -> None:
    """Two pages of one new thread: the second must not queue behind the first's whole
    transaction (a thread claimed inside it would hold it there: ensure_threads)."""
    ws = await new_workspace(migrated_dsn)
    rt = await runtime_factory(group_write_connections=2, group_write_max_items=100)

    def mail(name: str, person: str) -> dict[str, Any]:
        return communication(
            ws,
            name,
            f"body of {name}",
            thread_key="t-shared",
            sender={"address": f"{person}@example.com"},
            recipients=[],
        )

    first = [await _started(rt, mail(n, f"a{n}")) for n in ("slow", "a1", "a2")]
    second = [await _started(rt, mail(n, f"b{n}")) for n in ("b1", "b2")]
    trigger = f"slow_{uuid.uuid4().hex[:8]}"
    await db_fetch(
        migrated_dsn,
        f"""DO $do$ BEGIN EXECUTE $q$
        CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(2.5); RETURN NEW; END $$;
        CREATE TRIGGER {trigger} BEFORE INSERT ON comms.communications FOR EACH ROW
        WHEN (NEW.workspace_id = '{ws}' AND NEW.external_id = 'slow')
        EXECUTE FUNCTION {trigger}();$q$; END $do$""",
    )
    writer = rt.pipeline.comm_writer
    try:
        slow = asyncio.gather(*(writer.submit(w) for w in first))
        for _ in range(200):  # the first page is inside its transaction, asleep
            rows = await db_fetch(
                migrated_dsn,
                "SELECT 1 FROM pg_stat_activity WHERE "
                "wait_event = 'PgSleep' AND datname = current_database()",
            )
            if rows:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the first page never reached its slow insert")
        fast = await asyncio.gather(*(writer.submit(w) for w in second))
        assert not slow.done(), "the second page waited for the first to commit"
        assert [r["status"] for r in [*fast, *await slow]] == ["done"] * 5
    finally:
        await db_fetch(migrated_dsn, f"DROP TRIGGER {trigger} ON comms.communications")
        await db_fetch(migrated_dsn, f"DROP FUNCTION {trigger}()")
    [thread] = (await snapshot(migrated_dsn, ws))["threads"]
    assert thread["message_count"] == 5  # each page's recount saw the other's rows


@pytest.mark.parametrize("max_items", [5, 1], ids=["pages", "item-by-item"])
async def test_concurrent_writes_sharing_people_and_threads_count_right_and_do_not_deadlock(
    runtime_factory, migrated_dsn, max_items: int
) -> None:
    ws = await new_workspace(migrated_dsn)
    # Small groups, many writers: pages overlap on the owner's contact and the 3 threads,
    # and their thread counts must include what the others committed meanwhile.
    rt = await runtime_factory(group_write_connections=4, group_write_max_items=max_items)
    payloads = mailbox(ws, 60)
    results = await run_all(rt, payloads[::-1])
    assert {r["status"] for r in results} == {"done"}
    stats = rt.pipeline.comm_writer.stats
    assert stats.fallbacks == 0 and stats.groups >= 60 // max_items
    snap = await snapshot(migrated_dsn, ws)
    assert sum(t["message_count"] for t in snap["threads"]) == 60
    owner = [c for c in snap["contacts"] if c["primary_address"] == "owner@example.com"][0]
    sent = sorted(datetime.fromisoformat(p["sent_at"]) for p in payloads)
    assert (owner["first_seen_at"], owner["last_seen_at"]) == (sent[0], sent[-1])
