"""Named SQL queries, loaded once from ``worker/db/sql/queries.sql``.

Keeping every statement in one .sql file (the procrastinate way) lets reviewers read
the database surface in one place; Python refers to them by name: ``Q.ledger_start``.
"""

from __future__ import annotations

import re
from pathlib import Path

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$")


def load(path: Path) -> dict[str, str]:
    """Split a file into ``{name: sql}`` on ``-- name: x`` markers (comments dropped)."""
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _NAME.match(line)
        if match:
            current = queries.setdefault(match[1], [])
            continue
        if current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip().rstrip(";") for name, lines in queries.items()}


class _Queries:
    def __init__(self, queries: dict[str, str]) -> None:
        self._queries = queries

    def __getattr__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in queries.sql") from None

    def names(self) -> list[str]:
        return sorted(self._queries)

    def plain(self) -> list[str]:
        """Every statement that is not a template (``{table}``): what can be prepared
        before a job formats one; the templates use no types beyond these."""
        return [sql for _, sql in sorted(self._queries.items()) if "{" not in sql]


Q = _Queries(load(Path(__file__).parent / "sql" / "queries.sql"))

# Tables with per-chunk vectors; the only values ever formatted into {table}.
CHUNK_TABLES = {"transcript": "meetings.transcript_chunks", "media": "media.media_chunks"}
SOURCE_TABLES = {
    "communication": "comms.communications",
    "transcript": "meetings.transcripts",
    "media": "media.assets",
}
