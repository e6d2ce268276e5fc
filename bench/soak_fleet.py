"""The soak's fleet (bench/soak.py): two throwaway Postgres servers (the monitored application's and the
fleet's own) and a Redis, a config folder with short schedules, the provider sink failing and throttling
on purpose, the worker and beat processes, and their memory read from /proc."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from ops.devkit.process import Proc, start_beat, start_worker
from ops.devkit.servers import PostgresServer, RedisServer
from ops.devkit.sink import ProviderSink, Reply
from worker.fleet.timeutil import parse_duration

REPO = Path(__file__).resolve().parent.parent
API_KEY = "re_soak_local_sink_key"
FAULT_ROUTES = ("resend.emails", "resend.emails.batch", "slack.webhook")
# name -> queues, concurrency; `anchor` is never killed (its memory is the leak indicator)
WORKERS = {"anchor": ("checks,notify,maintenance,backlog,digest", 1), "checks": ("checks", 2),
           "notify": ("notify,digest", 2), "jobs": ("maintenance,backlog", 1)}
KILLABLE = ("checks", "notify", "jobs")


class FaultySink(ProviderSink):
    """The loopback Resend/Slack fake, failing `fail_rate` of the requests on FAULT_ROUTES with a 5xx
    and throttling `throttle_rate` of them with a 429 + Retry-After (on top of its own rate limits),
    by putting a scripted Reply in front of the request it is about to answer. Additions only: the
    sink itself is unchanged."""

    def __init__(self, *, fail_rate: float, throttle_rate: float, seed: int, **kw) -> None:
        super().__init__(**kw)
        self.fail_rate, self.throttle_rate = fail_rate, throttle_rate
        self.faults_on = True
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(seed)

    def _handle(self, rec, raw, arg, token):
        if self.faults_on and rec.route in FAULT_ROUTES:
            with self._lock:
                roll = self._rng.random()
                reply = None
                if roll < self.fail_rate:
                    reply = Reply(self._rng.choice((500, 502, 503)))
                    self.injected[f"provider {reply.status} ({rec.route})"] += 1
                elif roll < self.fail_rate + self.throttle_rate:
                    reply = Reply(429, headers={"Retry-After": str(self._rng.choice((1, 2, 3)))})
                    self.injected[f"provider 429 Retry-After ({rec.route})"] += 1
                if reply is not None:
                    self._scripts.setdefault(rec.route, deque()).appendleft(reply)
        return super()._handle(rec, raw, arg, token)


def short_config(dst: Path, rng: random.Random) -> Path:
    """config/ copied to `dst`, every check, job and backlog on a 10-30 s schedule, `for` at most 20 s,
    repeats every 3 minutes (so firing alerts keep delivering), the daily digest every minute."""
    shutil.copytree(REPO / "config", dst)
    if not (dst.parent / "ops").exists():  # runbook links are relative to the config folder's parent
        (dst.parent / "ops").symlink_to(REPO / "ops")
    sched = re.compile(r"^(\s*(?:-\s+)?schedule:\s*)(\S.*?)\s*(#.*)?$")
    pending_for = re.compile(r"^(\s*(?:-\s+)?for:\s*)(\S+)\s*(#.*)?$")
    for path in dst.glob("*/*.yaml"):
        if path.name not in ("checks.yaml", "maintenance.yaml", "backlogs.yaml"):
            continue
        every = {"checks.yaml": ("10s", "15s", "20s", "30s"), "maintenance.yaml": ("20s", "30s"),
                 "backlogs.yaml": ("20s",)}[path.name]
        out = []
        for line in path.read_text().splitlines():
            m = sched.match(line)
            if m:
                line = f"{m.group(1)}{rng.choice(every)}"
            m = pending_for.match(line)
            if m and path.name == "checks.yaml":
                try:
                    if parse_duration(m.group(2).strip("'\"")).total_seconds() > 20:
                        line = f"{m.group(1)}20s"
                except ValueError:
                    pass
            out.append(line)
        path.write_text("\n".join(out) + "\n")
    routing = (dst / "routing.yaml").read_text()
    routing = re.sub(r"repeat_interval: \S+", "repeat_interval: 3m", routing)
    routing = routing.replace('schedule: "0 8 * * *"', "schedule: 1m")
    (dst / "routing.yaml").write_text(routing)
    return dst


@dataclass
class Fleet:
    """Every process and server the soak started, stopped whole by close()."""

    run_dir: Path
    monitored: PostgresServer | None = None
    fleet_pg: PostgresServer | None = None
    redis: RedisServer | None = None
    sink: FaultySink | None = None
    env: dict[str, str] = field(default_factory=dict)
    workers: dict[str, Proc] = field(default_factory=dict)
    beat: Proc | None = None
    faults: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False

    def start_servers(self) -> None:
        self.monitored = PostgresServer(self.run_dir / "pg-monitored").start()
        self.fleet_pg = PostgresServer(self.run_dir / "pg-fleet").start()
        self.redis = RedisServer(self.run_dir / "redis").start()

    def make_env(self, monitored_url: str, fleet_url: str, cfg: Path) -> None:
        broker = self.redis.url
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RESEND_", "SLACK_", "ALERT_", "OPSFLEET_",
                                                                          "PAGERDUTY_", "HEARTBEAT_"))}
        env.update(DATABASE_URL=monitored_url, FLEET_DATABASE_URL=fleet_url, CELERY_BROKER_URL=broker,
                   CELERY_RESULT_BACKEND=broker, REDIS_URL=broker, OPSFLEET_CONFIG_DIR=str(cfg), OPSFLEET_PACKS="all",
                   RESEND_API_KEY=API_KEY, RESEND_API_URL=self.sink.resend_api_url,
                   ALERT_SLACK_WEBHOOK_URL=self.sink.slack_webhook_url, ALERT_EMAIL_RECIPIENTS="ops@example.com",
                   FROM_EMAIL="alerts@opsfleet.example", FROM_NAME="opsfleet soak", LOG_FORMAT="json",
                   LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
        self.env = env

    def start_worker(self, name: str) -> Proc:
        queues, concurrency = WORKERS[name]
        logs = self.run_dir / "logs" / f"{name}-{int(time.time())}"
        logs.mkdir(parents=True, exist_ok=True)
        proc = start_worker(self.env, logs, queues=queues, concurrency=concurrency, name=f"soak-{name}")
        with self.lock:
            closed = self.closed
            if not closed:
                self.workers[name] = proc
        if closed:  # started while the soak was being torn down (Ctrl-C): stop it too
            proc.kill()
        return proc

    def start_beat(self) -> None:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.beat = start_beat({**self.env, "LOG_LEVEL": "INFO"}, logs, f"beat-{int(time.time())}")

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process group (main process and pool children), as a crash would."""
        with self.lock:
            proc = self.workers.pop(name, None)
        if proc is None:  # being restarted by the watchdog right now
            return
        proc.kill(signal.SIGKILL)
        with self.lock:
            self.faults["worker SIGKILLed (and restarted)"] += 1

    def worker_rss(self) -> dict[str, int]:
        """RSS in bytes of each worker (main process + pool children: its process group), from /proc."""
        with self.lock:
            groups = {p.p.pid: name for name, p in self.workers.items()}
        out = dict.fromkeys(groups.values(), 0)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                pgrp = int(stat.rsplit(")", 1)[1].split()[2])
                if pgrp not in groups:
                    continue
                for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[groups[pgrp]] += int(line.split()[1]) * 1024
            except (OSError, ValueError, IndexError):
                continue
        return out

    def close(self) -> None:
        with self.lock:
            self.closed = True
            procs = list(self.workers.values())
            self.workers.clear()
        for proc in [*([self.beat] if self.beat else []), *procs]:
            try:
                proc.stop()
            except Exception:  # noqa: BLE001 - tear everything down whatever one does
                proc.kill()
        for stop in (self.sink, self.redis, self.fleet_pg, self.monitored):
            if stop is not None:
                try:
                    stop.stop()
                except Exception as exc:  # noqa: BLE001
                    print(f"  cleanup: {type(stop).__name__}: {exc}")
