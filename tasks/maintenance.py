"""maintenance.run: one maintenance job from config/maintenance.yaml, on one target."""

from __future__ import annotations

import structlog

from worker.app import task
from worker.config import get_config
from worker.fleet import calls
from worker.fleet.db import fleet_engine, fleet_now, maintenance_engine_at
from worker.fleet.settings import get_settings
from worker.maintenance.jobs import run_job

ACCEPTS = {"job": "a maintenance job's name, from config/maintenance.yaml (`opsfleet maintenance list`)",
           "target": "a target of config/targets.yaml (`opsfleet targets list`); needed when the job runs on several"}


def _shadow(kwargs: dict) -> str:
    job, target = kwargs.get("job"), kwargs.get("target")
    if not isinstance(job, str):
        return "maintenance.run"
    return f"maintenance.run:{job}" + (f"@{target}" if isinstance(target, str) else "")


@task("maintenance.run", bind=True, ignore_result=False, accepts=ACCEPTS, shadow=_shadow)
def run(self, job: str, target: str | None = None) -> dict:
    """Run maintenance job `job` on `target` (its database as MAINTENANCE_DATABASE_URL's role, or the
    target's maintenance_url): once every argument is known good, a bad one writes nothing."""
    cfg = get_config()
    calls.pack_off("maintenance.run", cfg.pack_off("job", job) if isinstance(job, str) else None)
    spec = cfg.maintenance[calls.known("maintenance.run", "job", job, cfg.maintenance, ACCEPTS)]
    if target is not None:
        calls.known("maintenance.run", "target", target, cfg.targets, ACCEPTS)
    try:
        where = cfg.job_target_for("maintenance", job, target)  # None: the fleet's own, once
    except ValueError as exc:
        raise calls.rejected("maintenance.run", [str(exc)], ACCEPTS) from None
    declared = where is not None and bool(where.where)
    structlog.contextvars.bind_contextvars(job=job, **({"target": where.name} if declared else {}))

    def progress(rows: int, batches: int) -> None:
        self.update_state(state="PROGRESS", meta={"job": job, "rows": rows, "batches": batches,
                                                  **({"target": where.name} if declared else {})})

    monitored = maintenance_engine_at(where.maintenance_database_url(get_settings()) if declared else None)
    result = run_job(spec, monitored=monitored, fleet=fleet_engine(), now=fleet_now(), task_id=self.request.id,
                     progress=progress if self.request.id else None,  # (called directly: no task to report on)
                     target=where.key if where else "")
    return {"job": job, "status": result.status, "rows": result.rows, "batches": result.batches, "error": result.error,
            **({"target": where.name} if declared else {})}
