"""The IVFFlat lists rule's pure parts (worker/maintenance/ivfflat.py); the re-creation
itself runs against PostgreSQL in tests/integration/test_maintenance_recall.py."""

from __future__ import annotations

from worker.maintenance.ivfflat import LISTS_SLACK, LISTS_SLACK_LOW, lists_off, lists_option


def test_lists_come_from_the_index_options() -> None:
    assert lists_option(["lists=95"]) == 95
    assert lists_option(["m=16", "lists=1"]) == 1
    assert lists_option(["m=16"]) is None
    assert lists_option(None) is None


def test_lists_are_off_by_the_slack_either_way() -> None:
    assert (LISTS_SLACK, LISTS_SLACK_LOW) == (2.0, 4.0)
    assert lists_off(1, 3) == "1 lists where its rows call for 3 (ops.ivfflat_lists)"
    assert lists_off(50, 100) is not None  # the table doubled: 2,000 rows a list
    assert lists_off(50, 99) is None  # within 2x
    assert lists_off(100, 40) is None  # half deleted: more lists cost no recall
    assert lists_off(100, 25) is not None  # under 250 rows a list
    assert lists_off(1, 1) is None
    assert lists_off(None, 3) is None and lists_off(3, None) is None
