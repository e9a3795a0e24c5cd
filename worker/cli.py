"""``cos-worker``: migrate, demo, enqueue, status, search, maintenance, erase.

Every command resolves servers the same way as the worker: ``DATABASE_URL`` /
``REDIS_URL`` when set, otherwise the embedded servers under ``DATA_DIR`` (started on
demand and stopped again when the command started them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from worker.core.log import configure_logging
from worker.core.payloads import PayloadError
from worker.core.settings import Settings, get_settings
from worker.db.migrate import MigrationError, Migrator
from worker.db.search import KINDS, MODES
from worker.servers.services import Services

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


async def _migrate(settings: Settings, services: Services, args: argparse.Namespace) -> int:
    migrator = Migrator(await services.ensure_database(), settings.migrations_dir)
    if args.action == "up":
        applied = await migrator.up()
        console.print(f"applied: {', '.join(applied) if applied else 'nothing (up to date)'}")
    elif args.action == "down":
        rolled = await migrator.down(args.to)
        console.print(f"rolled back: {', '.join(rolled) if rolled else 'nothing'}")
    states = await migrator.status()
    for st in states:
        console.print(f"{st.version}  {st.name:<28} {st.state:<12} {st.applied_at or ''}")
    return 1 if any(s.state in ("drifted", "missing-file") for s in states) else 0


async def _demo(settings: Settings, services: Services, args: argparse.Namespace) -> int:
    from worker.demo import run_demo

    if "LOG_LEVEL" not in os.environ:  # keep the demo's own report readable
        settings = settings.model_copy(update={"log_level": "WARNING"})
        configure_logging(settings)
    await services.close()
    await run_demo(settings, console)
    return 0


async def _enqueue(settings: Settings, services: Services, args: argparse.Namespace) -> int:
    from worker.db.pool import create_pool
    from worker.queue import client

    path = Path(args.file)
    text = await asyncio.to_thread(path.read_text, encoding="utf-8", errors="replace")
    lines = text.splitlines()
    pool = await create_pool(settings, await services.ensure_database(), min_size=1, max_size=2)
    redis = await client.connect(await services.ensure_redis())
    ok, bad = 0, []
    page: list[tuple[int, Any]] = []  # (line number, parsed JSON)

    async def flush() -> None:
        nonlocal ok
        results = await client.enqueue_many(redis, [p for _, p in page], db=pool, settings=settings)
        for (number, _), result in zip(page, results, strict=True):
            if isinstance(result, PayloadError):
                bad.append((number, result.field, result.reason))
            else:
                ok += 1
        progress.advance(task, len(page))
        page.clear()

    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("enqueue", total=len(lines))
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    progress.advance(task)
                    continue
                try:
                    page.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    bad.append((number, "line", f"not JSON: {exc.msg}"))
                    progress.advance(task)
                if len(page) >= settings.enqueue_page_items:
                    await flush()
            if page:
                await flush()
    finally:
        await redis.aclose()
        await pool.close()
    for number, field, reason in sorted(bad):
        console.print(f"[red]line {number}[/]: {field}: {reason}")
    console.print(f"enqueued {ok}, invalid {len(bad)}")
    return 1 if bad else 0


async def _status(settings: Settings, services: Services, args: argparse.Namespace) -> int:
    from worker.db.inspect import ledger_status, queued_by_workspace
    from worker.db.pool import connect
    from worker.queue import client, fleet

    redis = await client.connect(await services.ensure_redis())
    conn = await connect(settings, await services.ensure_database())
    try:
        queue = await client.queue_status(redis, settings.queue_name)
        workers = fleet.summarize(await fleet.read_fleet(redis, settings.queue_name))
        counts, oldest = await ledger_status(conn)
        waiting = await queued_by_workspace(conn)
    finally:
        await redis.aclose()
        await conn.close()
    now = datetime.now(UTC)
    age = (now - oldest).total_seconds() if oldest else None
    report = {
        "queue_depth": queue.depth,
        "in_flight": queue.running,
        "handed_off": queue.handed_off,
        **{s: counts.get(s, 0) for s in ("queued", "running", "done", "failed", "skipped")},
        "oldest_queued_age_s": round(age, 1) if age is not None else None,
        "workers_alive": len(workers["workers"]),
    }
    detail = {
        **workers,
        "queued_by_workspace": [
            {
                "workspace_id": str(ws) if ws else None,
                "queued": n,
                "oldest_queued_age_s": round((now - at).total_seconds(), 1),
            }
            for ws, n, at in waiting
        ],
    }
    if args.json:
        print(json.dumps({**report, **detail}))
        return 0
    for key, value in report.items():
        console.print(f"{key:<22} {value}")
    for name, b in detail["budgets"].items():
        console.print(
            f"budget {name}: {b['tokens_per_minute']:,} of {b['limit']:,} tokens/min "
            f"({b['workers']} workers), {b['rate_limited_last_window']} answered 429",
            markup=False,
        )
    for w in detail["workers"]:
        console.print(
            f"worker {w['id']}: {w['in_flight']} in flight, {w['tokens_per_minute']:,} "
            f"tokens/min, {w['rate_limited_last_window']} 429s"
            + (" (budget unreachable: local share)" if w["budget_degraded"] else ""),
            markup=False,
        )
    for q in detail["queued_by_workspace"]:
        console.print(
            f"workspace {q['workspace_id']}: {q['queued']} queued, oldest "
            f"{q['oldest_queued_age_s']} s",
            markup=False,
        )
    return 0


async def _search(settings: Settings, services: Services, args: argparse.Namespace) -> int:
    import asyncpg

    from worker.db.pool import create_pool
    from worker.db.search import Filters, describe_place, search, snippet

    filters = Filters(
        kinds=args.kind,
        sources=args.source,
        since=args.since,
        until=args.until,
        contact_id=args.contact,
    )
    pool = await create_pool(settings, await services.ensure_database(), min_size=1, max_size=1)
    try:
        hits = await search(
            settings,
            pool,
            args.workspace,
            args.text,
            args.limit,
            mode=args.mode,
            filters=filters,
        )
    except asyncpg.DataError as exc:  # the function names the argument and the reason
        err_console.print(f"[red]search:[/] {escape(str(exc))}", highlight=False)
        return 2
    finally:
        await pool.close()
    if args.json:
        print(json.dumps(hits, default=str))
        return 0
    for hit in hits:
        when = f" {hit['start_ms']}-{hit['end_ms']}ms" if hit.get("start_ms") is not None else ""
        who = f" {hit['speaker']}" if hit.get("speaker") else ""
        where = describe_place(hit)
        rank = f"{hit['distance']:.3f}" if hit.get("distance") is not None else "text"
        console.print(
            f"{rank} ({hit['kind']}{who}{when}{where}) {snippet(hit['content'], args.text, 300)}",
            markup=False,
        )
    return 0


def _timestamp(value: str) -> datetime:
    """An ISO 8601 time for --since/--until; a date alone is midnight UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def _maintenance(settings: Settings, services: Services, args: argparse.Namespace) -> int:
    from worker.maintenance import run_maintenance

    report = await run_maintenance(
        settings,
        await services.ensure_database(),
        dry_run=args.dry_run,
        force_analyze=args.force_analyze,
        trigger="manual",
    )
    data = report.to_dict()
    if args.json:
        print(json.dumps(data, default=str))
    else:
        console.print_json(json.dumps(data, default=str))
    return 0 if data.get("status") in ("succeeded", "skipped") else 1


async def _erase(settings: Settings, services: Services, args: argparse.Namespace) -> int:
    from worker.db.erase import Scope
    from worker.erasure import erase

    scope = Scope(UUID(args.workspace), args.source)
    report = await erase(
        settings, await services.ensure_database(), await services.ensure_redis(), scope
    )
    data = report.to_dict()
    if args.json:
        print(json.dumps(data))
        return 0 if report.complete else 1
    what = f"source {scope.source!r} of " if scope.source else ""
    console.print(f"erased {what}workspace {scope.workspace_id} in {report.passes} pass(es)")
    for table, n in data["deleted"].items():
        console.print(f"  {table:<28} {n:>9} rows")
    r = report.redis
    console.print(f"  redis: {r.jobs} queued jobs, {r.items} items of page jobs, {r.keys} keys")
    if not report.complete:
        left = ", ".join(f"{t} {n}" for t, n in report.remaining.items())
        console.print(
            f"[yellow]not complete[/]: {left or 'none left'}; {r.in_flight} job(s) in flight. "
            "Stop the connector and run the same command again."
        )
        return 1
    console.print("nothing of the scope is left outside the event store (ops.events)")
    return 0


COMMANDS: dict[str, Callable[[Settings, Services, argparse.Namespace], Awaitable[int]]] = {
    "migrate": _migrate,
    "demo": _demo,
    "enqueue": _enqueue,
    "status": _status,
    "search": _search,
    "maintenance": _maintenance,
    "erase": _erase,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cos-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    mig = sub.add_parser("migrate", help="apply / roll back / show schema migrations")
    mig.add_argument("action", choices=["status", "up", "down"])
    mig.add_argument("--to", default="0", help="down: keep migrations up to this version")
    sub.add_parser("demo", help="embedded servers + sample corpus + worker + search")
    enq = sub.add_parser("enqueue", help="enqueue payloads from a JSONL file")
    enq.add_argument("file")
    sub.add_parser(
        "live-lane",
        help="a worker that takes only live items (fresh e-mail ahead of backfills; "
        "docs/fleet.md); run beside the `arq worker.main.WorkerSettings` workers",
    )
    st = sub.add_parser("status", help="queue depth, in flight, ledger counts")
    st.add_argument("--json", action="store_true")
    se = sub.add_parser(
        "search", help="top chunks: vector, full text or both (public.search_memory)"
    )
    se.add_argument("text")
    se.add_argument("--workspace", required=True, type=UUID)
    se.add_argument("--limit", type=int, default=5, help="1-100")
    se.add_argument("--mode", choices=MODES, default="hybrid")
    se.add_argument("--kind", action="append", choices=KINDS, help="repeatable")
    se.add_argument("--source", action="append", help="connector source; repeatable")
    se.add_argument("--since", type=_timestamp, help="ISO 8601, inclusive")
    se.add_argument("--until", type=_timestamp, help="ISO 8601, exclusive")
    se.add_argument("--contact", type=UUID, help="a contact who took part")
    se.add_argument("--json", action="store_true")
    mt = sub.add_parser("maintenance", help="ANALYZE / REINDEX / slow-query report now")
    mt.add_argument("--dry-run", action="store_true")
    mt.add_argument("--json", action="store_true")
    mt.add_argument("--force-analyze", action="store_true")
    er = sub.add_parser("erase", help="erase a workspace, or one source of it, everywhere")
    er.add_argument("--workspace", required=True)
    er.add_argument("--source", help="only this source (a disconnected integration)")
    er.add_argument("--json", action="store_true")
    return parser


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    services = Services(settings)
    try:
        return await COMMANDS[args.command](settings, services, args)
    finally:
        await services.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings)
    if args.command == "live-lane":
        from worker.queue.main import run_live_lane

        run_live_lane(settings)  # arq's own loop and signal handling, as `arq worker...`
        return 0
    started = time.perf_counter()
    try:
        code = asyncio.run(_run(args, settings))
    except MigrationError as exc:
        err_console.print(f"[red]migration error:[/] {exc}")
        code = 2
    except KeyboardInterrupt:
        code = 130
    if args.command not in ("status", "search"):
        # (--json: stdout is the JSON document and nothing else; the timing goes to stderr)
        out = err_console if getattr(args, "json", False) else console
        out.print(
            f"[dim]{args.command} finished in {time.perf_counter() - started:.1f}s[/]",
            highlight=False,
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
