"""The beat schedule, built from config/ and kept in Redis by RedBeat (one leader holds the lock,
standby beats wait on it)."""

from __future__ import annotations

import sys
from typing import Any

from redbeat import RedBeatScheduler

from worker.config import FleetConfig, get_config
from worker.errors import ConfigError


def build_schedule(cfg: FleetConfig) -> dict[str, dict[str, Any]]:
    """Entry name -> celery beat entry, one per check, maintenance job, backlog, digest and the sweeper."""
    sched: dict[str, dict[str, Any]] = {}
    for check in cfg.checks.values():
        if check.enabled:
            sched[f"check:{check.name}"] = {
                "task": "checks.run", "schedule": check.schedule.celery_schedule(),
                "kwargs": {"name": check.name}, "options": {"queue": "checks", "expires": 300},
            }
    for job in cfg.maintenance.values():
        if job.enabled:
            sched[f"maintenance:{job.name}"] = {
                "task": "maintenance.run", "schedule": job.schedule.celery_schedule(),
                "kwargs": {"job": job.name}, "options": {"queue": "maintenance"},
            }
    for b in cfg.backlogs.values():
        if b.enabled:
            sched[f"backlog:{b.name}"] = {
                "task": b.task, "schedule": b.schedule.celery_schedule(),
                "kwargs": dict(b.kwargs), "options": {"queue": "backlog"},
            }
    if cfg.routing is not None and cfg.routing.digest is not None:
        sched["digest:daily_summary"] = {
            "task": "digest.daily_summary", "schedule": cfg.routing.digest.schedule.celery_schedule(),
            "kwargs": {}, "options": {"queue": "digest"},
        }
    if cfg.routing is not None:
        sched["notify:sweep"] = {
            "task": "notify.sweep", "schedule": cfg.routing.sweep_interval.total_seconds(),
            "kwargs": {}, "options": {"queue": "notify", "expires": 60},
        }
    return sched


class Scheduler(RedBeatScheduler):
    """RedBeat with its static schedule taken from config/ at start."""

    def setup_schedule(self) -> None:
        try:
            self.app.conf.beat_schedule = build_schedule(get_config())
        except ConfigError as exc:
            sys.stderr.write(f"opsfleet beat: {exc}\n")
            raise SystemExit(2) from None
        super().setup_schedule()
