"""``public.search_memory`` (migration 006) as the platform calls it: an ``authenticated``
user under RLS, on PostgreSQL 18 + pgvector 0.8 (binary-quantized HNSW, re-ranked) and
16 + pgvector 0.6 (the seed's HNSW: the fallback).

The data is clustered (30 topics, a noisy copy of a topic's centre per row), so the
nearest rows are well defined and an index that returns the wrong ones is caught: the
function's top 10 is compared with the exact top 10 computed here with numpy.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import pytest
import pytest_asyncio
from pgvector.asyncpg import register_vector

from tests.conftest import run_sql
from worker.db.migrate import Migrator
from worker.servers.embedded import EmbeddedPostgres

DIM = 1536
TOPICS = 30
BIG, TINY = uuid.uuid4(), uuid.uuid4()
U_BIG, U_TINY = uuid.uuid4(), uuid.uuid4()
T0 = datetime(2026, 11, 1, tzinfo=UTC)
SEARCH = "SELECT * FROM public.search_memory($1, $2, $3, $4, $5, $6, $7, $8, $9)"


class Corpus:
    """What was written, to compute the exact answers from."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(21)
        self.centres = self._unit(self.rng.normal(size=(TOPICS, DIM)))
        self.rows: dict[uuid.UUID, list[tuple[str, uuid.UUID, np.ndarray]]] = {BIG: [], TINY: []}
        self.contact = uuid.uuid4()  # Kim, in the large workspace

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    def vector(self, topic: int, spread: float = 0.9) -> np.ndarray:
        return self._unit(self.centres[topic] + spread * self._unit(self.rng.normal(size=DIM)))

    def exact(self, ws: uuid.UUID, q: np.ndarray, k: int, kinds: set[str] | None = None) -> list:
        rows = [r for r in self.rows[ws] if kinds is None or r[0] in kinds]
        dist = [1.0 - float(np.dot(v, q)) for _, _, v in rows]
        return [rows[i][1] for i in np.argsort(dist, kind="stable")[:k]]


def _sync(coro: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _seed(dsn: str, corpus: Corpus, n_big: int) -> None:
    conn = await asyncpg.connect(dsn)
    await register_vector(conn)
    try:
        contact = corpus.contact
        for ws, user in ((BIG, U_BIG), (TINY, U_TINY)):
            await conn.execute("INSERT INTO core.workspaces (id, name) VALUES ($1, 'w')", ws)
            await conn.execute(
                "INSERT INTO core.members (workspace_id, user_id, role) VALUES ($1, $2, 'member')",
                ws,
                user,
            )
        await conn.execute(
            "INSERT INTO core.contacts (id, workspace_id, display_name, primary_address)"
            " VALUES ($1, $2, 'Kim', 'kim@x.io')",
            contact,
            BIG,
        )
        for ws, n in ((BIG, n_big), (TINY, 12)):
            meeting, transcript, asset = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
            await conn.execute(
                "INSERT INTO meetings.meetings (id, workspace_id, source, external_id, starts_at)"
                " VALUES ($1, $2, 'zoom', $3, $4)",
                meeting,
                ws,
                str(meeting),
                T0,
            )
            await conn.execute(
                "INSERT INTO meetings.transcripts (id, workspace_id, meeting_id, source,"
                " external_id, content_hash) VALUES ($1, $2, $3, 'zoom', $4, 'h')",
                transcript,
                ws,
                meeting,
                str(transcript),
            )
            await conn.execute(
                "INSERT INTO media.assets (id, workspace_id, source, external_id, kind,"
                " content_hash) VALUES ($1, $2, 'drive', $3, 'document', 'h')",
                asset,
                ws,
                str(asset),
            )
            chunks, media, comms, people = [], [], [], []
            for i in range(n):
                topic = i % TOPICS
                v, row_id = corpus.vector(topic), uuid.uuid4()
                text = f"topic{topic} note {i} about the plan"
                if i % 10 < 6:
                    kind = "transcript"
                    chunks.append((row_id, ws, transcript, meeting, i, text, "h", 9, v, "m"))
                elif i % 10 < 8:
                    kind = "media"
                    media.append((row_id, ws, asset, i, text, "h", 9, v, "m"))
                else:
                    kind = "communication"
                    source = "slack" if i % 20 == 8 else "gmail"
                    sent = T0 + timedelta(days=i % 30)
                    comms.append((row_id, ws, source, str(row_id), "email", text, "h", sent, v))
                    if ws == BIG and i % 40 == 9:  # Kim: every other gmail message
                        people.append((uuid.uuid4(), ws, row_id, contact, "to", "kim@x.io"))
                corpus.rows[ws].append((kind, row_id, v))
            await conn.copy_records_to_table(
                "transcript_chunks",
                schema_name="meetings",
                records=chunks,
                columns=[
                    "id", "workspace_id", "transcript_id", "meeting_id", "chunk_index",
                    "content", "content_hash", "token_count", "embedding", "embedding_model",
                ],
            )  # fmt: skip
            await conn.copy_records_to_table(
                "media_chunks",
                schema_name="media",
                records=media,
                columns=[
                    "id", "workspace_id", "asset_id", "chunk_index", "content",
                    "content_hash", "token_count", "embedding", "embedding_model",
                ],
            )  # fmt: skip
            await conn.copy_records_to_table(
                "communications",
                schema_name="comms",
                records=comms,
                columns=[
                    "id", "workspace_id", "source", "external_id", "channel", "body",
                    "content_hash", "sent_at", "embedding",
                ],
            )  # fmt: skip
            await conn.copy_records_to_table(
                "participants",
                schema_name="comms",
                records=people,
                columns=["id", "workspace_id", "communication_id", "contact_id", "role", "address"],
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


#: pg18-lists: the IVFFlat indexes re-created with 16 lists after the load (what the
#: maintenance job does once a table has grown), so search probes 10 of 16 lists and a
#: filter's missing rows must come from its iterative scan; pg18: one list (a fresh
#: database's: every code read).
RELIST = """
DO $$
DECLARE t record;
BEGIN
  FOR t IN SELECT * FROM (VALUES ('comms', 'communications', 'idx_comms_embedding'),
      ('meetings', 'transcript_chunks', 'idx_chunks_embedding'),
      ('media', 'media_chunks', 'idx_media_chunks_embedding')) AS v (nsp, tbl, idx)
  LOOP
    EXECUTE format('DROP INDEX %I.%I', t.nsp, t.idx);
    EXECUTE format('CREATE INDEX %I ON %I.%I USING ivfflat '
                   '((binary_quantize(embedding)::bit(1536)) bit_hamming_ops) WITH (lists = 16)',
                   t.idx, t.nsp, t.tbl);
  END LOOP;
END $$;
ANALYZE;
"""


@pytest.fixture(
    scope="module", params=["pg18", "pg18-lists", pytest.param("pg16", marks=pytest.mark.pg16)]
)
def seeded(request: pytest.FixtureRequest) -> Iterator[tuple[str, Corpus, str]]:
    """A migrated database per server with one large and one tiny workspace."""
    server: EmbeddedPostgres = request.getfixturevalue("pg16" if request.param == "pg16" else "pg")
    name = f"search_{uuid.uuid4().hex[:8]}"
    run_sql(server.dsn(), f'CREATE DATABASE "{name}"')
    dsn = server.dsn(name)
    _sync(Migrator(dsn).up())
    corpus = Corpus()
    # seed HNSW inserts on pgvector 0.6 are ~5x slower: fewer rows there
    _sync(_seed(dsn, corpus, 1200 if request.param == "pg16" else 2400))
    if request.param == "pg18-lists":
        run_sql(dsn, RELIST)
    yield dsn, corpus, request.param
    run_sql(server.dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture
async def conn(seeded: tuple[str, Corpus, str]) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(seeded[0])
    await register_vector(c)
    try:
        yield c
    finally:
        await c.close()


async def as_user(
    conn: asyncpg.Connection, user: uuid.UUID | None, *args: Any
) -> list[asyncpg.Record]:
    """One call as PostgREST makes it: role ``authenticated`` with the user's JWT claims
    (``anon`` when ``user`` is None), in a transaction of its own."""
    role = "authenticated" if user else "anon"
    claims = {"sub": str(user), "role": role} if user else {"role": role}
    padded = [*args, *([None] * (9 - len(args)))]
    async with conn.transaction():
        await conn.execute(
            f"SET LOCAL ROLE {role}; "
            f"SELECT set_config('request.jwt.claims', '{json.dumps(claims)}', true)"
        )
        return await conn.fetch(SEARCH, *padded)


def recall(got: list[uuid.UUID], want: list[uuid.UUID]) -> float:
    return len(set(got) & set(want)) / len(want)


async def test_the_top_10_are_the_exact_top_10(seeded, conn) -> None:
    """Vector mode in the large workspace: 20 queries near stored rows; recall@10 against
    numpy's exact answer. Re-ranking by Hamming order alone, or a graph cut short, fails
    this (the true neighbours of a noisy query are spread over many candidates)."""
    _, corpus, _ = seeded
    scores = []
    for topic in range(20):
        q = corpus.vector(topic, spread=1.1)
        rows = await as_user(conn, U_BIG, BIG, q, None, 10)
        assert len(rows) == 10
        distances = [r["distance"] for r in rows]
        assert distances == sorted(distances)
        scores.append(recall([r["id"] for r in rows], corpus.exact(BIG, q, 10)))
    assert np.mean(scores) >= 0.95, scores


async def test_a_tiny_workspace_gets_all_its_k_best_rows_every_call(seeded, conn) -> None:
    """12 rows among thousands: every call returns its exact top 10, also after more than
    five calls (when a prepared statement may switch to a generic plan that walks the
    shared graph and returns a short list)."""
    _, corpus, _ = seeded
    for topic in range(8):
        q = corpus.vector(topic)
        rows = await as_user(conn, U_TINY, TINY, q, None, 10)
        assert [r["id"] for r in rows] == corpus.exact(TINY, q, 10)


async def test_rls_decides_what_a_caller_sees(seeded, conn) -> None:
    _, corpus, _ = seeded
    q = corpus.vector(3)
    assert await as_user(conn, U_TINY, BIG, q, "plan", 10) == []
    assert len(await as_user(conn, U_BIG, BIG, q, "plan", 10)) == 10
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_user(conn, None, BIG, q)


async def test_filters_kind_source_time_and_contact(seeded, conn) -> None:
    _, corpus, _ = seeded
    q = corpus.vector(6)  # topic 6 has media rows (i % 30 == 6, i % 10 == 6)
    rows = await as_user(conn, U_BIG, BIG, q, None, 10, ["media"])
    assert {r["kind"] for r in rows} == {"media"} and len(rows) == 10
    assert [r["id"] for r in rows] == corpus.exact(BIG, q, 10, {"media"})
    assert {r["item_id"] for r in rows} != {None} and {r["source"] for r in rows} == {"drive"}

    rows = await as_user(conn, U_BIG, BIG, q, None, 10, None, ["slack"])
    assert rows and {(r["kind"], r["source"]) for r in rows} == {("communication", "slack")}

    since, until = T0 + timedelta(days=8), T0 + timedelta(days=10)
    rows = await as_user(conn, U_BIG, BIG, q, None, 50, ["communication"], None, since, until)
    assert rows and all(since <= r["occurred_at"] < until for r in rows)
    expected = sum(1 for i in range(len(corpus.rows[BIG])) if i % 10 >= 8 and 8 <= i % 30 < 10)
    assert len(rows) == min(50, expected)
    # transcripts happened at T0: outside the range
    assert await as_user(conn, U_BIG, BIG, q, None, 10, ["transcript"], None, since) == []

    contact = corpus.contact
    rows = await as_user(conn, U_BIG, BIG, q, None, 100, None, None, None, None, contact)
    n_with_kim = sum(1 for i in range(len(corpus.rows[BIG])) if i % 40 == 9)
    assert len(rows) == n_with_kim and {r["kind"] for r in rows} == {"communication"}


async def test_hybrid_finds_the_word_the_vector_misses(seeded, conn) -> None:
    """A message naming "zebrafish" whose vector is far from the question's: full text
    brings it into the hybrid top 10; vector-only does not have it; text-only ranks it
    first with no embedding at all."""
    dsn, corpus, _ = seeded
    far = corpus.vector(29)
    row_id = uuid.uuid4()
    admin = await asyncpg.connect(dsn)
    await register_vector(admin)
    try:
        await admin.execute(
            "INSERT INTO comms.communications (id, workspace_id, source, external_id, channel,"
            " body, content_hash, sent_at, embedding) VALUES ($1, $2, 'gmail', $3, 'email',"
            " 'the zebrafish grant was approved', 'h', $4, $5)",
            row_id,
            BIG,
            str(row_id),
            T0,
            far,
        )
        q = corpus.vector(4)
        vector_only = await as_user(conn, U_BIG, BIG, q, None, 10)
        hybrid = await as_user(conn, U_BIG, BIG, q, "zebrafish grant", 10)
        text_only = await as_user(conn, U_BIG, BIG, None, "zebrafish grant", 10)
        assert row_id not in {r["id"] for r in vector_only}
        assert row_id in {r["id"] for r in hybrid}
        assert [r["id"] for r in text_only] == [row_id] and text_only[0]["text_rank"] > 0
        # the fusion keeps the vector list's order among rows the text list lacks
        vec_ids = [r["id"] for r in vector_only]
        assert [r["id"] for r in hybrid if r["id"] != row_id] == vec_ids[:9]
    finally:
        await admin.execute("DELETE FROM comms.communications WHERE id = $1", row_id)
        await admin.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.ones(3, dtype=np.float32),), "p_embedding: 3 dimensions"),
        ((None, "plan", 0), "p_limit: 0 is outside 1..100"),
        ((None, "plan", 10, ["memo"]), "p_kinds: unknown kind 'memo'"),
        ((None, "  "), "p_embedding or p_query: give at least one"),
        (
            (None, "plan", 10, None, None, T0, T0),
            "p_until: .* is not after p_since",
        ),
    ],
)
async def test_bad_arguments_name_the_field(seeded, conn, args, message) -> None:
    with pytest.raises(asyncpg.DataError, match=message):
        await as_user(conn, U_BIG, BIG, *args)


async def test_the_fallback_is_what_the_server_allows(seeded, conn) -> None:
    """pgvector 0.8: binary-quantized IVFFlat (007), iterative scans, 100 candidates, the
    probes from the lists; 0.6: the seed's HNSW and ef_search 100 (006 and 007 warned, the
    indexes stayed)."""
    _, _, server = seeded
    config = await conn.fetchval("SELECT proconfig FROM pg_proc WHERE proname = 'search_memory'")
    defs = await conn.fetch(
        "SELECT indexdef FROM pg_indexes WHERE indexname IN "
        "('idx_comms_embedding', 'idx_chunks_embedding', 'idx_media_chunks_embedding')"
    )
    quantized = ["binary_quantize" in r["indexdef"] for r in defs]
    if server.startswith("pg18"):
        assert quantized == [True] * 3
        assert all("USING ivfflat" in r["indexdef"] for r in defs)
        assert {"hnsw.ef_search=100", "ivfflat.iterative_scan=relaxed_order"} <= set(config)
        # the probes follow the lists: all of 1, 10 of 16 (ops.ivfflat_probes)
        lists = 16 if server == "pg18-lists" else 1
        assert await conn.fetchval("SELECT ops.ivfflat_probes($1)", lists) == min(lists, 10)
        # set for the call only: the caller's session keeps its own value
        await conn.execute("SET ivfflat.probes = 3")
        await conn.fetch("SELECT * FROM public.search_memory($1, NULL, 'plan')", BIG)
        assert await conn.fetchval("SHOW ivfflat.probes") == "3"
        await conn.execute("RESET ivfflat.probes")
    else:
        assert quantized == [False] * 3
        assert "hnsw.ef_search=100" in config
        assert not any(c.startswith("hnsw.iterative_scan") for c in config)
