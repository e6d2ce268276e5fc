"""maintenance.run: one maintenance job from config/maintenance.yaml."""

from __future__ import annotations

import structlog

from worker.app import task
from worker.config import get_config
from worker.fleet import calls
from worker.fleet.db import fleet_engine, fleet_now, maintenance_engine
from worker.maintenance.jobs import run_job

ACCEPTS = {"job": "a maintenance job's name, from config/maintenance.yaml"}


@task("maintenance.run", bind=True, ignore_result=False, accepts=ACCEPTS,
      shadow=lambda kwargs: f"maintenance.run:{kwargs.get('job')}")
def run(self, job: str) -> dict:
    cfg = get_config()
    spec = cfg.maintenance[calls.known("maintenance.run", "job", job, cfg.maintenance, ACCEPTS)]
    structlog.contextvars.bind_contextvars(job=job)

    def progress(rows: int, batches: int) -> None:
        self.update_state(state="PROGRESS", meta={"job": job, "rows": rows, "batches": batches})

    result = run_job(spec, monitored=maintenance_engine(), fleet=fleet_engine(), now=fleet_now(),
                     task_id=self.request.id, progress=progress)
    return {"job": job, "status": result.status, "rows": result.rows, "batches": result.batches, "error": result.error}
