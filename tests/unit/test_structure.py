"""The folders' rules, checked over the source (issue 16; docs/architecture.md).

* ``worker/core/``, ``worker/text/`` and ``worker/extract/`` import nothing that does I/O
  (nor processes, threads or an event loop: extract runs inside parsing children);
* only ``worker/queue/`` imports arq; ``worker/ingest/`` imports neither arq nor Redis;
* SQL text lives only in ``worker/db/sql/*.sql``; only ``worker/db/`` and
  ``worker/maintenance/`` run named queries (``Q``), and every ``Q.<name>`` exists;
* only the ledger (``worker/db/ledger/``) runs the statements that write
  ``ops.ingestion_jobs`` and ``ops.events``, and the other modules reach it through
  ``worker.db.ledger`` alone;
* no module is over 400 lines.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.core.settings import REPO_ROOT
from worker.db.queries import SQL_DIR, Q, load_dir

WORKER = REPO_ROOT / "worker"
IO_MODULES = (
    "asyncpg",
    "redis",
    "arq",
    "httpx",
    "openai",
    "aiohttp",
    "socket",
    "subprocess",
    "asyncio",
    "multiprocessing",
    "threading",
    "pebble",
    "worker.db",
    "worker.queue",
    "worker.ingest",
    "worker.servers",
    "worker.embedding",
    "worker.maintenance",
)
SQL_START = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|ANALYZE|REINDEX|VACUUM|SET|"
    r"RESET|SHOW|GRANT|REVOKE|TRUNCATE|COPY|LOCK|DO|COMMENT)\s+[\w\"(*$]"
)
OPS_WRITE = re.compile(r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+ops\.(ingestion_jobs|events)\b")


def _modules(folder: Path = WORKER) -> Iterator[tuple[str, Path]]:
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(REPO_ROOT).with_suffix("")
        yield ".".join(rel.parts).removesuffix(".__init__"), path


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _uses(imported: set[str], prefix: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for name in imported)


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("package", ["worker.core", "worker.text", "worker.extract"])
def test_pure_packages_import_nothing_with_io(package: str) -> None:
    for module, path in _modules(WORKER / package.split(".")[1]):
        bad = sorted(p for p in IO_MODULES if _uses(_imports(path), p))
        assert not bad, f"{module} imports {bad}"


def test_only_the_queue_package_imports_arq() -> None:
    for module, path in _modules():
        if not _in(module, "worker.queue"):
            assert not _uses(_imports(path), "arq"), f"{module} imports arq"


def test_ingest_knows_neither_the_queue_nor_sql() -> None:
    for module, path in _modules(WORKER / "ingest"):
        imported = _imports(path)
        for banned in ("arq", "redis", "worker.queue", "worker.db.queries", "worker.servers"):
            assert not _uses(imported, banned), f"{module} imports {banned}"


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """String literals that are not docstrings (f-strings: their literal parts)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            yield node.lineno, str(text)


def test_sql_text_lives_only_in_sql_files() -> None:
    found = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {text.strip()[:60]!r}"
        for _, path in _modules()
        for line, text in _strings(ast.parse(path.read_text()))
        if SQL_START.match(text)
    ]
    assert not found, "SQL outside worker/db/sql:\n" + "\n".join(found)


def _query_names(path: Path) -> set[str]:
    return {
        node.attr
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "Q"
    }


def test_every_named_query_used_exists() -> None:
    known = set(Q.names()) | {"names", "plain"}
    paths = [p for _, p in _modules()] + sorted((REPO_ROOT / "tests").rglob("*.py"))
    paths += sorted((REPO_ROOT / "bench").rglob("*.py"))
    for path in paths:
        missing = _query_names(path) - known
        assert not missing, f"{path.relative_to(REPO_ROOT)} names unknown queries {missing}"


def test_only_db_and_maintenance_run_named_queries() -> None:
    for module, path in _modules():
        if _in(module, "worker.db", "worker.maintenance"):
            continue
        assert not _uses(_imports(path), "worker.db.queries"), f"{module} runs named queries"


def test_only_the_ledger_writes_ops_jobs_and_events() -> None:
    writers = {name for name, sql in load_dir(SQL_DIR).items() if OPS_WRITE.search(sql)}
    assert writers, "the ledger's statements were not recognised"
    for module, path in _modules():
        if _in(module, "worker.db.ledger"):
            continue
        used = _query_names(path) & writers
        assert not used, f"{module} writes the ledger or events directly: {sorted(used)}"
        inner = {
            name
            for name in _imports(path)
            if name.startswith("worker.db.ledger.") and name.count(".") >= 4
        }
        assert not inner, f"{module} reaches into the ledger's modules: {sorted(inner)}"


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(REPO_ROOT)): n
        for _, path in _modules()
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert not long, f"split these modules by what they hold: {long}"
