"""The arq wiring: job functions, cron schedules and serializers come from settings."""

from __future__ import annotations

from worker.core.settings import Settings
from worker.queue import serialization
from worker.queue.app import worker_options


def test_cron_schedules_follow_settings() -> None:
    options = worker_options(Settings(maintenance_hour=4, maintenance_minute=5))
    crons = {c.name.split(".")[-1]: c for c in options["cron_jobs"]}
    maintenance = next(c for name, c in crons.items() if "maintenance" in name)
    assert maintenance.hour == {4} and maintenance.minute == {5}
    assert maintenance.unique
    assert any("reconcile" in name for name in crons)


def test_functions_and_json_serialization() -> None:
    options = worker_options(Settings())
    names = {getattr(f, "__name__", getattr(f, "name", "")) for f in options["functions"]}
    assert {"ingest", "embed_pending"} <= names
    assert options["job_serializer"] is serialization.dumps
    job = {"t": 1, "f": "ingest", "a": [{"kind": "media"}], "k": {}, "et": 1}
    assert serialization.loads(serialization.dumps(job)) == job
    # invalid UTF-8 from a foreign connector decodes instead of crashing the worker
    assert serialization.loads(b'{"a": "\xff"}') == {"a": "\ufffd"}


def test_arq_formats_job_arguments_without_walking_the_payload() -> None:
    """arq builds ``repr(args)`` for every job it starts, before any log filter runs; the
    deserializer's arguments make that constant-time (a 20 MB transcript took 0.2 s)."""
    from arq.jobs import deserialize_job_raw
    from arq.utils import args_to_string

    body = "a message body that must not be formatted " * 1000
    raw = serialization.dumps({"t": 1, "f": "ingest", "a": [{"body": body}], "k": {}, "et": 1})
    function, args, kwargs, _, _ = deserialize_job_raw(raw, deserializer=serialization.loads)
    assert function == "ingest" and args[0]["body"] == body
    assert args_to_string(args, kwargs) == "…"
    assert isinstance(args[0], serialization.QuietPayload) and args[0] == {"body": body}
    # A handed-off retry re-enqueues the same payload: it serializes as the plain object.
    assert serialization.dumps(args[0]) == serialization.dumps({"body": body})


def test_the_live_lane_has_its_own_health_key_and_no_cron() -> None:
    from worker.queue.app import worker_class
    from worker.queue.lanes import LiveLaneWorker

    lane = Settings(worker_lane="live", worker_name="box")
    options = worker_options(lane)
    assert options["health_check_key"].endswith(":box:live")
    assert options["cron_jobs"] == []
    assert worker_class(lane) is LiveLaneWorker
    assert worker_options(Settings(worker_name="box"))["health_check_key"].endswith(":box")
