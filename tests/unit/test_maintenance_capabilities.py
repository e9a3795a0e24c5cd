"""The version rules of maintenance as pure functions: who may maintain a table on which
server, which pg_stat_statements columns each extension version has, what the
preload setting says, which pgvector features a version has. The servers that exercise
them for real: tests/integration/test_pg16.py and test_maintenance_capabilities.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.maintenance.capabilities import (
    Capabilities,
    analyze_access,
    preloaded,
    reindex_access,
    version_tuple,
)
from worker.maintenance.slow_queries import (
    ABSENT,
    SlowQuery,
    _Previous,
    choose_columns,
    flag_regressions,
    source,
)


def caps(version_num: int = 180001, **kw: Any) -> Capabilities:
    values: dict[str, Any] = {
        "server_version_num": version_num,
        "server_version": f"{version_num // 10000}.{version_num % 100}",
        "login_role": "app",
        "superuser": False,
        "pgvector_version": "0.8.0",
        "pg_stat_statements_available": True,
        "pg_stat_statements_version": "1.12",
        "pg_stat_statements_schema": "public",
        "pg_stat_statements_preloaded": True,
    }
    values.update(kw)
    return Capabilities(**values)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("pg_stat_statements", True),
        ("auto_explain, pg_stat_statements", True),
        ('"pg_stat_statements",auto_explain', True),
        ("$libdir/pg_stat_statements.so", True),
        ("pg_stat_statements_extra", False),
        ("", False),
        (None, None),  # the role may not read the setting
    ],
)
def test_preloaded_reads_the_setting(setting: str | None, expected: bool | None) -> None:
    assert preloaded(setting, "pg_stat_statements") is expected


def test_pgvector_features_by_version() -> None:
    assert version_tuple("0.6.2") == (0, 6) and version_tuple("weird") is None
    for version, halfvec, iterative in [
        ("0.6.2", False, False),
        ("0.7.4", True, False),
        ("0.8.0", True, True),
        (None, False, False),
        ("garbage", False, False),
    ]:
        c = caps(pgvector_version=version)
        assert (c.halfvec, c.iterative_index_scans) == (halfvec, iterative), version
    assert caps(160002).maintain_privilege is False and caps(170000).maintain_privilege


def test_who_may_analyze_and_reindex_by_version() -> None:
    old, new = caps(160002), caps(180001)
    # 16: ownership decides; the database owner may ANALYZE but not REINDEX.
    assert analyze_access(old, has_maintain=None, owns_table=True, owns_database=False).allowed
    assert analyze_access(old, has_maintain=None, owns_table=False, owns_database=True).allowed
    denied = analyze_access(old, has_maintain=None, owns_table=False, owns_database=False)
    assert denied.reason == "not_owner" and "PostgreSQL 16.2" in (denied.why or "")
    assert reindex_access(old, has_maintain=None, owns_table=True).allowed
    assert reindex_access(old, has_maintain=None, owns_table=False).reason == "not_owner"
    # 17+: MAINTAIN decides (an owner has it unless revoked); the database owner may ANALYZE.
    assert analyze_access(new, has_maintain=True, owns_table=False, owns_database=False).allowed
    assert analyze_access(new, has_maintain=False, owns_table=False, owns_database=True).allowed
    assert (
        analyze_access(new, has_maintain=False, owns_table=True, owns_database=False).reason
        == "no_maintain_privilege"
    )
    assert reindex_access(new, has_maintain=False, owns_table=True).reason == (
        "no_maintain_privilege"
    )
    hidden = reindex_access(new, has_maintain=True, owns_table=False, schema_usage=False)
    assert hidden.reason == "no_schema_usage"


def test_columns_of_each_pg_stat_statements_generation() -> None:
    common = {"queryid", "query", "calls", "rows", "shared_blks_hit", "shared_blks_read"}
    v17 = common | {"mean_exec_time", "total_exec_time", "shared_blk_read_time", "stats_since"}
    v13 = common | {"mean_exec_time", "total_exec_time", "blk_read_time"}
    v12 = common | {"mean_time", "total_time", "blk_read_time"}
    assert choose_columns(v17) == {
        "mean": "mean_exec_time",
        "total": "total_exec_time",
        "read_time": "shared_blk_read_time",
        "stats_since": "stats_since",
    }
    assert choose_columns(v13) == {
        "mean": "mean_exec_time",
        "total": "total_exec_time",
        "read_time": "blk_read_time",
        "stats_since": ABSENT,
    }
    assert choose_columns(v12) == {
        "mean": "mean_time",
        "total": "total_time",
        "read_time": "blk_read_time",
        "stats_since": ABSENT,
    }
    assert choose_columns(common) is None


def test_why_there_is_no_slow_query_report() -> None:
    assert source(caps()).available
    missing = source(caps(pg_stat_statements_version=None, pg_stat_statements_schema=None))
    assert missing.reason == "extension_missing" and "not installed" in missing.explanation
    absent = source(
        caps(
            160002,
            pg_stat_statements_available=False,
            pg_stat_statements_version=None,
            pg_stat_statements_schema=None,
        )
    )
    assert absent.reason == "extension_missing" and "contrib" in absent.hint
    assert source(caps(pg_stat_statements_preloaded=False)).reason == "not_preloaded"
    assert source(caps(pg_stat_statements_preloaded=None)).available  # the scan finds out


def test_a_reset_entry_is_compared_on_its_own_mean() -> None:
    then = datetime(2026, 1, 1, tzinfo=UTC)
    before = {1: _Previous(calls=2, mean_ms=150.0, total_ms=300.0, captured_at=then)}

    def entry(stats_since: datetime | None) -> SlowQuery:
        return SlowQuery(1, "q", 3, 200.0, 600.0, 3, None, stats_since=stats_since)

    restarted = entry(then + timedelta(hours=1))
    flag_regressions([restarted], before, 1.5)
    assert not restarted.regression and restarted.interval_mean_ms is None
    # Without stats_since (before 17) the totals are all there is: 300 ms a call since.
    unknown = entry(None)
    flag_regressions([unknown], before, 1.5)
    assert unknown.regression and unknown.interval_mean_ms == 300.0
