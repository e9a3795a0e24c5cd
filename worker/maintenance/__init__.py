"""Scheduled database maintenance: ANALYZE and REINDEX by policy, slow-query reports.

``run_maintenance(settings, dsn, trigger="cron")`` is what the arq cron job and the
``cos-worker maintenance`` command call; see :mod:`worker.maintenance.run` and
``docs/maintenance.md`` for the policy. Every statement it runs is a named query in
``worker/db/sql/maintenance.sql``.
"""

from worker.maintenance.report import ActionRecord, MaintenanceReport
from worker.maintenance.run import run_maintenance

__all__ = ["ActionRecord", "MaintenanceReport", "run_maintenance"]
