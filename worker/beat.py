"""The beat schedule, built from config/ and kept in Redis by RedBeat (one leader holds the lock,
standby beats wait on it)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

import redis
import sqlalchemy as sa
from redbeat import RedBeatScheduler
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
from redbeat.schedulers import RedBeatSchedulerEntry, get_redis
from redis.exceptions import LockError

from worker.backlog.spec import beat_entries as backlog_beat
from worker.backlog.spec import scheduled_jobs as scheduled_backlogs
from worker.checks import store
from worker.checks.spec import beat_entries as checks_beat
from worker.config import FleetConfig, get_config
from worker.fleet import redisconn, runs
from worker.fleet.cron import zoned_crontab
from worker.fleet.db import fleet_engine
from worker.fleet.errors import ConfigError, SettingsError
from worker.fleet.logs import get_logger, mask_text
from worker.fleet.settings import get_settings
from worker.fleet.timeutil import Schedule
from worker.heartbeat import beat_entries as heartbeat_beat
from worker.maintenance.spec import beat_entries as maintenance_beat
from worker.maintenance.spec import scheduled_jobs as scheduled_maintenance
from worker.notify.routing import beat_entries as notify_beat
from worker.startup import beat_findings

BEAT_TICK_KEY = "opsfleet:beat:tick"  # read by worker.health
REDIS_RETRY_S = 2.0  # how soon a beat whose Redis does not answer tries again
log = get_logger(__name__)


def record_schedule(cfg: FleetConfig) -> None:
    """What this beat schedules, in fleet.check_schedule (checks_missed reads it) and fleet.job_schedule
    (maintenance_job_health). A fleet database that does not answer is logged, not fatal: the beat's
    own work needs only Redis."""
    try:
        with fleet_engine().begin() as conn:
            now = datetime.now(UTC)
            store.record_schedule(conn, cfg.checks.values(), now)
            runs.record_schedule(conn, [*scheduled_maintenance(cfg.maintenance.values()),
                                        *scheduled_backlogs(cfg.backlogs.values())], now)
    except (sa.exc.SQLAlchemyError, SettingsError) as exc:
        log.warning("schedule_not_recorded", error=mask_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))


def build_schedule(cfg: FleetConfig) -> dict[str, dict[str, Any]]:
    """Entry name -> celery beat entry: what each domain declares for its part of the config."""
    return {**checks_beat(cfg.checks.values()), **maintenance_beat(cfg.maintenance.values()),
            **backlog_beat(cfg.backlogs.values()), **notify_beat(cfg.routing), **heartbeat_beat(get_settings())}


ZONED_TYPE = "opsfleet_zoned_crontab"  # RedBeat's JSON knows crontab (no zone), interval and rrule only


class FleetJSONEncoder(RedBeatJSONEncoder):
    """RedBeat's encoder, plus a zoned cron stored as its schedule text ("CRON_TZ=Europe/Berlin 30 2 * * *")."""

    def default(self, obj: Any) -> Any:
        if isinstance(obj, zoned_crontab):
            return {"__type__": ZONED_TYPE, "expr": obj.expr}
        return super().default(obj)


class FleetJSONDecoder(RedBeatJSONDecoder):
    def dict_to_object(self, d: dict[str, Any]) -> Any:
        if d.get("__type__") == ZONED_TYPE:
            return Schedule.parse(d["expr"]).celery_schedule()
        return super().dict_to_object(d)


class Entry(RedBeatSchedulerEntry):
    """RedBeat's entry, its definition (de)coded with FleetJSONEncoder/Decoder (RedBeat's save() names
    its encoder: the method is RedBeat 2.4's, with ours)."""

    @staticmethod
    def decode_definition(definition: str) -> dict[str, Any]:
        return json.loads(definition, cls=FleetJSONDecoder)

    def save(self) -> Entry:
        definition = {"name": self.name, "task": self.task, "args": self.args, "kwargs": self.kwargs,
                      "options": self.options, "schedule": self.schedule, "enabled": self.enabled}
        meta = {"last_run_at": self.last_run_at}
        with get_redis(self.app).pipeline() as pipe:
            pipe.hset(self.key, "definition", json.dumps(definition, cls=FleetJSONEncoder))
            pipe.hsetnx(self.key, "meta", json.dumps(meta, cls=RedBeatJSONEncoder))
            pipe.zadd(self.app.redbeat_conf.schedule_key, {self.key: self.score})
            pipe.execute()
        return self


class Scheduler(RedBeatScheduler):
    """RedBeat with its static schedule taken from config/ at start. A beat refuses to start, in one
    line per problem, with an invalid config/ or a broker or Redis that does not answer."""

    Entry = Entry  # zoned crons (worker.fleet.cron.zoned_crontab) round-trip through Redis

    def setup_schedule(self) -> None:
        found = beat_findings()
        if found.errors:
            for line in found.errors:
                sys.stderr.write(f"opsfleet beat: {line}\n")
            raise SystemExit(2)
        try:
            cfg = get_config()
            self.app.conf.beat_schedule = build_schedule(cfg)
        except ConfigError as exc:
            sys.stderr.write(f"opsfleet beat: {exc}\n")
            raise SystemExit(2) from None
        record_schedule(cfg)
        super().setup_schedule()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """RedBeat's tick (only the leader ticks: standbys wait on the lock), then the leader's last
        tick for `opsfleet health`: who leads, and when it last ticked.

        A Redis that stops answering, or restarts empty, must not end the beat (RedBeat lets the
        error through and beat exits, found by bench/soak.py): while Redis does not answer the beat
        waits and tries again; a lock it no longer owns (Redis lost it, or a standby took over) is
        waited for again like a standby at start; a schedule Redis lost is written again."""
        try:
            if self.lock is not None and not self.lock.owned():
                log.warning("beat_lock_lost", detail="waiting for the lock again, as a standby")
                self.lock.acquire()  # blocks, like a standby at start
                log.info("beat_lock_reacquired")
            if not self._redis().exists(self.app.redbeat_conf.schedule_key):
                log.warning("beat_schedule_rewritten", detail="Redis no longer held the schedule (restarted empty?)")
                super().setup_schedule()
            interval = super().tick(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, LockError) as exc:
            log.warning("beat_redis_unavailable", error=mask_text(str(exc).splitlines()[0] if str(exc)
                                                                  else type(exc).__name__), retry_in=REDIS_RETRY_S)
            return REDIS_RETRY_S
        try:
            self._redis().set(BEAT_TICK_KEY, json.dumps({"at": time.time(), "host": socket.gethostname(),
                                                             "pid": os.getpid()}), ex=300)
        except redis.RedisError as exc:
            log.warning("beat_tick_not_recorded", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return interval

    _tick_client: Any = None

    def _redis(self) -> Any:
        if self._tick_client is None:
            self._tick_client = redisconn.client(get_settings().redis(), socket_timeout=2)
        return self._tick_client
