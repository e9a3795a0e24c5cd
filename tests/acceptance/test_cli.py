"""The command line as a person uses it: real subprocesses, real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import communication, new_workspace, run_worker_burst
from worker.core.settings import REPO_ROOT, Settings

CLEAN_ENV_KEYS = ("DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "QUEUE_NAME")


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV_KEYS}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        cwd=REPO_ROOT,
        text=True,
        capture_output=True,
        env={**base, **(env or {})},
        timeout=timeout,
    )


@pytest.mark.slow
def test_demo_runs_on_embedded_defaults(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = cli("demo", env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for line in ("communications", "transcript chunks", "media chunks", "contacts embedded"):
        assert line in out
    counts = {}
    for row in out.splitlines():
        parts = [p.strip() for p in row.strip("│┃ ").split("│")]
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts["communications"] == 5 and counts["jobs done"] == 7, out
    assert counts["attachments"] == 1 and counts["media assets"] == 2, out
    assert counts["contacts embedded"] == counts["contacts"] > 0
    assert counts["insights embedded"] == 1
    assert "search 'what option pool did we propose to Northwind?'" in out
    assert "option pool" in out.split("search '", 1)[1]
    # a sentence only inside the PDF attached to the HTML reply, and the message it came with
    document = out.split("search 'when do drag-along rights", 1)[1]
    assert "65% of the Series A" in document
    assert "in an attachment of 'Re: Series A term sheet: next steps'" in document
    # the servers it started were stopped again
    assert not (data_dir / "postgres" / "pgdata" / "postmaster.pid").exists()
    # and a second run reuses the data: nothing is embedded twice
    again = cli("demo", env={"DATA_DIR": str(data_dir)})
    assert again.returncode == 0, again.stderr
    assert "tokens embedded (this run) │    0" in again.stdout


async def test_enqueue_status_and_search(
    migrated_dsn: str, redis_server: Any, tmp_path: Path
) -> None:
    ws = await new_workspace(migrated_dsn)
    queue = f"cli:{uuid.uuid4().hex[:8]}"
    env = {
        "DATABASE_URL": migrated_dsn,
        "REDIS_URL": redis_server.url,
        "QUEUE_NAME": queue,
        "EMBEDDING_PROVIDER": "local",
    }
    lines = [
        json.dumps(communication(ws, "cli-1", "The quarterly board deck is due on Monday.")),
        "{not json",
        json.dumps({**communication(ws, "cli-2", "x"), "channel": "pigeon"}),
        json.dumps(communication(ws, "cli-3", "Hiring plan: two engineers in Q1.")),
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = cli("enqueue", str(path), env=env)
    assert result.returncode == 1  # some lines were invalid
    assert "line 2: line: not JSON" in result.stdout
    assert "line 3: channel:" in result.stdout
    assert "enqueued 2, invalid 2" in result.stdout

    status = cli("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    # one arq job: the two new items travel as one page job (the ledger counts items)
    assert report["queue_depth"] == 1 and report["in_flight"] == 0
    assert report["queued"] >= 2 and report["oldest_queued_age_s"] is not None

    settings = Settings(
        database_url=migrated_dsn,
        redis_url=redis_server.url,
        queue_name=queue,
        embedding_provider="local",
    )
    await run_worker_burst(settings)
    after = json.loads(cli("status", "--json", env=env).stdout)
    assert after["queue_depth"] == 0

    found = cli("search", "board deck Monday", "--workspace", str(ws), "--limit", "1", env=env)
    assert found.returncode == 0, found.stderr
    assert "quarterly board deck" in found.stdout
    # --json is JSON alone; text mode asks no embedding; filters reach the function
    hits = json.loads(
        cli("search", "hiring", "--workspace", str(ws), "--mode", "text", "--json", env=env).stdout
    )
    assert [h["content"] for h in hits] == ["subject cli-3\nHiring plan: two engineers in Q1."]
    assert hits[0]["distance"] is None and hits[0]["text_rank"] > 0
    none = cli("search", "hiring", "--workspace", str(ws), "--kind", "media", "--json", env=env)
    assert none.returncode == 0 and json.loads(none.stdout) == []
    later = cli(
        "search", "hiring", "--workspace", str(ws), "--since", "2999-01-01", "--json", env=env
    )
    assert json.loads(later.stdout) == []
    bad = cli("search", "x", "--workspace", str(ws), "--since", "last week", env=env)
    assert (
        bad.returncode == 2 and "--since: not an ISO 8601 date or time: 'last week'" in bad.stderr
    )
    limit = cli("search", "x", "--workspace", str(ws), "--limit", "0", env=env)
    assert limit.returncode == 2 and "p_limit: 0 is outside 1..100" in limit.stderr
    assert "Traceback" not in limit.stderr


@pytest.mark.slow
def test_migrate_on_embedded_defaults_starts_and_stops_the_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    up = cli("migrate", "up", env={"DATA_DIR": str(data_dir)})
    assert up.returncode == 0, up.stdout + up.stderr
    assert "applied: 001, 002, 003, 004, 005, 006, 007" in up.stdout
    status = cli("migrate", "status", env={"DATA_DIR": str(data_dir)})
    assert status.returncode == 0, status.stderr
    states = [line.split()[2] for line in status.stdout.splitlines() if line[:3].isdigit()]
    assert states == ["applied"] * 7
    assert (data_dir / "postgres" / "pgdata" / "PG_VERSION").exists()  # data kept
    assert not (data_dir / "postgres" / "pgdata" / "postmaster.pid").exists()  # server stopped


def test_maintenance_cli_dry_run_reports_json(migrated_dsn: str) -> None:
    result = cli("maintenance", "--dry-run", "--json", env={"DATABASE_URL": migrated_dsn})
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)  # the whole of stdout: JSON and nothing else
    assert report["dry_run"] is True and report["trigger"] == "manual"
    assert report["status"] in ("succeeded", "skipped")


async def test_erase_cli_json_and_human_report(migrated_dsn: str, redis_server: Any) -> None:
    ws = await new_workspace(migrated_dsn)
    env = {
        "DATABASE_URL": migrated_dsn,
        "REDIS_URL": redis_server.url,
        "QUEUE_NAME": f"cli:{uuid.uuid4().hex[:8]}",
        "EMBEDDING_PROVIDER": "local",
    }
    settings = Settings(
        database_url=migrated_dsn,
        redis_url=redis_server.url,
        **{"queue_name": env["QUEUE_NAME"], "embedding_provider": "local"},
    )
    from worker import client

    redis = await client.connect(redis_server.url)
    try:
        await client.enqueue(redis, communication(ws, "e-1", "erase me"), settings=settings)
        await client.enqueue(
            redis, communication(ws, "e-2", "and me", source="slack"), settings=settings
        )
    finally:
        await redis.aclose()
    await run_worker_burst(settings)
    human = cli("erase", "--workspace", str(ws), "--source", "slack", env=env)
    assert human.returncode == 0, human.stdout + human.stderr
    assert "comms.communications" in human.stdout and "nothing of the scope" in human.stdout
    result = cli("erase", "--workspace", str(ws), "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)  # the whole of stdout: JSON and nothing else
    assert report["scope"] == "workspace" and report["remaining"] == {}
    assert report["deleted"]["comms.communications"] == 1
    assert report["deleted"]["core.workspaces"] == 1
