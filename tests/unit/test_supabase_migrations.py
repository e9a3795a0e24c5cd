"""``supabase/migrations/`` holds the same migrations as ``migrations/``, byte for byte,
under the Supabase CLI's ``<YYYYMMDDHHMMSS>_<name>.sql`` names and in the same order, so
``supabase db push`` applies what ``cos-worker migrate up`` and ``psql -f`` apply."""

from __future__ import annotations

import re

from worker.core.settings import REPO_ROOT

RUNNER = REPO_ROOT / "migrations"
CLI = REPO_ROOT / "supabase" / "migrations"
CLI_NAME = re.compile(r"^(?P<timestamp>\d{14})_(?P<name>[a-z0-9_]+)\.sql$")
RUNNER_NAME = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.sql$")


def test_the_cli_folder_mirrors_the_runner_folder() -> None:
    runner = sorted(p for p in RUNNER.glob("*.sql"))
    cli = sorted(CLI.iterdir())
    assert [RUNNER_NAME.match(p.name)["name"] for p in runner] == [  # type: ignore[index]
        CLI_NAME.match(p.name)["name"]
        for p in cli  # type: ignore[index]
    ], "same migrations, same order, CLI names"
    for ours, theirs in zip(runner, cli, strict=True):
        assert ours.read_bytes() == theirs.read_bytes(), f"{theirs.name} differs from {ours.name}"
    timestamps = [CLI_NAME.match(p.name)["timestamp"] for p in cli]  # type: ignore[index]
    assert timestamps == sorted(set(timestamps))
