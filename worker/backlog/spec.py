"""config/backlogs.yaml: the scheduled backlog runs (a task and its arguments)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field

from worker.fleet.fields import Name, ScheduleField, Strict
from worker.fleet.names import beat_entry, queue_of

JOB_REPROCESS = "reprocess_confirmations"
JOB_RESEND = "resend_failed_emails"
JOBS = {"backlog.reprocess_confirmations": JOB_REPROCESS, "backlog.resend_failed_emails": JOB_RESEND}  # task -> job


class Backlog(Strict):
    name: Name
    description: str = ""
    task: str
    schedule: ScheduleField
    kwargs: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True

    @property
    def job(self) -> str:
        """The name its runs have in fleet.job_runs (worker/backlog/runs.py records them under it)."""
        return JOBS.get(self.task, self.task)


class BacklogsFile(Strict):
    backlogs: list[Backlog] = Field(default_factory=list)


def beat_entries(backlogs: Iterable[Backlog]) -> dict[str, dict[str, Any]]:
    """Each enabled backlog's task with its arguments, on its schedule."""
    return {f"backlog:{b.name}": beat_entry(b.task, b.schedule.celery_schedule(), b.kwargs)
            for b in backlogs if b.enabled}


def scheduled_jobs(backlogs: Iterable[Backlog]) -> list[dict[str, Any]]:
    """What beat records of each backlog in fleet.job_schedule (maintenance_job_health reads it): one row
    per job, however many entries run it (its shortest gap: any of them is a run); a dry run's
    schedule is not watched (its rows are dry runs)."""
    rows: dict[str, dict[str, Any]] = {}
    for b in backlogs:
        row = {"family": "backlog", "job": b.job, "queue": queue_of(b.task),
               "longest_gap_s": b.schedule.longest_gap().total_seconds(),
               "enabled": b.enabled and not b.kwargs.get("dry_run")}
        seen = rows.get(b.job)
        if seen is None or (row["enabled"], -row["longest_gap_s"]) > (seen["enabled"], -seen["longest_gap_s"]):
            rows[b.job] = row
    return list(rows.values())
