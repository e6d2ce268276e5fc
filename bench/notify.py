"""Benchmark notification delivery: an alert storm against rate-limited fakes, and raw throughput.

    .venv/bin/python bench/notify.py [--instances 10000] [--checks 200] [--concurrency 4]
                                     [--email-rate 2] [--slack-rate 1] [--throughput-n 1000]

Everything runs for real, on this machine: a fresh Postgres database (created on the server of
--database-url, dropped at the end), a throwaway redis-server (broker and rate-limit buckets), the
ProviderSink (the loopback Resend + Slack fake, driven through the real SDKs) and real Celery
workers (`celery -A worker worker -Q checks,notify -c N`), with notify.sweep sent every
--sweep-every seconds the way beat would.

1. Storm. A table of `instances` rows (check_id, item, value) and `checks` SQL checks, each selecting
   its own rows, all above threshold and severity critical, routed to email + Slack with a short
   group_wait. The checks are enqueued at t0; every instance fires on both channels. The sink
   enforces the providers' limits itself (429 + Retry-After past them): Resend --email-rate
   requests/s, Slack --slack-rate messages/s. The fleet runs with its own default token buckets.
   Measured: messages the sink accepted per channel; per alert instance and channel, how many
   accepted messages name it (instances are read back out of the message text: a folded summary
   lists every instance it stands for), so duplicates = instances named by more than one message on
   a channel and lost = instances named by none (a Slack summary lists only its first 40 rows: there,
   the instances beyond what the messages say they stand for, "(+N more)"; cross-checked against the
   outbox: lost = a row not 'sent' at the end, directly or folded into a sent one); time to drain (t0 -> the sink's last
   accepted message on the channel) against the rate-limit bound (messages / rate).
2. Throughput with the limits lifted. N outbox rows, one per alert instance, each on its own channel
   (so nothing folds: grouping off), bucket rates far above anything reachable, an unlimited sink.
   Measured: deliveries/s through notify.deliver on the Celery workers, and through the plain
   deliver() function in a loop in this process, against a bare loop of resend.Emails.send calls
   (same pre-rendered email, a fresh Idempotency-Key each) to the same sink.

Prints Markdown (and the raw figures as JSON with --json PATH).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import psutil
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ops.devkit.servers import RedisServer  # noqa: E402
from ops.devkit.sink import ProviderSink  # noqa: E402
from worker.channels.registry import CHANNELS  # noqa: E402
from worker.fleet.db import create, normalize_url  # noqa: E402
from worker.notify.outbox import FOLD_LIMIT  # noqa: E402

# each channel names its own bucket's rate; an older checkout (the A/B) kept one table in ratelimit.py
FLEET_BUCKETS = {k: c.rate_limit for k, c in CHANNELS.items() if getattr(c, "rate_limit", None)}
if not FLEET_BUCKETS:
    from worker.notify.ratelimit import DEFAULTS as FLEET_BUCKETS  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
API_KEY = "re_bench_key_0123456789"
INSTANCE_RE = re.compile(r"\bs(\d{3})i(\d{2,})\b")


def say(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ infrastructure

class Worker:
    """A real Celery worker subprocess (its own session, so it is stopped as one group)."""

    def __init__(self, env: dict[str, str], log: Path, queues: str, concurrency: int, name: str,
                 extra: tuple[str, ...] = ()) -> None:
        self.log = log
        self._fh = open(log, "w")  # noqa: SIM115
        self.p = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", queues, "-c", str(concurrency),
             "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "-l", "INFO", *extra],
            env=env, cwd=REPO, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while "ready" not in log.read_text():
            if self.p.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text()[-3000:]
                self.stop()
                raise RuntimeError(f"celery worker did not start:\n{tail}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.p.poll() is None:
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._fh.close()


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and its children (a prefork worker: the parent and its pool), MiB."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def worker_env(db_url: str, redis_url: str, config_dir: Path, sink: ProviderSink) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESEND_", "SLACK_", "ALERT_", "OPSFLEET_"))}
    env.update(
        DATABASE_URL=db_url, CELERY_BROKER_URL=redis_url, OPSFLEET_CONFIG_DIR=str(config_dir),
        RESEND_API_KEY=API_KEY, RESEND_API_URL=sink.resend_api_url, ALERT_SLACK_WEBHOOK_URL=sink.slack_webhook_url,
        ALERT_EMAIL_RECIPIENTS="ops@example.com", FROM_EMAIL="alerts@example.com", FROM_NAME="opsfleet bench",
        LOG_FORMAT="json", LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
    )
    return env


def scalar(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def rows(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


# ------------------------------------------------------------------ 1. the storm

def write_storm_config(root: Path, n_checks: int, group_wait: str, sweep_interval: int) -> None:
    (root / "checks").mkdir(parents=True)
    lines = ["checks:"]
    for c in range(n_checks):
        lines += [
            f"  - name: storm_{c:03d}",
            f"    description: alert storm bench, check {c}",
            "    schedule: 1h",
            f"    query: SELECT item, value FROM storm WHERE check_id = {c:d}",  # noqa: S608 - an int
            '    condition: "> 10"',
            "    severity: critical",
            '    summary: "{{ labels.item }}"',
        ]
    (root / "checks" / "storm.yaml").write_text("\n".join(lines) + "\n")
    (root / "routing.yaml").write_text(f"""\
channels:
  email: {{kind: email}}   # the fleet's default bucket: {FLEET_BUCKETS['email'][0]:g}/s, burst {FLEET_BUCKETS['email'][1]}
  slack: {{kind: slack}}   # the fleet's default bucket: {FLEET_BUCKETS['slack'][0]:g}/s, burst {FLEET_BUCKETS['slack'][1]}
routes:
  - match: {{severity: critical}}
    channels: [email, slack]
    group_wait: {group_wait}
    repeat_interval: 4h
sweep_interval: {sweep_interval}s
""")


def instances_named(text: str) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in INSTANCE_RE.findall(text)}


MORE_RE = re.compile(r"\(\+(\d+) more\)")


def stands_for(text: str, named: int) -> int:
    """How many alerts a message stands for: its title's "(+N more)" plus one (a Slack summary lists
    only its first rows, worker/channels/slack.py MAX_ROWS), else the instances it names."""
    m = MORE_RE.search(text)
    return max(int(m.group(1)) + 1, named) if m else named


def storm(args, engine, db_url: str, redis_url: str, tmp: Path) -> dict:
    from celery import Celery

    n_checks, per_check = args.checks, args.instances // args.checks
    instances = n_checks * per_check
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE storm (check_id int NOT NULL, item text NOT NULL, value numeric NOT NULL)"))
        conn.execute(sa.text("""INSERT INTO storm SELECT c, format('s%si%s', lpad(c::text, 3, '0'), lpad(i::text, :w, '0')),
                                50 + (c * 7 + i) % 40 FROM generate_series(0, :nc - 1) c, generate_series(0, :pc - 1) i"""),
                     {"nc": n_checks, "pc": per_check, "w": max(2, len(str(per_check - 1)))})
        conn.execute(sa.text("CREATE INDEX storm_check ON storm (check_id)"))
    cfg = tmp / "storm-config"
    write_storm_config(cfg, n_checks, args.group_wait, args.sweep_every)
    limits = {"resend": (args.email_rate, args.email_burst), "slack": (args.slack_rate, args.slack_burst)}
    sink = ProviderSink(rate_limits=limits).start()
    workers: list[Worker] = []
    client = Celery(broker=redis_url)
    env = worker_env(db_url, redis_url, cfg, sink)
    try:
        if args.pools == "shared":
            workers.append(Worker(env, tmp / "storm-worker.log", "checks,notify", args.concurrency, "storm"))
        else:  # a pool per queue, as deployed past one machine
            workers.append(Worker(env, tmp / "storm-worker.log", "notify", args.concurrency - 1, "storm"))
            workers.append(Worker(env, tmp / "storm-checks.log", "checks", 1, "stormchecks"))
        say(f"storm: {instances} instances over {n_checks} checks -> email + slack; pools {args.pools}, "
            f"-c {args.concurrency}")
        expected = instances * 2
        t0 = time.time()
        for c in range(n_checks):
            client.send_task("checks.run", kwargs={"name": f"storm_{c:03d}"}, queue="checks")
        next_sweep = t0 + args.sweep_every
        load: list[float] = []
        rss: dict[str, list[float]] = {w.p.args[w.p.args.index("-Q") + 1]: [] for w in workers}
        next_rss = t0
        sweeps = 0
        t_rows = None
        at_rows = (0, 0)
        drained_at = None
        last_report = 0.0
        while True:
            now = time.time()
            if now - t0 > args.timeout:
                say(f"storm: timeout after {args.timeout}s, not drained")
                break
            if now >= next_sweep:
                client.send_task("notify.sweep", queue="notify")
                sweeps += 1
                next_sweep += args.sweep_every
            counts = dict(rows(engine, "SELECT status, count(*) FROM fleet.notifications GROUP BY status"))
            total = sum(counts.values())
            load.append(os.getloadavg()[0])
            if now >= next_rss:  # each worker's processes together (the parent and its pool)
                next_rss = now + 5
                for w in workers:
                    rss[w.p.args[w.p.args.index("-Q") + 1]].append(tree_rss_mib(w.p.pid))
            if t_rows is None and total >= expected:
                t_rows = now
                at_rows = (len(sink.emails), len(sink.slack_messages))
            if total >= expected and counts.get("sent", 0) + counts.get("dead", 0) + counts.get("suppressed", 0) == total:
                drained_at = now
                break
            if now - last_report >= 15:
                last_report = now
                say(f"  t+{now - t0:5.0f}s rows {total}/{expected} {counts} sink: {len(sink.emails)} emails, "
                    f"{len(sink.slack_messages)} slack")
            time.sleep(0.25)
        # let anything still in flight (a late redelivery, a duplicate task) show itself before counting
        client.send_task("notify.sweep", queue="notify")
        time.sleep(args.settle)
    finally:
        for w in workers:
            w.stop()
        client.close()
        sink.stop()

    emails, slack, requests = sink.emails, sink.slack_messages, sink.requests
    out: dict = {"instances": instances, "checks": n_checks, "expected_rows": expected, "sweeps": sweeps,
                 "drained": drained_at is not None, "t_rows": (t_rows - t0) if t_rows else None,
                 "db_drained": (drained_at - t0) if drained_at else None, "sink_limits": limits,
                 "fleet_buckets": {k: FLEET_BUCKETS[k] for k in ("email", "slack")},
                 "loadavg_1m": {"mean": sum(load) / len(load), "max": max(load)} if load else None,
                 "messages_when_rows_written": dict(zip(("email", "slack"), at_rows, strict=True)),
                 "worker_rss_mib": {q: {"first": v[0], "max": max(v), "last": v[-1]} for q, v in rss.items() if v}}
    fleet_bytes = scalar(engine, """SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
                                    JOIN pg_namespace n ON n.oid = c.relnamespace
                                    WHERE n.nspname = 'fleet' AND c.relkind IN ('r', 'p')""")
    notifications = scalar(engine, "SELECT count(*) FROM fleet.notifications")
    out["fleet_bytes"] = int(fleet_bytes or 0)
    out["fleet_bytes_per_notification"] = (fleet_bytes or 0) / notifications if notifications else None
    alerts_firing = scalar(engine, "SELECT count(*) FROM fleet.alerts WHERE state = 'firing'")
    out["alerts_firing"] = alerts_firing
    all_instances = {(c, i) for c in range(n_checks) for i in range(per_check)}
    rate = {"email": args.email_rate, "slack": args.slack_rate}
    per = {}
    for ch, msgs, texts in (
        ("email", emails, [m.get("text") or "" for m in emails]),
        ("slack", slack, [(m.get("text") or "") + json.dumps(m.get("blocks")) for m in slack]),
    ):
        named: Counter = Counter()
        timeline = []
        covered = 0
        for m, t in zip(msgs, texts, strict=True):
            found = instances_named(t)
            named.update(found)
            covered += stands_for(t, len(found))
            timeline.append((round(m["at"] - t0, 3), len(found)))
        # lost: instances no message names; where messages list only their first rows (Slack), the
        # instances beyond what the messages stand for (their "(+N more)"), net of duplicates
        doubled = sum(v - 1 for v in named.values() if v > 1)
        lost = (len(all_instances - set(named)) if covered == sum(named.values())
                else max(0, len(all_instances) - (covered - doubled)))
        route_prefix = "resend." if ch == "email" else "slack."
        reqs = [r for r in requests if (r.route or "").startswith(route_prefix)]
        ats = sorted(m["at"] for m in msgs)
        db = dict(rows(engine, "SELECT status, count(*) FROM fleet.notifications WHERE channel = :ch GROUP BY status",
                       ch=ch))
        primaries = scalar(engine, """SELECT count(*) FROM fleet.notifications WHERE channel = :ch AND status = 'sent'
                                      AND folded_into IS NULL""", ch=ch)
        folded = scalar(engine, "SELECT count(*) FROM fleet.notifications WHERE channel = :ch AND folded_into IS NOT NULL",
                        ch=ch)
        not_sent = scalar(engine, "SELECT count(*) FROM fleet.notifications WHERE channel = :ch AND status <> 'sent'", ch=ch)
        fan = rows(engine, """SELECT n, count(*) FROM (SELECT p.id, count(f.id) + 1 AS n FROM fleet.notifications p
                              LEFT JOIN fleet.notifications f ON f.folded_into = p.id
                              WHERE p.channel = :ch AND p.status = 'sent' AND p.folded_into IS NULL GROUP BY p.id) x
                              GROUP BY n ORDER BY n""", ch=ch)
        attempts = dict(rows(engine, "SELECT attempts, count(*) FROM fleet.notifications WHERE channel = :ch GROUP BY 1",
                             ch=ch))
        msgs_n = len(msgs)
        burst = limits["resend" if ch == "email" else "slack"][1]
        min_msgs = math.ceil(instances / (FOLD_LIMIT + 1))
        drain = (ats[-1] - t0) if ats else None
        per[ch] = {
            "messages": msgs_n, "requests": len(reqs), "rate_limited_429": sum(r.rate_limited for r in reqs),
            "other_errors": sum(1 for r in reqs if r.status and r.status >= 400 and not r.rate_limited),
            "instances_named": len(named), "duplicates": sum(1 for v in named.values() if v > 1),
            "lost": lost, "stood_for": covered, "max_times_named": max(named.values()) if named else 0,
            "db_status": db, "db_primaries": primaries, "db_folded": folded, "db_not_sent": not_sent,
            "fan_in": {int(n): int(k) for n, k in fan}, "attempts": {int(a): int(k) for a, k in attempts.items()},
            "first_at": (ats[0] - t0) if ats else None, "drain": drain,
            "bound": msgs_n / rate[ch], "bound_minus_burst": max(0, msgs_n - burst) / rate[ch],
            "ratio": drain / (msgs_n / rate[ch]) if drain and msgs_n else None,
            "min_messages": min_msgs, "min_bound": min_msgs / rate[ch],
            "ratio_to_min": drain / (min_msgs / rate[ch]) if drain else None,
            "achieved_rate": (msgs_n - 1) / (ats[-1] - ats[0]) if len(ats) > 1 else None,
            "single_row_messages": sum(1 for _, k in timeline if k == 1),
            "timeline": sorted(timeline),
            "refused_at": sorted(round(r.at - t0, 3) for r in reqs if r.rate_limited),
        }
    out["channels"] = per
    held = dict(rows(engine, "SELECT reason, sum(count) FROM fleet.held_back GROUP BY reason"))
    out["held_back"] = {k: int(v) for k, v in held.items()}
    drains = [p["drain"] for p in per.values() if p["drain"] is not None]
    bounds = [p["bound"] for p in per.values()]
    out["drain"] = max(drains) if drains else None
    out["bound"] = max(bounds) if bounds else None
    out["ratio"] = out["drain"] / out["bound"] if out["drain"] and out["bound"] else None
    log = (tmp / "storm-worker.log").read_text()
    out["worker_log"] = {k: log.count(f'"{k}"') for k in
                         ("notification_sent", "notification_throttled", "notification_retrying", "notification_dead",
                          "outbox_swept")}
    out["worker_errors"] = sum(1 for line in log.splitlines() if '"level": "error"' in line or "Traceback" in line)
    if args.keep_logs:
        Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
        (Path(args.keep_logs) / "storm-worker.log").write_text(log)
    return out


# ------------------------------------------------------------------ 2. throughput, limits lifted

def write_throughput_config(root: Path, n: int) -> None:
    (root / "checks").mkdir(parents=True)
    lines = ["checks:"]
    for name in ("tp_fleet", "tp_loop"):
        lines += [f"  - name: {name}", "    description: throughput bench", "    schedule: 1h",
                  "    query: SELECT item, value FROM tp", '    condition: "> 10"', "    severity: critical",
                  '    summary: "{{ labels.item }}"']
    (root / "checks" / "tp.yaml").write_text("\n".join(lines) + "\n")
    ch = ["channels:"] + [f"  t{i:05d}: {{kind: email, rate_limit: 1000000, burst: 1000000}}" for i in range(n)]
    rt = ["routes:"] + [f"  - {{match: {{item: t{i:05d}}}, channels: [t{i:05d}], group_wait: 0s}}" for i in range(n)]
    (root / "routing.yaml").write_text("\n".join(ch + rt) + "\n")


def throughput(args, engine, db_url: str, redis_url: str, tmp: Path) -> dict:
    import psycopg
    import redis
    import resend
    from celery import Celery

    from worker.channels.base import Message
    from worker.channels.email import EmailChannel
    from worker.checks.engine import run_check
    from worker.config import load_config
    from worker.fleet import db as fleet_db
    from worker.fleet.settings import Settings, get_settings
    from worker.notify.delivery import deliver

    n = args.throughput_n
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE fleet.check_runs, fleet.alerts, fleet.alert_events, fleet.notifications, "
                             "fleet.held_back CASCADE"))
        conn.execute(sa.text("CREATE TABLE tp (item text NOT NULL, value numeric NOT NULL)"))
        conn.execute(sa.text("INSERT INTO tp SELECT format('t%s', lpad(i::text, 5, '0')), 50 FROM generate_series(0, :n - 1) i"),
                     {"n": n})
    cfg_dir = tmp / "tp-config"
    write_throughput_config(cfg_dir, n)
    cfg = load_config(cfg_dir)
    out: dict = {"n": n, "loadavg_1m_start": os.getloadavg()[0]}
    sink = ProviderSink().start()  # no rate limit
    rclient = redis.Redis.from_url(redis_url)
    try:
        settings = Settings(resend_api_key=API_KEY, resend_api_url=sink.resend_api_url,
                            alert_email_recipients="ops@example.com", from_email="alerts@example.com",
                            from_name="opsfleet bench")

        # a) bare loop of SDK calls: the same kind of email, pre-rendered, one request each
        channel = EmailChannel(API_KEY, "alerts@example.com", "opsfleet bench", ["ops@example.com"],
                               api_url=sink.resend_api_url)
        params = channel.params(Message(notification_id=str(uuid.uuid4()), channel="t00000", check="tp_loop",
                                        severity="critical", status="firing", title="t00000", summary="t00000",
                                        description="throughput bench", labels={"item": "t00000"}, value=50.0,
                                        fingerprint="0" * 24, started_at=datetime.now(UTC)))
        resend.api_key, resend.api_url = API_KEY, sink.resend_api_url

        def one(_: int) -> None:
            resend.Emails.send(params, options={"idempotency_key": str(uuid.uuid4())})

        def bare_loop() -> float:
            sink.reset()
            t = time.perf_counter()
            for i in range(n):
                one(i)
            took = time.perf_counter() - t
            assert len(sink.emails) == n
            sink.reset()
            return took

        for _ in range(20):  # warm up
            one(0)
        bare = bare_loop()
        out["bare"] = {"seconds": bare, "per_s": n / bare}
        t = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(n)))
        bare4 = time.perf_counter() - t
        assert len(sink.emails) == n
        out["bare_threads"] = {"threads": args.concurrency, "seconds": bare4, "per_s": n / bare4}
        sink.reset()
        say(f"throughput: bare SDK loop {n / bare:.0f}/s, {args.concurrency} threads {n / bare4:.0f}/s")

        # b) the plain deliver() function in a loop, in this process (lease, silence, bucket, fold query,
        #    render, send, record), with the Redis buckets on
        now = datetime.now(UTC)
        ids = run_check(cfg.checks["tp_loop"], monitored=engine, fleet=engine, now=now, routing=cfg.routing).notification_ids
        assert len(ids) == n, len(ids)
        # the fleet engine notify.deliver itself uses (its settings: pre-ping or not, prepared statements),
        # made from this run's database URL
        os.environ["DATABASE_URL"] = os.environ["FLEET_DATABASE_URL"] = db_url
        get_settings.cache_clear()
        task_engine_factory = getattr(fleet_db, "hot_fleet_engine", None) or fleet_db.fleet_engine
        task_engine_factory.cache_clear()
        task_engine = task_engine_factory()
        # what one delivery costs the fleet database: transactions begun (autobegun reads included) and
        # statements sent, counted on the engine's own events; round trips, counted where psycopg waits
        # for the server (BEGIN, COMMIT and a checkout's ping included)
        calls = Counter()

        def on_begin(conn) -> None:
            calls["transactions"] += 1

        def on_statement(conn, cursor, statement, parameters, context, executemany) -> None:
            calls["statements"] += 1

        real_wait = psycopg.Connection.wait

        def counted_wait(self, *a, **kw):
            calls["round_trips"] += 1
            return real_wait(self, *a, **kw)

        sa.event.listen(task_engine, "begin", on_begin)
        sa.event.listen(task_engine, "before_cursor_execute", on_statement)
        psycopg.Connection.wait = counted_wait
        profile = cProfile.Profile() if args.profile else None
        t = time.perf_counter()
        try:
            if profile:
                profile.enable()
            statuses = Counter(deliver(nid, fleet=task_engine, settings=settings, routing=cfg.routing,
                                       now=datetime.now(UTC), redis_client=rclient).status for nid in ids)
        finally:
            loop = time.perf_counter() - t
            if profile:
                profile.disable()
                profile.dump_stats(args.profile)
                say(f"throughput: the deliver() loop's profile in {args.profile} (python -m pstats)")
            psycopg.Connection.wait = real_wait
            sa.event.remove(task_engine, "begin", on_begin)
            sa.event.remove(task_engine, "before_cursor_execute", on_statement)
            task_engine.dispose()
        out["deliver_loop"] = {"seconds": loop, "per_s": n / loop, "statuses": dict(statuses),
                               "emails": len(sink.emails), "transactions_per_delivery": calls["transactions"] / n,
                               "statements_per_delivery": calls["statements"] / n,
                               "round_trips_per_delivery": calls["round_trips"] / n,
                               "engine": task_engine_factory.__name__}
        sink.reset()
        say(f"throughput: deliver() loop {n / loop:.0f}/s {dict(statuses)}; per delivery "
            f"{calls['transactions'] / n:.2f} transactions, {calls['statements'] / n:.2f} statements, "
            f"{calls['round_trips'] / n:.2f} round trips (fleet database, {task_engine_factory.__name__}())")

        # c) notify.deliver on the Celery workers (then the bare loop again: the machine's load may have moved)
        worker = Worker(worker_env(db_url, redis_url, cfg_dir, sink), tmp / "tp-worker.log", "notify",
                        args.concurrency, "tp", extra=("--prefetch-multiplier", str(args.prefetch_multiplier)))
        client = Celery(broker=redis_url)
        try:
            ids = run_check(cfg.checks["tp_fleet"], monitored=engine, fleet=engine, now=datetime.now(UTC),
                            routing=cfg.routing).notification_ids
            assert len(ids) == n, len(ids)
            t = time.perf_counter()
            for nid in ids:
                client.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")
            enqueued = time.perf_counter() - t
            deadline = time.monotonic() + max(120, n / 2)
            while scalar(engine, "SELECT count(*) FROM fleet.notifications WHERE check_name = 'tp_fleet' "
                                 "AND status = 'sent'") < n and time.monotonic() < deadline:
                time.sleep(0.05)
            fleet_s = time.perf_counter() - t
            sent = scalar(engine, "SELECT count(*) FROM fleet.notifications WHERE check_name = 'tp_fleet' AND status = 'sent'")
            first_last = rows(engine, "SELECT min(sent_at), max(sent_at) FROM fleet.notifications WHERE check_name = 'tp_fleet'")[0]
        finally:
            worker.stop()
            client.close()
        out["fleet"] = {"seconds": fleet_s, "per_s": sent / fleet_s, "sent": sent, "emails": len(sink.emails),
                        "enqueue_seconds": enqueued, "concurrency": args.concurrency,
                        "sent_at_span": (first_last[1] - first_last[0]).total_seconds() if first_last[0] else None}
        say(f"throughput: Celery fleet -c {args.concurrency} {sent / fleet_s:.0f}/s ({sent}/{n} sent, "
            f"{len(sink.emails)} emails)")
        again = bare_loop()
        first = out["bare"]["seconds"]
        out["bare"] = {"seconds": (first + again) / 2, "per_s": n / ((first + again) / 2),
                       "runs_per_s": [n / first, n / again]}
        say(f"throughput: bare SDK loop again {n / again:.0f}/s")
    finally:
        rclient.close()
        sink.stop()
    out["ratio_fleet_to_bare"] = out["fleet"]["per_s"] / out["bare"]["per_s"]
    out["ratio_loop_to_bare"] = out["deliver_loop"]["per_s"] / out["bare"]["per_s"]
    return out


# ------------------------------------------------------------------ report

def report(args, s: dict | None, t: dict | None, wall: float) -> str:
    o = []
    if s:
        pools = (f"one Celery worker -c {args.concurrency} on checks,notify" if args.pools == "shared" else
                 f"Celery workers -Q notify -c {args.concurrency - 1} and -Q checks -c 1")
        o.append(f"Alert storm: {s['instances']:,} alert instances over {s['checks']} checks, routed critical -> "
                 f"email + Slack (group_wait {args.group_wait}), {s['expected_rows']:,} outbox rows; sink limits "
                 f"Resend {args.email_rate:g}/s (burst {args.email_burst}), Slack {args.slack_rate:g}/s (burst "
                 f"{args.slack_burst}); fleet buckets email {FLEET_BUCKETS['email'][0]:g}/s burst "
                 f"{FLEET_BUCKETS['email'][1]}, Slack {FLEET_BUCKETS['slack'][0]:g}/s burst {FLEET_BUCKETS['slack'][1]}; "
                 f"{pools}; notify.sweep every {args.sweep_every}s.")
        o.append("")
        o.append("| channel | messages accepted | requests (429) | instances named | duplicates | lost | "
                 "outbox not sent | fan-in (rows per message) | first / last message | bound (messages / rate) | "
                 "drain / bound | min. messages (51 per summary) | drain / min. bound |")
        o.append("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
        for ch, p in s["channels"].items():
            fan = p["fan_in"]
            fan_txt = (f"{min(fan)}-{max(fan)}, median "
                       f"{sorted(k for k, v in fan.items() for _ in range(v))[sum(fan.values()) // 2]}") if fan else "-"
            o.append(f"| {ch} | {p['messages']} | {p['requests']} ({p['rate_limited_429']}) | {p['instances_named']:,} | "
                     f"{p['duplicates']} | {p['lost']} | {p['db_not_sent']} | {fan_txt} | "
                     f"{_f(p['first_at'])} / {_f(p['drain'])} s | {p['bound']:.1f} s | **{_r(p['ratio'])}** | "
                     f"{p['min_messages']} ({p['min_bound']:.1f} s) | {_r(p['ratio_to_min'])} |")
        o.append("")
        o.append(f"Storm drained (every outbox row sent): {_f(s['db_drained'])} s after t0 "
                 f"(all {s['expected_rows']:,} rows written by t+{_f(s['t_rows'])} s); overall drain "
                 f"{_f(s['drain'])} s against a bound of {_f(s['bound'])} s: **{_r(s['ratio'])}**. "
                 f"Messages accepted by the time every outbox row was written: {s['messages_when_rows_written']}. "
                 f"Single-row messages (nothing folded in): "
                 f"{ {ch: p['single_row_messages'] for ch, p in s['channels'].items()} }. "
                 f"Achieved rate first -> last message: "
                 f"{ {ch: round(p['achieved_rate'] or 0, 2) for ch, p in s['channels'].items()} } /s. "
                 f"Held back: {s['held_back']}. Worker log: {s['worker_log']}, errors {s['worker_errors']}. "
                 f"Load average (1 min) during the storm: mean {_f((s['loadavg_1m'] or {}).get('mean'))}, "
                 f"max {_f((s['loadavg_1m'] or {}).get('max'))}.")
        rss = "; ".join(f"-Q {q}: {v['first']:.0f} first, {v['max']:.0f} max, {v['last']:.0f} last"
                        for q, v in s.get("worker_rss_mib", {}).items())
        per_n = s.get("fleet_bytes_per_notification")
        o.append("")
        o.append(f"Workers' RSS (each worker's processes together, MiB, sampled every 5 s): {rss}. Fleet schema "
                 f"on disk after the storm: {s.get('fleet_bytes', 0) / 2**20:.1f} MiB, "
                 f"{per_n:,.0f} bytes per notification row (alerts, events, runs and indexes included)."
                 if per_n else f"Workers' RSS: {rss}.")
    if t:
        o.append("")
        o.append(f"Throughput with the limits lifted: {t['n']:,} deliveries, each on its own channel (nothing folds), "
                 "bucket rates 10^6/s, sink unlimited; email through the Resend SDK.")
        o.append("")
        o.append("| path | deliveries | time | deliveries/s | vs bare SDK loop |")
        o.append("|---|---:|---:|---:|---:|")
        b = t["bare"]["per_s"]
        runs = ", ".join(f"{r:.0f}" for r in t["bare"].get("runs_per_s", []))
        o.append(f"| bare loop of resend.Emails.send (1 thread; mean of runs before and after: {runs}/s) | {t['n']} | "
                 f"{t['bare']['seconds']:.2f} s | {b:.0f} | 1.00x |")
        bt = t["bare_threads"]
        o.append(f"| bare loop, {bt['threads']} threads | {t['n']} | {bt['seconds']:.2f} s | {bt['per_s']:.0f} | "
                 f"{bt['per_s'] / b:.2f}x |")
        dl = t["deliver_loop"]
        o.append(f"| deliver() in a loop (1 process) | {t['n']} | {dl['seconds']:.2f} s | {dl['per_s']:.0f} | "
                 f"{dl['per_s'] / b:.2f}x |")
        if "transactions_per_delivery" in dl:
            cost = (f"Per delivery in the deliver() loop: {dl['transactions_per_delivery']:.2f} fleet transactions, "
                    f"{dl['statements_per_delivery']:.2f} statements, {dl.get('round_trips_per_delivery', 0):.2f} "
                    f"round trips to the fleet database (BEGIN, COMMIT and pings included; on "
                    f"{dl.get('engine', 'the bench engine')}(), the engine notify.deliver uses).")
        else:
            cost = ""
        f = t["fleet"]
        o.append(f"| notify.deliver on Celery, -c {f['concurrency']} | {f['sent']} | {f['seconds']:.2f} s | "
                 f"{f['per_s']:.0f} | **{f['per_s'] / b:.2f}x** |")
        o.append("")
        if cost:
            o.append(cost)
            o.append("")
        o.append(f"Load average (1 min) at the start of this part: {t['loadavg_1m_start']:.1f}.")
    o.append("")
    o.append(f"Wall time of the run: {wall:.0f} s.")
    return "\n".join(o)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _r(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--database-url", default=os.environ.get("OPSFLEET_BENCH_DATABASE_URL", DEFAULT_URL),
                    help="a server where this user may CREATE DATABASE")
    ap.add_argument("--instances", type=int, default=10_000)
    ap.add_argument("--checks", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--pools", choices=("shared", "split"), default="shared",
                    help="shared: one worker on checks,notify -c N; split: -Q notify -c N-1 and -Q checks -c 1")
    ap.add_argument("--email-rate", type=float, default=2.0)
    ap.add_argument("--slack-rate", type=float, default=1.0)
    ap.add_argument("--email-burst", type=int, default=2, help="the sink's Resend bucket size")
    ap.add_argument("--slack-burst", type=int, default=1, help="the sink's Slack bucket size")
    ap.add_argument("--group-wait", default="2s")
    ap.add_argument("--sweep-every", type=int, default=30, help="seconds between notify.sweep (beat's default: 30)")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds to wait after draining before counting")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up on the storm after this many seconds")
    ap.add_argument("--throughput-n", type=int, default=1000)
    ap.add_argument("--prefetch-multiplier", type=int, default=1,
                    help="the throughput worker's (celery worker --prefetch-multiplier); the app's default is 1")
    ap.add_argument("--skip-storm", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy the storm worker's log here")
    ap.add_argument("--profile", metavar="PATH", help="cProfile the deliver() loop into PATH (its rate is then slower)")
    args = ap.parse_args()
    if args.instances % args.checks or args.checks > 1000:
        ap.error("--instances must be a multiple of --checks, with at most 1000 checks")

    from worker.fleet.logs import configure_logging

    configure_logging("console", "WARNING", force=True)  # this process's own deliver() loop: quiet
    started = time.perf_counter()
    admin = sa.create_engine(normalize_url(args.database_url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"opsfleet_bench_notify_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    db_url = sa.make_url(normalize_url(args.database_url)).set(database=name).render_as_string(hide_password=False)
    redis_server = None
    engine = None
    s = t = None
    try:
        with tempfile.TemporaryDirectory(prefix="opsfleet-bench-notify-") as d:
            tmp = Path(d)
            redis_server = RedisServer(tmp / "redis").start()
            from worker.fleet.migrate import upgrade

            upgrade(db_url)
            engine = create(db_url, application_name="bench-notify", pool_size=4)
            if not args.skip_storm:
                s = storm(args, engine, db_url, redis_server.url, tmp)
            if not args.skip_throughput:
                t = throughput(args, engine, db_url, redis_server.url, tmp)
    finally:
        if engine is not None:
            engine.dispose()
        if redis_server is not None:
            redis_server.stop()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    wall = time.perf_counter() - started
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "storm": s, "throughput": t, "wall": wall},
                                              indent=2, default=str))
    print(report(args, s, t, wall))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
