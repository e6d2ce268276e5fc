"""The beat schedule, built from config/ and kept in Redis by RedBeat (one leader holds the lock,
standby beats wait on it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
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
from worker.checks.statements import beat_entries as statements_beat
from worker.config import FleetConfig, get_config
from worker.fleet import redisconn, runs
from worker.fleet.cron import zoned_crontab
from worker.fleet.db import fleet_engine
from worker.fleet.errors import ConfigError, SettingsError
from worker.fleet.logs import get_logger, mask_text
from worker.fleet.names import BEAT_TICK_KEY
from worker.fleet.settings import get_settings
from worker.fleet.timeutil import Schedule
from worker.maintenance.spec import beat_entries as maintenance_beat
from worker.maintenance.spec import scheduled_jobs as scheduled_maintenance
from worker.notify.routing import beat_entries as notify_beat
from worker.reports.spec import beat_entries as reports_beat
from worker.startup import beat_findings
from worker.watch.heartbeat import beat_entries as heartbeat_beat

SLOTTED_TASKS = frozenset({"checks.run", "checks.run_batch"})  # given the instant beat sent them (sent_at)
REDIS_RETRY_S = 2.0  # how soon a beat whose Redis does not answer tries again
log = get_logger(__name__)


def record_schedule(cfg: FleetConfig) -> None:
    """What this beat schedules, in fleet.check_schedule (checks_missed reads it) and fleet.job_schedule
    (maintenance_job_health). A fleet database that does not answer is logged, not fatal: the beat's
    own work needs only Redis."""
    try:
        with fleet_engine().begin() as conn:
            now = datetime.now(UTC)
            store.record_schedule(conn, cfg.scheduled_checks(), now)
            runs.record_schedule(conn, [*scheduled_maintenance(cfg.scheduled_maintenance()),
                                        *scheduled_backlogs(cfg.scheduled_backlogs())], now)
    except (sa.exc.SQLAlchemyError, SettingsError) as exc:
        log.warning("schedule_not_recorded", error=mask_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))


def build_schedule(cfg: FleetConfig) -> dict[str, dict[str, Any]]:
    """Entry name -> celery beat entry: what each domain declares for its part of the config."""
    return {**checks_beat(cfg.scheduled_checks()), **statements_beat(cfg.scheduled_checks()),
            **maintenance_beat(cfg.scheduled_maintenance()),
            **backlog_beat(cfg.scheduled_backlogs()), **notify_beat(cfg.routing), **reports_beat(cfg.reports),
            **heartbeat_beat(get_settings())}


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
            interval = self._send_due(*args, **kwargs)
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

    def _send_due(self, *args: Any, **kwargs: Any) -> float:
        """RedBeat's tick with SIGTERM and SIGINT held until it returns. RedBeat writes an entry's
        last_run_at to Redis before it publishes the task; celery beat's SIGTERM handler raises
        SystemExit wherever the main thread is, so a deploy's restart landing between the two lost
        the slot (the next beat read it as sent; seen in CI's test_beat_restart). Held, the signal's
        own handler runs the moment the tick ends and the beat stops as before, every slot it marked
        sent. (Blocking the signal with pthread_sigmask is not enough: another thread takes it.)"""
        if threading.current_thread() is not threading.main_thread():
            return super().tick(*args, **kwargs)  # an embedded beat: signals are the worker's
        held: list[int] = []
        previous = {signum: signal.signal(signum, lambda signum, _frame: held.append(signum))
                    for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            return super().tick(*args, **kwargs)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for signum in held:
                handler = previous[signum]
                if callable(handler):
                    handler(signum, None)
                elif handler == signal.SIG_DFL:
                    signal.raise_signal(signum)

    def reserve(self, entry: Any) -> Any:
        """Mark a due entry run (RedBeat: its last_run_at in Redis) and give the entry to send: a check's
        run carries `sent_at`, the instant beat sent it, so a run that a busy worker starts late still
        evaluates the slot it was sent for (and the next slot's run its own) instead of the slot it
        happens to start in. (Only the sent copy carries it: RedBeat keeps the definition as it was.)"""
        sent = super().reserve(entry)
        if sent.task in SLOTTED_TASKS and "sent_at" not in sent.kwargs:
            sent.kwargs = {**sent.kwargs, "sent_at": datetime.now(UTC).isoformat()}
        return sent

    _tick_client: Any = None

    def _redis(self) -> Any:
        if self._tick_client is None:
            self._tick_client = redisconn.client(get_settings().redis(), socket_timeout=2)
        return self._tick_client
