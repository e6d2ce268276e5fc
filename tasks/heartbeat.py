"""notify.heartbeat: the dead-man's switch (worker/watch/heartbeat.py). It runs on the notify queue, so a
ping also says a notify worker consumes."""

from __future__ import annotations

from worker.app import task
from worker.config import get_config
from worker.fleet.db import fleet_engine, fleet_now
from worker.fleet.settings import get_settings
from worker.watch.heartbeat import ping, verdict


@task("notify.heartbeat", ignore_result=True, accepts={})
def heartbeat() -> dict:
    settings = get_settings()
    v = verdict(fleet_engine(), get_config(), fleet_now(), settings.heartbeat_seconds)
    return {"healthy": v.healthy, "reasons": v.reasons, "done": ping(settings, v)}
