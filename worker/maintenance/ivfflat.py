"""IVFFlat lists that follow the table: the sizing rule, and re-creating an index with it.

Why its own piece: an IVFFlat index (migration 007's binary-quantized ones) is a set of
``lists`` centres computed from the rows there when it was built. ``REINDEX`` recomputes
the centres but keeps their number, and on a fresh database that number is 1 (the
migration ran on empty tables): every search then reads every row's code. So this job
re-creates an index whose lists are off by ``LISTS_SLACK`` or more for its rows:
``CREATE INDEX CONCURRENTLY`` of the same definition with the new lists beside the old
one (reads and writes go on), then, in one short transaction, ``DROP INDEX`` the old and
rename the new into its place. The rule itself (``ops.ivfflat_lists(rows)``, and
``ops.ivfflat_probes(lists)`` for the probe) lives in the database, written once for the
migration, ``search_memory`` and this job.

If the build is interrupted it leaves an INVALID ``<name>_ccnew`` index, which the
job's leftover cleanup (:func:`worker.maintenance.reindex.invalid_indexes`) removes like
an interrupted ``REINDEX CONCURRENTLY``'s.
"""

from __future__ import annotations

import asyncpg

from worker.db.queries import Q

#: re-create when the lists are this many times too few for the rows (rows per list past
#: 2,000: p50 5.3 ms at 2,000 and 11.2 ms at 3,000 rows a list against 2.9-3.2 re-created)
LISTS_SLACK = 2.0
#: ... or this many times too many (under 250 rows a list): extra lists cost no recall at
#: 10 probes (0.944-0.966 at 167-500 rows a list), so deletes alone do not re-create
LISTS_SLACK_LOW = 4.0


def lists_option(reloptions: list[str] | None) -> int | None:
    """The ``lists`` of an IVFFlat index's options; None if not set (pgvector's 100)."""
    for option in reloptions or []:
        key, _, value = option.partition("=")
        if key == "lists" and value.isdigit():
            return int(value)
    return None


def lists_off(lists: int | None, target: int | None) -> str | None:
    """Why ``lists`` should be ``target`` (the rule's lists for the rows now), or None
    while within ``LISTS_SLACK`` (too few) / ``LISTS_SLACK_LOW`` (too many) of it, or when
    either is unknown (bench/INDEX.md, Drift: the binary-quantized IVFFlat)."""
    if lists is None or target is None or lists <= 0 or target <= 0:
        return None
    if target / lists < LISTS_SLACK and lists / target < LISTS_SLACK_LOW:
        return None
    return f"{lists} lists where its rows call for {target} (ops.ivfflat_lists)"


async def target_lists(conn: asyncpg.Connection, rows: int) -> int | None:
    """``ops.ivfflat_lists(rows)``; None where migration 007's rule is not installed."""
    try:
        value = await conn.fetchval(Q.ivfflat_lists_for, rows)
    except asyncpg.UndefinedFunctionError:
        return None
    return None if value is None else int(value)


async def probes(conn: asyncpg.Connection, lists: int | None) -> int:
    """``ops.ivfflat_probes(lists)``: what search probes; 10 where the rule is missing."""
    try:
        value = await conn.fetchval(Q.ivfflat_probes_for, lists or 1)
    except asyncpg.UndefinedFunctionError:
        return 10
    return int(value)


async def recreate(
    conn: asyncpg.Connection, qualified: str, name: str, lists: int, table: str
) -> None:
    """Replace index ``qualified`` (quoted; ``name`` its bare name) by a build of the same
    definition with ``lists`` lists, then ANALYZE ``table`` (``schema.table``): the old
    index's expression statistics went with it. ``conn`` must not be in a transaction."""
    replacement = f"{name}_ccnew"[:63]
    ddl = await conn.fetchval(Q.ivfflat_replacement_ddl, qualified, replacement, lists)
    await conn.execute(ddl)
    schema = qualified.rsplit(".", 1)[0]
    quote = await conn.fetchval(Q.quote_ident, replacement)
    async with conn.transaction():
        await conn.execute(Q.ivfflat_swap_drop.format(index=qualified))
        await conn.execute(
            Q.ivfflat_swap_rename.format(
                replacement=f"{schema}.{quote}", name=await conn.fetchval(Q.quote_ident, name)
            )
        )
    parts = [await conn.fetchval(Q.quote_ident, part) for part in table.split(".", 1)]
    await conn.execute(Q.analyze_table.format(table=".".join(parts)))
