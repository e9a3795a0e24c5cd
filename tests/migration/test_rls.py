"""Row-level security matrix: 31 tables x 6 roles x 4 operations = 744 cases.

Every outcome is declared below by hand (EXPECTED), not derived from the SQL. Each case
runs in its own transaction on one shared connection and is rolled back:

* ``ok``     select sees the row / insert succeeds / update or delete affects 1 row
* ``hidden`` select sees nothing / update or delete affects 0 rows
* ``denied`` permission error, RLS WITH CHECK violation, or the event store's refusal
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from tests.conftest import run_sql

REPO = Path(__file__).resolve().parents[2]
UP = sorted((REPO / "migrations").glob("0*.sql"))

W1 = uuid.UUID("00000000-0000-0000-0000-0000000000a1")
W2 = uuid.UUID("00000000-0000-0000-0000-0000000000a2")
OWNER = uuid.UUID("00000000-0000-0000-0000-00000000000a")
ADMIN = uuid.UUID("00000000-0000-0000-0000-00000000000b")
MEMBER = uuid.UUID("00000000-0000-0000-0000-00000000000c")
OUTSIDER = uuid.UUID("00000000-0000-0000-0000-00000000000d")  # owner of W2 only
VIEWER = uuid.UUID("00000000-0000-0000-0000-00000000000e")

ROLES = ["anon", "outsider", "member", "admin", "owner", "service_role"]
OPS = ["select", "insert", "update", "delete"]
OK, HIDDEN, DENIED = "ok", "hidden", "denied"


def _profile(**by_role: tuple[str, str, str, str]) -> dict[str, dict[str, str]]:
    assert set(by_role) == set(ROLES)
    return {role: dict(zip(OPS, outcomes, strict=True)) for role, outcomes in by_role.items()}


ALL_DENIED = (DENIED, DENIED, DENIED, DENIED)
ALL_OK = (OK, OK, OK, OK)

# Ordinary tenant table: members (any role) read, admins/owners write.
TENANT = _profile(
    anon=ALL_DENIED,
    outsider=(HIDDEN, DENIED, HIDDEN, HIDDEN),
    member=(OK, DENIED, HIDDEN, HIDDEN),
    admin=ALL_OK,
    owner=ALL_OK,
    service_role=ALL_OK,
)
# Anyone authenticated may create a workspace (they become its creator); admins update,
# only owners delete.
WORKSPACES = _profile(
    anon=ALL_DENIED,
    outsider=(HIDDEN, OK, HIDDEN, HIDDEN),
    member=(OK, OK, HIDDEN, HIDDEN),
    admin=(OK, OK, OK, HIDDEN),
    owner=ALL_OK,
    service_role=ALL_OK,
)
# Membership: members see the roster; admins/owners manage it (target row: a 'member').
MEMBERS = _profile(
    anon=ALL_DENIED,
    outsider=(HIDDEN, DENIED, HIDDEN, HIDDEN),
    member=(OK, DENIED, HIDDEN, HIDDEN),
    admin=ALL_OK,
    owner=ALL_OK,
    service_role=ALL_OK,
)
# Event store: members read; only the service role appends; nobody changes history.
EVENTS = _profile(
    anon=ALL_DENIED,
    outsider=(HIDDEN, DENIED, DENIED, DENIED),
    member=(OK, DENIED, DENIED, DENIED),
    admin=(OK, DENIED, DENIED, DENIED),
    owner=(OK, DENIED, DENIED, DENIED),
    service_role=(OK, OK, DENIED, DENIED),
)
# Ingestion ledger: members read; the service role writes.
LEDGER = _profile(
    anon=ALL_DENIED,
    outsider=(HIDDEN, DENIED, DENIED, DENIED),
    member=(OK, DENIED, DENIED, DENIED),
    admin=(OK, DENIED, DENIED, DENIED),
    owner=(OK, DENIED, DENIED, DENIED),
    service_role=ALL_OK,
)
# System tables: service role only.
SYSTEM = _profile(
    anon=ALL_DENIED,
    outsider=ALL_DENIED,
    member=ALL_DENIED,
    admin=ALL_DENIED,
    owner=ALL_DENIED,
    service_role=ALL_OK,
)

EXPECTED: dict[str, dict[str, dict[str, str]]] = {
    "core.workspaces": WORKSPACES,
    "core.members": MEMBERS,
    "core.founders": TENANT,
    "core.contacts": TENANT,
    "core.integrations": TENANT,
    "ops.events": EVENTS,
    "ops.ingestion_jobs": LEDGER,
    "ops.maintenance_runs": SYSTEM,
    "ops.slow_query_reports": SYSTEM,
    "ops.index_builds": SYSTEM,
    "ops.sync_cursors": TENANT,
    "ops.sync_seen": LEDGER,  # 005: what a full sync has seen (connectors write it)
    "comms.channels": TENANT,
    "comms.threads": TENANT,
    "comms.communications": TENANT,
    "comms.participants": TENANT,
    "comms.attachments": TENANT,
    "meetings.meetings": TENANT,
    "meetings.participants": TENANT,
    "meetings.transcripts": TENANT,
    "meetings.transcript_chunks": TENANT,
    "meetings.action_items": TENANT,
    "media.assets": TENANT,
    "media.media_chunks": TENANT,
    "media.asset_links": TENANT,
    "work.projects": TENANT,
    "work.work_items": TENANT,
    "work.comments": TENANT,
    "intel.insights": TENANT,
    "intel.insight_sources": TENANT,
    "intel.briefings": TENANT,
}
assert len(EXPECTED) == 31

# --------------------------------------------------------------------------------------
# Row builders: a valid new row per table for workspace `ws`, given that workspace's
# seeded parents in `ids` (table -> primary key). Listed parents-first.
# --------------------------------------------------------------------------------------

Row = dict[str, object]


def _u() -> str:
    return uuid.uuid4().hex[:12]


NOW = datetime(2025, 1, 1, tzinfo=UTC)

BUILDERS: dict[str, Callable[[uuid.UUID | None, dict[str, object]], Row]] = {
    "core.workspaces": lambda ws, ids: {"name": f"ws {_u()}"},
    "core.members": lambda ws, ids: {
        "workspace_id": ws,
        "user_id": uuid.uuid4(),
        "role": "member",
    },
    "core.founders": lambda ws, ids: {"workspace_id": ws, "display_name": "Founder"},
    "core.contacts": lambda ws, ids: {"workspace_id": ws, "primary_address": f"{_u()}@x.io"},
    "core.integrations": lambda ws, ids: {"workspace_id": ws, "provider": "gmail"},
    "ops.events": lambda ws, ids: {
        "workspace_id": ws,
        "aggregate_type": "communication",
        "aggregate_id": uuid.uuid4(),
        "version": 1,
        "event_type": "communication.ingested",
        "idempotency_key": _u(),
    },
    "ops.ingestion_jobs": lambda ws, ids: {
        "id": uuid.uuid4(),
        "workspace_id": ws,
        "kind": "communication",
        "source": "gmail",
        "external_id": _u(),
    },
    "ops.maintenance_runs": lambda ws, ids: {"trigger": "test"},
    "ops.slow_query_reports": lambda ws, ids: {
        "run_id": ids["ops.maintenance_runs"],
        "query": "SELECT 1",
    },
    "ops.index_builds": lambda ws, ids: {
        "index_name": f"core.idx_{_u()}",
        "table_name": "core.contacts",
        "rows_at_build": 0,
    },
    "ops.sync_cursors": lambda ws, ids: {
        "workspace_id": ws,
        "integration_id": ids["core.integrations"],
        "stream": _u(),
    },
    "ops.sync_seen": lambda ws, ids: {
        "source": "gmail",
        "sync_id": uuid.uuid4(),
        "kind": "communication",
        "external_id": _u(),
        "workspace_id": ws,
    },
    "media.assets": lambda ws, ids: {
        "workspace_id": ws,
        "source": "drive",
        "external_id": _u(),
        "kind": "audio",
        "content_hash": "h",
    },
    "comms.channels": lambda ws, ids: {
        "workspace_id": ws,
        "integration_id": ids["core.integrations"],
        "kind": "email",
        "name": "inbox",
    },
    "comms.threads": lambda ws, ids: {"workspace_id": ws, "source": "gmail", "thread_key": _u()},
    "comms.communications": lambda ws, ids: {
        "workspace_id": ws,
        "thread_id": ids["comms.threads"],
        "source": "gmail",
        "external_id": _u(),
        "channel": "email",
        "subject": "hello",
        "body": "quarterly numbers",
        "content_hash": "h",
    },
    "comms.participants": lambda ws, ids: {
        "workspace_id": ws,
        "communication_id": ids["comms.communications"],
        "contact_id": ids["core.contacts"],
        "role": "to",
        "address": "a@x.io",
    },
    "comms.attachments": lambda ws, ids: {
        "workspace_id": ws,
        "communication_id": ids["comms.communications"],
        "media_asset_id": ids["media.assets"],
        "filename": "a.pdf",
    },
    "meetings.meetings": lambda ws, ids: {
        "workspace_id": ws,
        "source": "zoom",
        "external_id": _u(),
        "starts_at": NOW,
        "ends_at": NOW,
    },
    "meetings.participants": lambda ws, ids: {
        "workspace_id": ws,
        "meeting_id": ids["meetings.meetings"],
        "contact_id": ids["core.contacts"],
        "name": "Ann",
    },
    "meetings.transcripts": lambda ws, ids: {
        "workspace_id": ws,
        "meeting_id": ids["meetings.meetings"],
        "source": "zoom",
        "external_id": _u(),
        "content_hash": "h",
    },
    "meetings.transcript_chunks": lambda ws, ids: {
        "workspace_id": ws,
        "transcript_id": ids["meetings.transcripts"],
        "meeting_id": ids["meetings.meetings"],
        "chunk_index": uuid.uuid4().int % 1_000_000,
        "content": "we agreed",
        "content_hash": "h",
        "token_count": 2,
    },
    "meetings.action_items": lambda ws, ids: {
        "workspace_id": ws,
        "meeting_id": ids["meetings.meetings"],
        "owner_contact_id": ids["core.contacts"],
        "description": "send deck",
    },
    "media.media_chunks": lambda ws, ids: {
        "workspace_id": ws,
        "asset_id": ids["media.assets"],
        "chunk_index": uuid.uuid4().int % 1_000_000,
        "content": "spoken words",
        "content_hash": "h",
        "token_count": 2,
    },
    "media.asset_links": lambda ws, ids: {
        "workspace_id": ws,
        "asset_id": ids["media.assets"],
        "meeting_id": ids["meetings.meetings"],
        "communication_id": ids["comms.communications"],
    },
    "work.projects": lambda ws, ids: {"workspace_id": ws, "name": "Fundraise"},
    "work.work_items": lambda ws, ids: {
        "workspace_id": ws,
        "project_id": ids["work.projects"],
        "assignee_contact_id": ids["core.contacts"],
        "title": "Prep deck",
        "priority": "high",
    },
    "work.comments": lambda ws, ids: {
        "workspace_id": ws,
        "work_item_id": ids["work.work_items"],
        "body": "on it",
    },
    "intel.insights": lambda ws, ids: {
        "workspace_id": ws,
        "insight_type": "risk",
        "title": "Runway",
        "body": "9 months",
        "confidence": 0.5,
    },
    "intel.insight_sources": lambda ws, ids: {
        "workspace_id": ws,
        "insight_id": ids["intel.insights"],
        "source_type": "communication",
        "source_id": uuid.uuid4(),
    },
    "intel.briefings": lambda ws, ids: {
        "workspace_id": ws,
        "founder_id": ids["core.founders"],
        "period_start": NOW,
        "period_end": NOW,
        "content": "weekly",
    },
}
assert set(BUILDERS) == set(EXPECTED)
SYSTEM_TABLES = {"ops.maintenance_runs", "ops.slow_query_reports", "ops.index_builds"}
PK = {"ops.index_builds": "index_name"}
# Column for the no-op UPDATE (SET c = c).
TOUCH = {"ops.events": "payload"}


def insert_sql(table: str, row: Row) -> tuple[str, list[object]]:
    cols = list(row)
    placeholders = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({placeholders})"
    return sql, [row[c] for c in cols]


async def insert(conn: asyncpg.Connection, table: str, row: Row) -> object:
    sql, args = insert_sql(table, row)
    return await conn.fetchval(f"{sql} RETURNING {PK.get(table, 'id')}", *args)


async def seed_workspace(conn: asyncpg.Connection, ws: uuid.UUID, creator: uuid.UUID) -> dict:
    """One row in every tenant table of `ws` (as superuser)."""
    ids: dict[str, object] = {"core.workspaces": ws}
    await conn.execute(
        "INSERT INTO core.workspaces (id, name, created_by) VALUES ($1, $2, $3)",
        ws,
        f"workspace {ws}",
        creator,
    )
    for table, build in BUILDERS.items():
        if table in SYSTEM_TABLES or table == "core.workspaces":
            continue
        if table == "core.members":
            continue  # memberships are seeded explicitly
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            continue  # a later migration's table, in a database not yet upgraded (test_upgrade)
        ids[table] = await insert(conn, table, build(ws, ids))
    return ids


def apply(pg, dsn: str) -> None:
    for f in UP:
        subprocess.run(
            [str(pg.psql_path()), dsn, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(f)],
            check=True,
            capture_output=True,
        )


@pytest.fixture(scope="module")
def rls_dsn(pg):
    name = f"rls_{uuid.uuid4().hex[:8]}"
    run_sql(pg.dsn(), f'CREATE DATABASE "{name}"')
    dsn = pg.dsn(name)
    apply(pg, dsn)
    yield dsn
    run_sql(pg.dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(rls_dsn):
    """Superuser connection plus the seeded ids of W1 and W2."""
    conn = await asyncpg.connect(rls_dsn)
    w1 = await seed_workspace(conn, W1, OWNER)
    w2 = await seed_workspace(conn, W2, OUTSIDER)
    for ws, user, role in [
        (W1, OWNER, "owner"),
        (W1, ADMIN, "admin"),
        (W1, MEMBER, "member"),
        (W1, VIEWER, "viewer"),
        (W2, OUTSIDER, "owner"),
    ]:
        mid = await conn.fetchval(
            "INSERT INTO core.members (workspace_id, user_id, role) VALUES ($1, $2, $3)"
            " RETURNING id",
            ws,
            user,
            role,
        )
        if user == MEMBER:
            w1["core.members"] = mid
        if user == OUTSIDER:
            w2["core.members"] = mid
    system: dict[str, object] = {}
    for table in ["ops.maintenance_runs", "ops.slow_query_reports", "ops.index_builds"]:
        system[table] = await insert(conn, table, BUILDERS[table](None, system))
    w1.update(system)
    w2.update(system)
    try:
        yield conn, w1, w2
    finally:
        await conn.close()


USERS = {"outsider": OUTSIDER, "member": MEMBER, "admin": ADMIN, "owner": OWNER}


async def become(conn: asyncpg.Connection, who: str) -> None:
    """SET LOCAL ROLE + JWT claims, as PostgREST does for a request."""
    if who in USERS:
        role, claims = "authenticated", {"sub": str(USERS[who]), "role": "authenticated"}
    elif who == "viewer":
        role, claims = "authenticated", {"sub": str(VIEWER), "role": "authenticated"}
    else:
        role, claims = who, {"role": who}
    await conn.execute(
        f"SET LOCAL ROLE {role}; "
        f"SELECT set_config('request.jwt.claims', '{json.dumps(claims)}', true)"
    )


async def attempt(conn, table: str, op: str, ids: dict, ws: uuid.UUID) -> str:
    pk = PK.get(table, "id")
    key = ids[table]
    try:
        if op == "select":
            n = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {pk} = $1", key)
            return OK if n == 1 else HIDDEN
        if op == "insert":
            sql, args = insert_sql(table, BUILDERS[table](ws, ids))
            status = await conn.execute(sql, *args)
            assert status == "INSERT 0 1", status
            return OK
        col = TOUCH.get(table, "created_at")
        if op == "update":
            status = await conn.execute(f"UPDATE {table} SET {col} = {col} WHERE {pk} = $1", key)
        else:
            status = await conn.execute(f"DELETE FROM {table} WHERE {pk} = $1", key)
        n = int(status.split()[-1])
        assert n in (0, 1), status
        return OK if n == 1 else HIDDEN
    except (asyncpg.InsufficientPrivilegeError, asyncpg.RaiseError):
        return DENIED


CASES = [(t, r, o) for t in EXPECTED for r in ROLES for o in OPS]
assert len(CASES) == 744  # 31 tables x 6 roles x 4 operations


@pytest.mark.parametrize(("table", "role", "op"), CASES)
async def test_rls_matrix(world, table, role, op):
    conn, w1, _ = world
    tr = conn.transaction()
    await tr.start()
    try:
        await become(conn, role)
        got = await attempt(conn, table, op, w1, W1)
    finally:
        await tr.rollback()
    assert got == EXPECTED[table][role][op], f"{role} {op} on {table}"


@pytest.mark.parametrize("table", [t for t, p in EXPECTED.items() if p is TENANT])
async def test_viewer_reads_but_cannot_write(world, table):
    conn, w1, _ = world
    got = {}
    for op in OPS:
        tr = conn.transaction()
        await tr.start()
        try:
            await become(conn, "viewer")
            got[op] = await attempt(conn, table, op, w1, W1)
        finally:
            await tr.rollback()
    assert got == {"select": OK, "insert": DENIED, "update": HIDDEN, "delete": HIDDEN}


# --------------------------------------------------------------------------------------
# Cross-workspace isolation
# --------------------------------------------------------------------------------------

CHILD_TABLES = [
    t
    for t in EXPECTED
    if EXPECTED[t] is TENANT and t not in {"core.founders", "core.contacts", "core.integrations"}
]


async def in_tx(conn, who: str, fn):
    tr = conn.transaction()
    await tr.start()
    try:
        if who != "postgres":
            await become(conn, who)
        return await fn()
    finally:
        await tr.rollback()


@pytest.mark.parametrize("table", [t for t, p in EXPECTED.items() if p is TENANT])
async def test_admin_cannot_read_other_workspace(world, table):
    conn, _, w2 = world
    n = await in_tx(
        conn,
        "admin",
        lambda: conn.fetchval(f"SELECT count(*) FROM {table} WHERE id = $1", w2[table]),
    )
    assert n == 0
    n = await in_tx(conn, "admin", lambda: conn.fetchval(f"SELECT count(*) FROM {table}"))
    assert n >= 1  # sees its own workspace's row


@pytest.mark.parametrize("table", [t for t, p in EXPECTED.items() if p is TENANT])
async def test_admin_cannot_insert_into_other_workspace(world, table):
    conn, _, w2 = world
    sql, args = insert_sql(table, BUILDERS[table](W2, w2))
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await in_tx(conn, "admin", lambda: conn.execute(sql, *args))


@pytest.mark.parametrize("table", [t for t, p in EXPECTED.items() if p is TENANT])
async def test_admin_cannot_move_row_to_other_workspace(world, table):
    conn, w1, _ = world
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await in_tx(
            conn,
            "admin",
            lambda: conn.execute(
                f"UPDATE {table} SET workspace_id = $1 WHERE id = $2", W2, w1[table]
            ),
        )


async def test_admin_cannot_touch_other_workspace_or_its_members(world):
    conn, _, w2 = world
    for sql, args in [
        ("UPDATE core.workspaces SET name = 'x' WHERE id = $1", [W2]),
        ("DELETE FROM core.members WHERE id = $1", [w2["core.members"]]),
    ]:
        status = await in_tx(conn, "admin", lambda s=sql, a=args: conn.execute(s, *a))
        assert status.endswith(" 0")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await in_tx(
            conn,
            "admin",
            lambda: conn.execute(
                "INSERT INTO core.members (workspace_id, user_id, role) VALUES ($1, $2, 'admin')",
                W2,
                ADMIN,
            ),
        )


async def test_admin_cannot_grant_or_change_owner(world):
    conn, _, _ = world
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await in_tx(
            conn,
            "admin",
            lambda: conn.execute(
                "INSERT INTO core.members (workspace_id, user_id, role) VALUES ($1, $2, 'owner')",
                W1,
                uuid.uuid4(),
            ),
        )
    status = await in_tx(
        conn,
        "admin",
        lambda: conn.execute(
            "DELETE FROM core.members WHERE workspace_id = $1 AND user_id = $2", W1, OWNER
        ),
    )
    assert status == "DELETE 0"
    status = await in_tx(
        conn,
        "owner",
        lambda: conn.execute(
            "UPDATE core.members SET role = 'owner' WHERE workspace_id = $1 AND user_id = $2",
            W1,
            ADMIN,
        ),
    )
    assert status == "UPDATE 1"


@pytest.mark.parametrize("who", ["admin", "service_role", "postgres"])
@pytest.mark.parametrize(
    ("child", "parents"),
    [
        ("comms.participants", ["comms.communications"]),
        ("comms.attachments", ["comms.communications"]),
        ("meetings.transcript_chunks", ["meetings.transcripts", "meetings.meetings"]),
        ("meetings.transcripts", ["meetings.meetings"]),
        ("media.media_chunks", ["media.assets"]),
        ("work.comments", ["work.work_items"]),
        ("intel.insight_sources", ["intel.insights"]),
        ("ops.sync_cursors", ["core.integrations"]),
    ],
)
async def test_child_cannot_reference_other_workspace_parent(world, who, child, parents):
    """A W1 row pointing at a W2 parent: refused by the composite FK, whoever asks."""
    conn, w1, w2 = world
    ids = dict(w1)
    for parent in parents:
        ids[parent] = w2[parent]
    sql, args = insert_sql(child, BUILDERS[child](W1, ids))
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await in_tx(conn, who, lambda: conn.execute(sql, *args))
    # control: the same row with W1's own parents is accepted
    sql, args = insert_sql(child, BUILDERS[child](W1, w1))
    await in_tx(conn, who, lambda: conn.execute(sql, *args))


async def test_anon_sees_nothing_even_through_views(world):
    conn, _, _ = world
    for view in ["ops.ingestion_status", "comms.thread_summaries", "intel.workspace_activity"]:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await in_tx(conn, "anon", lambda v=view: conn.fetch(f"SELECT * FROM {v}"))


@pytest.mark.parametrize(
    ("view", "column"),
    [
        ("ops.ingestion_status", "workspace_id"),
        ("comms.thread_summaries", "workspace_id"),
        ("intel.workspace_activity", "workspace_id"),
    ],
)
async def test_views_apply_rls_of_the_caller(world, view, column):
    conn, _, _ = world
    rows = await in_tx(conn, "member", lambda: conn.fetch(f"SELECT {column} FROM {view}"))
    assert {r[0] for r in rows} == {W1}
    rows = await in_tx(conn, "postgres", lambda: conn.fetch(f"SELECT {column} FROM {view}"))
    assert {W1, W2} <= {r[0] for r in rows}


# --------------------------------------------------------------------------------------
# Policy performance: the helper runs once per statement, not once per row
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "stmt"),
    [
        ("member", "SELECT * FROM comms.communications"),
        ("member", "SELECT * FROM meetings.transcript_chunks WHERE token_count > 0"),
        ("admin", "UPDATE core.contacts SET notes = 'x'"),
        ("admin", "DELETE FROM work.work_items"),
    ],
)
async def test_policies_use_uncorrelated_subplans(world, who, stmt):
    conn, _, _ = world
    plan = await in_tx(conn, who, lambda: conn.fetch(f"EXPLAIN (VERBOSE) {stmt}"))
    text = "\n".join(r[0] for r in plan)
    assert "hashed SubPlan" in text or "InitPlan" in text, text
    # the helper is not called per row of the scanned table
    assert "auth.user_workspaces()" in text or "user_workspaces" in text
