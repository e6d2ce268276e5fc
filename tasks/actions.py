"""maintenance.action: run an approved action once (worker.actions.run), on the maintenance queue,
whose workers hold the maintenance role."""

from __future__ import annotations

from worker.actions import run as runner
from worker.app import app, task
from worker.config import get_config
from worker.fleet.db import fleet_engine, fleet_now
from worker.fleet.settings import get_settings

ACCEPTS = {"action_id": "an action's id, as the alert's page, `opsfleet alerts show` or a Slack button give it"}


@task("maintenance.action", bind=True, ignore_result=False, accepts=ACCEPTS)
def action(self, action_id: str) -> dict:
    return runner.run(action_id, fleet=fleet_engine(), cfg=get_config(), settings=get_settings(), now=fleet_now(),
                      send_task=lambda name, kwargs: app.send_task(name, kwargs=kwargs, queue=name.split(".")[0]).id)
