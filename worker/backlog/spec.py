"""config/backlogs.yaml: the scheduled backlog runs (a task and its arguments)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field

from worker.fleet.fields import Name, ScheduleField, Strict
from worker.fleet.names import beat_entry


class Backlog(Strict):
    name: Name
    description: str = ""
    task: str
    schedule: ScheduleField
    kwargs: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class BacklogsFile(Strict):
    backlogs: list[Backlog] = Field(default_factory=list)


def beat_entries(backlogs: Iterable[Backlog]) -> dict[str, dict[str, Any]]:
    """Each enabled backlog's task with its arguments, on its schedule."""
    return {f"backlog:{b.name}": beat_entry(b.task, b.schedule.celery_schedule(), b.kwargs)
            for b in backlogs if b.enabled}
