"""What ledger payload retention gives back: ``ops.ingestion_jobs`` before and after.

    python -m bench.ledger_retention [--size small|medium|large] [--mail small|medium|none]
                                     [--out DIR]

It starts the servers of ``bench.run`` (embedded PostgreSQL 18, fsync on; redis-server;
the OpenAI-compatible stand-in), ingests the bench corpus (``bench.corpus``: emails,
meeting and media transcripts) and the founder's mailbox of ``bench.mail_corpus`` (raw
MIME, attachments inline: the payloads that weigh) through one real worker process, into
a fresh database. Then every job is aged past the retention (``finished_at`` moved 8 days
back) and ``VACUUM`` run, so "before" has no dead rows of its own, and the table is
measured (``pg_total_relation_size``: heap + TOAST + indexes, each also on its own):

1. **before**: every payload held, as autovacuum keeps the table (each job's row was
   written three to four times: queued, running, done; the dead versions' space reusable);
2. **before, compacted**: the same after ``VACUUM FULL``: the rows alone, no free space;
3. **pruned**: after the maintenance pass (``run_maintenance``, the retention step with its
   default batch size), before any vacuum: the old row versions are still there;
4. **vacuumed**: after a plain ``VACUUM`` (what autovacuum does): dead space reusable,
   files truncated only where their tail is empty;
5. **compacted**: after ``VACUUM FULL`` (never run by the maintenance: it blocks writes),
   the floor: what the table needs without the payloads.

Output: ``DIR/ledger_retention_<size>.json`` (default ``bench/results``), and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench import corpus as corpus_mod
from bench import run as brun

SIZES_SQL = """
SELECT pg_total_relation_size(c.oid)                               AS total,
       pg_relation_size(c.oid)                                     AS heap,
       coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast,
       pg_indexes_size(c.oid)                                      AS indexes,
       (SELECT count(*) FROM ops.ingestion_jobs)                   AS rows,
       (SELECT count(*) FROM ops.ingestion_jobs WHERE payload IS NOT NULL) AS with_payload,
       (SELECT coalesce(sum(pg_column_size(payload)), 0) FROM ops.ingestion_jobs) AS payload_stored,
       (SELECT coalesce(sum(octet_length(payload::text)), 0) FROM ops.ingestion_jobs)
                                                                   AS payload_json
FROM pg_class c WHERE c.oid = 'ops.ingestion_jobs'::regclass
"""
AGE = "UPDATE ops.ingestion_jobs SET finished_at = now() - interval '8 days'"


async def sizes(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        return {k: int(v) for k, v in dict(await conn.fetchrow(SIZES_SQL)).items()}
    finally:
        await conn.close()


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def payloads(size: str, mail: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    items = corpus_mod.build(size, brun.WS).payloads
    counts = {"corpus_items": len(items), "mail_items": 0}
    if mail != "none":
        from bench import mail_corpus

        mails = mail_corpus.build(mail_corpus.SIZES[mail])
        items += [mail_corpus.payload(m) for m in mails]
        counts["mail_items"] = len(mails)
    return items, counts


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    from worker.core.settings import Settings
    from worker.maintenance import run_maintenance

    items, counts = payloads(args.size, args.mail)
    results: dict[str, Any] = {
        "meta": {
            "size": args.size,
            "mail": args.mail,
            **counts,
            "python": platform.python_version(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": " ".join(["python -m bench.ledger_retention", *sys.argv[1:]]),
            "postgres": "embedded 18 + pgvector, fsync=on, synchronous_commit=on",
        }
    }
    env = brun.Env.start()
    try:
        await env._migrate_template()
        dsn = await env.fresh_db()
        brun.log(f"ingesting {len(items)} items")
        run = await brun.ingest(env, dsn, items, tag="retention")
        results["ingest"] = {"seconds": round(run.seconds, 1), "ledger": run.ledger}
        await execute(dsn, AGE)
        await execute(dsn, "VACUUM (ANALYZE) ops.ingestion_jobs")
        results["before"] = await sizes(dsn)
        await execute(dsn, "VACUUM FULL ops.ingestion_jobs")
        results["before_compacted"] = await sizes(dsn)
        brun.log("maintenance pass")
        settings = Settings(database_url=dsn, redis_url=env.redis.url, log_format="json")
        t0 = time.monotonic()
        report = await run_maintenance(settings, dsn)
        [action] = report.actions_of("ledger_retention")
        results["pass"] = {
            "status": report.status,
            "seconds": round(time.monotonic() - t0, 2),
            "retention_ms": action.duration_ms,
            **action.details,
        }
        results["pruned"] = await sizes(dsn)
        await execute(dsn, "VACUUM ops.ingestion_jobs")
        results["vacuumed"] = await sizes(dsn)
        await execute(dsn, "VACUUM FULL ops.ingestion_jobs")
        results["compacted"] = await sizes(dsn)
        await env.drop_db(dsn)
    finally:
        env.stop()
    return results


def mb(n: int) -> str:
    return f"{n / 1024 / 1024:.2f}"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| state | total MB | heap MB | TOAST MB | indexes MB | rows with payload |",
        "|---|---|---|---|---|---|",
    ]
    for state in ("before", "before_compacted", "pruned", "vacuumed", "compacted"):
        s = results[state]
        lines.append(
            f"| {state} | {mb(s['total'])} | {mb(s['heap'])} | {mb(s['toast'])} "
            f"| {mb(s['indexes'])} | {s['with_payload']} / {s['rows']} |"
        )
    p = results["pass"]
    b = results["before"]
    lines.append("")
    lines.append(
        f"payloads: {mb(b['payload_json'])} MB as JSON, {mb(b['payload_stored'])} MB stored; "
        f"pass dropped {p['rows']} in {p['batches']} batch(es), {p['retention_ms']} ms"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Ledger payload retention: table size before/after")
    p.add_argument("--size", choices=sorted(corpus_mod.SIZES), default="medium")
    p.add_argument("--mail", choices=["small", "medium", "none"], default="small")
    p.add_argument("--out", type=Path, default=brun.REPO_ROOT / "bench" / "results")
    args = p.parse_args(argv)
    results = asyncio.run(amain(args))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ledger_retention_{args.size}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
