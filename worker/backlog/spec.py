"""config/backlogs.yaml: the scheduled backlog runs (a task and its arguments)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field

from worker.fleet.fields import Name, ScheduleField, Strict
from worker.fleet.names import beat_entry, queue_of
from worker.fleet.runs import Place

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


def _placed(backlogs: Iterable[Backlog | tuple[Backlog, Place]]) -> list[tuple[Backlog, Place]]:
    return [b if isinstance(b, tuple) else (b, Place()) for b in backlogs]


def beat_entries(backlogs: Iterable[Backlog | tuple[Backlog, Place]]) -> dict[str, dict[str, Any]]:
    """Each enabled backlog's task with its arguments, on each of its targets (FleetConfig.scheduled_backlogs),
    on its schedule, on the backlog queue (a target's own `queue:` is for its checks)."""
    return {f"backlog:{b.name}{p.suffix}": beat_entry(b.task, b.schedule.celery_schedule(), {**b.kwargs, **p.kwargs()})
            for b, p in _placed(backlogs) if b.enabled}


def scheduled_jobs(backlogs: Iterable[Backlog | tuple[Backlog, Place]]) -> list[dict[str, Any]]:
    """What beat records of each backlog in fleet.job_schedule (maintenance_job_health reads it): one row
    per job and target, however many entries run it (its shortest gap: any of them is a run); a dry
    run's schedule is not watched (its rows are dry runs)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for b, p in _placed(backlogs):
        row = {"family": "backlog", "job": b.job, "target": p.key, "queue": queue_of(b.task),
               "longest_gap_s": b.schedule.longest_gap().total_seconds(),
               "enabled": b.enabled and not b.kwargs.get("dry_run")}
        seen = rows.get((b.job, p.key))
        if seen is None or (row["enabled"], -row["longest_gap_s"]) > (seen["enabled"], -seen["longest_gap_s"]):
            rows[(b.job, p.key)] = row
    return list(rows.values())
