"""The soak: the whole fleet under load and faults for a bounded time, then its invariants (issue 14, section 5).

    .venv/bin/python bench/soak.py [--minutes 10] [--scale 20000] [--storm-rate 1.5] [--drain-seconds 180]
                                   [--seed 14] [--keep]

Loopback only, not in CI, stops by itself; every process and server it started is stopped at the end,
also on Ctrl-C. It starts two throwaway Postgres servers (the monitored application, seeded with
ops.sample_app, and the fleet's own state), a redis-server, the provider sink (Resend + Slack) and
the fleet: four workers (`anchor` on every queue, never killed; `checks`, `notify`, `jobs`) and a
beat, on a copy of config/ with every pack and every schedule at 10-30 s (bench/soak_fleet.py).
While it runs:
  - the sample app receives writes every second (registrations, webhook logs, some 100 days old for
    the archive job; every 90 s an incident: webhook 5xx and 200 backlog registrations, then it clears);
  - the confirmation backlog drains on its 20 s schedule (and by remediate when it fires);
  - a notification storm on top of the alerts: 1.5 a second (two emails per Slack message), each its
    own outbox row, enqueued as a check run does (900 in 10 minutes, with what the checks fire);
  - the sink fails ~10% of the provider requests (500/502/503) and throttles ~5% (429 + Retry-After),
    on top of its own rate limits (Resend 5/s, Slack 1/s: real 429s past them);
  - a random worker (not the anchor) is SIGKILLed every 30-60 s and restarted;
  - Redis is restarted once (at 40% of the run, nothing persisted) and the fleet Postgres once (65%).
Then the drain: faults off, writes and beat stopped, notify.sweep and the backlog sent every 10 s by
hand until the outbox is final (leases are 120 s: a killed worker's row waits that out). Then the
invariants (bench/soak_checks.py), the load held, the faults by kind, and worker memory every 10 s.
Exit 0 when every invariant holds (memory flat included), 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from celery import Celery  # noqa: E402
from soak_checks import Storm, Writer, invariants, pairs, scalar, unfinished, webhook_total  # noqa: E402
from soak_fleet import API_KEY, KILLABLE, WORKERS, FaultySink, Fleet, short_config  # noqa: E402

MIB = 1024 * 1024
BACKLOG_KWARGS = {"limit": 20000, "batch_size": 500, "older_than": "10m"}


def log(started: float, text: str) -> None:
    print(f"[{time.monotonic() - started:6.0f} s] {text}", flush=True)


def restart_postgres(server) -> None:
    if hasattr(server, "restart"):
        server.restart()
    else:  # older devkit: stop, then start on the same port and data folder
        server.stop()
        server.start()


def restart_redis(server, down: float) -> None:
    if hasattr(server, "restart"):
        server.restart(down=down)
    else:
        server.stop()
        time.sleep(down)
        server.start()


class Chaos(threading.Thread):
    """Kills a random worker every 30-60 s (and starts it again), restarts Redis and the fleet Postgres once."""

    def __init__(self, fleet: Fleet, rng: random.Random, started: float, seconds: float) -> None:
        super().__init__(name="chaos", daemon=True)
        self.fleet, self.rng, self.started, self.seconds = fleet, rng, started, seconds
        self.stop = threading.Event()
        self.events: list[str] = []

    def note(self, text: str) -> None:
        self.events.append(f"{time.monotonic() - self.started:.0f} s {text}")
        log(self.started, text)

    def run(self) -> None:
        next_kill = 30 + self.rng.uniform(0, 30)
        redis_at, pg_at = 0.40 * self.seconds, 0.65 * self.seconds
        while not self.stop.wait(1.0):
            t = time.monotonic() - self.started
            try:
                if redis_at is not None and t >= redis_at:
                    redis_at = None
                    restart_redis(self.fleet.redis, down=3.0)
                    self.fleet.faults["Redis restarted (3 s down, nothing persisted)"] += 1
                    self.note("fault: Redis restarted (3 s down; queues, locks, buckets gone)")
                if pg_at is not None and t >= pg_at:
                    pg_at = None
                    t0 = time.monotonic()
                    restart_postgres(self.fleet.fleet_pg)
                    self.fleet.faults["fleet Postgres restarted (pg_ctl restart -m fast)"] += 1
                    self.note(f"fault: fleet Postgres restarted ({time.monotonic() - t0:.1f} s)")
                if t >= next_kill:
                    name = self.rng.choice(KILLABLE)
                    self.fleet.kill_worker(name)
                    self.note(f"fault: worker {name} SIGKILLed")
                    time.sleep(2)
                    if not self.stop.is_set():
                        self.fleet.start_worker(name)
                    next_kill = time.monotonic() - self.started + self.rng.uniform(30, 60)
            except Exception as exc:  # noqa: BLE001 - a failed injection is reported, the soak goes on
                self.note(f"chaos step failed: {type(exc).__name__}: {str(exc)[:200]}")


def watchdog(fleet: Fleet, observations: Counter, started: float, beat: bool = True) -> None:
    """A worker or the beat that exited without being killed is an observation, and is started again."""
    if beat and fleet.beat is not None and fleet.beat.p.poll() is not None:
        observations[f"beat exited by itself (rc {fleet.beat.p.returncode}; restarted)"] += 1
        log(started, f"beat exited by itself (rc {fleet.beat.p.returncode}), tail: "
                     f"{fleet.beat.output()[-300:]!r}; starting it again")
        fleet.start_beat()
    with fleet.lock:
        dead = [n for n, p in fleet.workers.items() if p.p.poll() is not None]
    for name in dead:
        with fleet.lock:
            proc = fleet.workers.pop(name, None)
        if proc is None:  # the chaos thread has it (killed, being restarted)
            continue
        crash = next((line for line in proc.output().splitlines() if "Unrecoverable error" in line), "")
        observations[f"worker {name} exited by itself (restarted): {crash[:160]}"] += 1
        log(started, f"worker {name} exited by itself; starting it again. {crash[:300]}")
        proc.kill()
        fleet.start_worker(name)


def progress(started: float, fleet_db, monitored, sink, faults: Counter) -> str:
    try:
        runs = scalar(fleet_db, "SELECT count(*) FROM fleet.check_runs")
        status = dict(pairs(fleet_db, "SELECT status, count(*) FROM fleet.notifications GROUP BY 1"))
        firing = scalar(fleet_db, "SELECT count(*) FROM fleet.alerts WHERE state = 'firing'")
        left = scalar(monitored, "SELECT count(*) FROM registrations WHERE status = 'completed' "
                                 "AND payment_status = 'completed' AND confirmation_number IS NULL")
    except Exception as exc:  # noqa: BLE001 - the fleet Postgres may be restarting right now
        return f"(fleet database unavailable: {type(exc).__name__})"
    outbox = " ".join(f"{s} {n}" for s, n in sorted(status.items()))
    return (f"check runs {runs} | firing {firing} | outbox {outbox} | sink: {len(sink.emails)} emails, "
            f"{len(sink.slack_messages)} Slack | backlog left {left} | faults {sum(faults.values())}")


def drain(started: float, fleet: Fleet, fleet_db, monitored, seconds: float) -> list[str]:
    """Faults off, beat stopped, sweeps and the backlog by hand until the outbox is final. Returns notes."""
    notes = []
    client = Celery(broker=fleet.redis.url)
    client.conf.broker_transport_options = {"visibility_timeout": 7200}
    deadline, accelerated = time.monotonic() + seconds, False
    while True:
        client.send_task("notify.sweep", queue="notify")
        client.send_task("backlog.reprocess_confirmations", kwargs=BACKLOG_KWARGS, queue="backlog")
        time.sleep(10)
        try:
            left = unfinished(fleet_db)
            backlog = scalar(monitored, "SELECT count(*) FROM registrations WHERE status = 'completed' AND "
                                        "payment_status = 'completed' AND confirmation_number IS NULL")
        except Exception as exc:  # noqa: BLE001
            log(started, f"drain: fleet database unavailable ({type(exc).__name__})")
            continue
        log(started, f"drain: outbox not final {left or 'none'}, backlog left {backlog}")
        if not left and not backlog:
            return notes
        if time.monotonic() > deadline:
            if accelerated:
                return notes
            # rows whose backoff reaches past the drain (after several 5xx in a row): due now, as their
            # next attempt would be; leases are never shortened (that is the promise under test)
            with fleet_db.begin() as conn:
                n = conn.execute(_sql("UPDATE fleet.notifications SET next_attempt_at = now() "
                                      "WHERE status = 'retrying' AND next_attempt_at > now()")).rowcount
            notes.append(f"drain: {n} retrying rows' backoff brought forward after {seconds:.0f} s")
            log(started, notes[-1])
            accelerated, deadline = True, time.monotonic() + 60


def _sql(text: str):
    import sqlalchemy as sa

    return sa.text(text)


def memory_report(samples: list[tuple[float, dict[str, int]]], warmup: float) -> tuple[bool, list[str]]:
    lines = ["  t (s) | " + " | ".join(f"{n:>7}" for n in WORKERS) + " |   total (MiB)"]
    for t, rss in samples:
        lines.append(f"  {t:5.0f} | " + " | ".join(f"{rss.get(n, 0) / MIB:7.1f}" for n in WORKERS)
                     + f" | {sum(rss.values()) / MIB:7.1f}")
    steady = [s for s in samples if s[0] >= warmup] or samples
    first, last = steady[0][1].get("anchor", 0), steady[-1][1].get("anchor", 0)
    growth = (last - first) / first if first else 0.0
    flat = abs(growth) <= 0.20
    total0, total1 = sum(steady[0][1].values()), sum(steady[-1][1].values())
    lines.append(f"  anchor worker (never killed): {first / MIB:.1f} MiB at {steady[0][0]:.0f} s -> {last / MIB:.1f} "
                 f"MiB at {steady[-1][0]:.0f} s ({growth:+.1%}): {'flat' if flat else 'NOT flat'} (within 20%)")
    lines.append(f"  all workers: {total0 / MIB:.1f} -> {total1 / MIB:.1f} MiB "
                 f"({(total1 - total0) / total0 if total0 else 0:+.1%}; the killed ones restart fresh)")
    return flat, lines


def run(args, fleet: Fleet, rng: random.Random, started: float) -> int:
    from ops import sample_app
    from worker.config import load_config
    from worker.fleet import migrate
    from worker.fleet.db import create, normalize_url

    fleet.start_servers()
    monitored_url, fleet_url = normalize_url(fleet.monitored.url), normalize_url(fleet.fleet_pg.url)
    migrate.upgrade(fleet_url)
    monitored, fleet_db = create(monitored_url), create(fleet_url)
    sample_app.init(monitored)
    seeded = sample_app.seed(monitored, args.scale, now=datetime.now(UTC))
    log(started, f"servers up; seeded {sum(seeded.values())} rows ({args.scale} registrations)")
    cfg_dir = short_config(fleet.run_dir / "config", rng)
    cfg = load_config(cfg_dir, packs="all")
    log(started, f"config: {len(cfg.checks)} checks, every pack, schedules 10-30 s ({cfg_dir})")
    fleet.sink = FaultySink(fail_rate=0.10, throttle_rate=0.05, seed=args.seed, resend_api_keys=[API_KEY],
                            rate_limits={"resend": (5.0, 10), "slack": (1.0, 3)}).start()
    fleet.make_env(monitored_url, fleet_url, cfg_dir)
    fleet_t0 = datetime.now(UTC)
    boot = [threading.Thread(target=fleet.start_worker, args=(n,)) for n in WORKERS]
    for t in boot:
        t.start()
    for t in boot:
        t.join()
    if set(fleet.workers) != set(WORKERS):
        raise RuntimeError(f"workers did not all start: {sorted(fleet.workers)}")
    fleet.start_beat()
    webhooks_before = webhook_total(monitored)
    log(started, f"fleet up: {len(fleet.workers)} workers, beat; soaking for {args.minutes:g} min")

    seconds = args.minutes * 60
    soak0, t_soak0 = time.monotonic(), datetime.now(UTC)
    writer = Writer(monitored, random.Random(args.seed + 1))
    chaos = Chaos(fleet, random.Random(args.seed + 2), soak0, seconds)
    samples: list[tuple[float, dict[str, int]]] = []
    observations: Counter = Counter()
    storm = Storm(fleet_db, Celery(broker=fleet.redis.url), args.storm_rate)
    threading.Thread(target=writer.run, name="writer", daemon=True).start()
    threading.Thread(target=storm.run, name="storm", daemon=True).start()
    chaos.start()
    next_print, next_sample = soak0 + 30, soak0
    while time.monotonic() - soak0 < seconds:
        now = time.monotonic()
        if now >= next_sample:
            samples.append((now - soak0, fleet.worker_rss()))
            next_sample += 10
        if now >= next_print:
            log(soak0, progress(soak0, fleet_db, monitored, fleet.sink, fleet.faults + fleet.sink.injected))
            next_print += 30
        watchdog(fleet, observations, soak0)
        time.sleep(1)
    t_soak1, soak_s = datetime.now(UTC), time.monotonic() - soak0
    writer.stop.set()
    storm.stop.set()
    chaos.stop.set()
    chaos.join(90)
    fleet.sink.faults_on = False
    fleet.beat.stop()
    watchdog(fleet, observations, soak0, beat=False)
    samples.append((time.monotonic() - soak0, fleet.worker_rss()))
    log(soak0, f"soak over after {soak_s:.0f} s; draining (faults off, writes and beat stopped)")
    notes = drain(soak0, fleet, fleet_db, monitored, args.drain_seconds)

    verdict = invariants(fleet_db, monitored, fleet.sink, since=fleet_t0, webhooks_before=webhooks_before,
                         webhooks_written=writer.counts["webhook_logs"])
    window = {"a": t_soak0, "b": t_soak1}
    runs = scalar(fleet_db, "SELECT count(*) FROM fleet.check_runs WHERE started_at BETWEEN :a AND :b", **window)
    run_status = dict(pairs(fleet_db, "SELECT status, count(*) FROM fleet.check_runs WHERE started_at BETWEEN :a "
                                      "AND :b GROUP BY 1", **window))
    sent = scalar(fleet_db, "SELECT count(*) FROM fleet.notifications WHERE status = 'sent' AND sent_at "
                            "BETWEEN :a AND :b", **window)
    numbered = scalar(monitored, "SELECT count(*) FROM registrations WHERE confirmation_number LIKE 'CNF-%' AND "
                                 "confirmation_generated_at BETWEEN :a AND :b", **window)
    requests = fleet.sink.requests
    print("\n## Load held (during the soak, before the drain)")
    print(f"  {soak_s:.0f} s; writes: " + ", ".join(f"{k} {v}" for k, v in writer.counts.items())
          + (f"; write errors {dict(writer.errors)}" if writer.errors else ""))
    print(f"  check runs: {runs} ({runs / soak_s:.2f}/s; " + ", ".join(f"{k} {v}" for k, v in sorted(run_status.items()))
          + ")")
    print(f"  deliveries: {sent} notifications sent ({sent / soak_s:.2f}/s); provider requests "
          f"{sum(r.at >= t_soak0.timestamp() for r in requests)} (soak and drain)")
    print("  notification storm (on top of the alerts): " + ", ".join(f"{k} {v}" for k, v in sorted(storm.counts.items())))
    print(f"  backlog: {numbered} registrations numbered and emailed ({numbered / soak_s:.2f}/s)")
    print("\n## Faults injected")
    faults = fleet.faults + fleet.sink.injected
    faults["provider 429 by the sink's own rate limit"] = sum(r.rate_limited for r in requests)
    for kind, n in sorted(faults.items()):
        print(f"  {n:6d}  {kind}")
    for event in chaos.events:
        print(f"    {event}")
    for kind, n in observations.items():
        print(f"  observed: {n} x {kind}")
    print("\n## Worker memory (RSS from /proc every 10 s: main process + pool children)")
    flat, lines = memory_report(samples, warmup=60)
    print("\n".join(lines))
    verdict.check(flat, "worker memory flat: the never-killed worker within 20% from 60 s to the end")
    print("\n## Invariants")
    for ok, text in verdict.lines:
        print(f"  {'OK  ' if ok else 'FAIL'} {text}")
    for note in [*verdict.notes, *notes]:
        print(f"  note {note}")
    print(f"\n{'every invariant holds' if verdict.ok else 'INVARIANTS BROKEN'}; logs in {fleet.run_dir}"
          + ("" if args.keep else " (removed; --keep keeps them)"))
    monitored.dispose()
    fleet_db.dispose()
    return 0 if verdict.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the soak runs (default 10)")
    parser.add_argument("--scale", type=int, default=20000, help="registrations seeded (default 20000)")
    parser.add_argument("--drain-seconds", type=float, default=180.0,
                        help="how long the drain waits for the outbox to be final (default 180: 120 s leases)")
    parser.add_argument("--storm-rate", type=float, default=1.5,
                        help="notifications a second written on top of the alerts, 2 emails per Slack message "
                             "(default 1.5; 0 turns the storm off)")
    parser.add_argument("--seed", type=int, default=14, help="random seed of the faults and writes")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (logs, configs) at the end")
    args = parser.parse_args(argv)
    run_dir = Path(tempfile.mkdtemp(prefix="opsfleet-soak-"))
    fleet = Fleet(run_dir)
    started = time.monotonic()

    def on_term(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return run(args, fleet, random.Random(args.seed), started)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything the soak started", flush=True)
        return 1
    finally:
        fleet.close()
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        print(f"stopped every process and server the soak started ({time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    sys.exit(main())
