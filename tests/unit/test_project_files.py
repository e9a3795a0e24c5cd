"""Deployment files and the README, checked by parsing them (no Docker engine here)."""

from __future__ import annotations

import re

import yaml

from worker.core.settings import REPO_ROOT, Settings

README = (REPO_ROOT / "README.md").read_text()


def _commands() -> list[str]:
    return [line for line in README.splitlines() if line.startswith("python3 -m venv")]


def test_readme_has_the_two_commands_and_ci_runs_the_test_one() -> None:
    demo, tests = _commands()
    assert demo.endswith("cos-worker demo")
    assert tests.endswith("python -m pytest")
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci


def test_every_setting_is_documented() -> None:
    reference = (REPO_ROOT / "docs" / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert re.search(rf"`{name.upper()}`", reference) or f"{name.upper()}`" in reference, name


def test_procfile() -> None:
    lines = (REPO_ROOT / "Procfile").read_text().splitlines()
    assert lines == ["release: cos-worker migrate up", "worker: arq worker.main.WorkerSettings"]


def test_compose_stack() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    svc = compose["services"]
    # a server major the suite runs on (18 in full, 16 a marked subset), mounted where
    # PostgreSQL 18 images keep their data
    assert re.fullmatch(r"pgvector/pgvector:(\d+\.\d+\.\d+-)?pg(18|16)", svc["postgres"]["image"])
    assert "pgdata:/var/lib/postgresql" in svc["postgres"]["volumes"]
    assert "shared_preload_libraries=pg_stat_statements" in " ".join(svc["postgres"]["command"])
    redis_cmd = svc["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    for name in ("postgres", "redis", "worker"):
        assert svc[name]["healthcheck"]["test"], name
    assert svc["migrate"]["command"] == ["cos-worker", "migrate", "up"]
    assert svc["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    worker = svc["worker"]
    assert worker["command"] == ["arq", "worker.main.WorkerSettings"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    lane = svc["live-lane"]
    assert lane["command"] == ["cos-worker", "live-lane"]
    assert lane["environment"]["WORKER_LANE"] == "live"  # `arq --check` finds its key
    assert lane["healthcheck"]["test"] == worker["healthcheck"]["test"]
    for name in ("migrate", "worker", "live-lane"):
        env = svc[name]["environment"]
        assert (
            env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]
        )
        assert env["REDIS_URL"] == "redis://redis:6379/0"
