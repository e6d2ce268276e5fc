"""config/maintenance.yaml: archive, purge, vacuum, sql and fleet_retention jobs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, model_validator

from worker.fleet.fields import Duration, Identifier, Name, ScheduleField, Strict
from worker.fleet.names import beat_entry, queue_of
from worker.fleet.runs import Place


class MaintenanceJob(Strict):
    name: Name
    description: str = ""
    kind: Literal["archive", "purge", "vacuum", "analyze", "sql", "fleet_retention"]
    schedule: ScheduleField
    table: Identifier | None = None
    archive_table: Identifier | None = None
    age_column: Identifier = "created_at"
    key_column: Identifier = "id"
    older_than: Duration | None = None
    where: str | None = None  # extra SQL predicate, e.g. "status = 'sent'"
    tables: list[Identifier] = Field(default_factory=list)
    function: Identifier | None = None
    batch_size: int = Field(default=5000, ge=1, le=1_000_000)
    pause: Duration = timedelta(milliseconds=50)
    max_rows: int | None = Field(default=None, ge=1)
    maintenance_log: bool = False
    timeout: Duration = timedelta(minutes=30)
    enabled: bool = True

    @model_validator(mode="after")
    def _kind_fields(self) -> MaintenanceJob:
        need: dict[str, tuple[str, ...]] = {
            "archive": ("table", "archive_table", "older_than"),
            "purge": ("table", "older_than"),
            "vacuum": ("tables",),
            "analyze": (),  # no tables: the whole database
            "sql": ("function",),
            "fleet_retention": ("older_than",),
        }
        missing = [f for f in need[self.kind] if not getattr(self, f)]
        if missing:
            raise ValueError(f"a {self.kind} job needs {', '.join(missing)}")
        return self


class MaintenanceFile(Strict):
    jobs: list[MaintenanceJob] = Field(default_factory=list)


def _placed(jobs: Iterable[MaintenanceJob | tuple[MaintenanceJob, Place]]) -> list[tuple[MaintenanceJob, Place]]:
    return [j if isinstance(j, tuple) else (j, Place()) for j in jobs]


def beat_entries(jobs: Iterable[MaintenanceJob | tuple[MaintenanceJob, Place]]) -> dict[str, dict[str, Any]]:
    """One maintenance.run per enabled job and target (FleetConfig.scheduled_maintenance), on its
    schedule, on the maintenance queue (a target's own `queue:` is for its checks: a job holds a
    worker for up to an hour, and the maintenance queue's workers and time limits are sized for it)."""
    return {f"maintenance:{j.name}{p.suffix}": beat_entry("maintenance.run", j.schedule.celery_schedule(),
                                                          {"job": j.name, **p.kwargs()})
            for j, p in _placed(jobs) if j.enabled}


def scheduled_jobs(jobs: Iterable[MaintenanceJob | tuple[MaintenanceJob, Place]]) -> list[dict[str, Any]]:
    """What beat records of each job on each target in fleet.job_schedule (maintenance_job_health reads it)."""
    return [{"family": "maintenance", "job": j.name, "target": p.key, "queue": queue_of("maintenance.run"),
             "longest_gap_s": j.schedule.longest_gap().total_seconds(), "enabled": j.enabled} for j, p in _placed(jobs)]
