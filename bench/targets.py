"""Benchmark one fleet watching many databases: do the checks of N targets hold their minute?

    .venv/bin/python bench/targets.py [--targets 100] [--minutes 10] [--concurrency 2]
                                      [--database-url URL] [--warmup 2] [--json PATH]

Everything runs for real on this machine: N fresh databases on the server of --database-url (plus
one for the fleet's state), every one a target of config/targets.yaml with the `postgres` pack, every
check of the pack on a 1-minute cron schedule (`* * * * *`: on the minute, so a run's lateness
from its slot is the fleet's, not an interval's phase) (N x 20 evaluations a minute, plus the fleet's own checks,
once each); a throwaway redis-server as broker; RedBeat's beat and one Celery worker
(`-Q checks,notify -c CONCURRENCY`, prefork) from this checkout; notifications go to the loopback
Resend fake. After --minutes (the first --warmup minutes left out of the figures: the workers' first
connections, the beat's first ticks) it reads fleet.check_runs and prints:

  - every (check, target) slot of the measured minutes: evaluated once, missed, or twice;
  - lateness from the slot's start to the run's start (p50, p99, max);
  - evaluations per second; CPU seconds per evaluation of the worker (its processes) and of the
    Postgres server (every postgres process), from /proc;
  - the worker's RSS over time (every 30 s), the most check connections the fleet held to the
    server (pg_stat_activity, sampled every 5 s), and beat's CPU per minute.

Removes its databases at the end. Not a test: a measurement to record in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import sqlalchemy as sa
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ops.devkit.process import CELERY, Proc  # noqa: E402
from ops.devkit.servers import RedisServer  # noqa: E402
from ops.devkit.sink import ProviderSink  # noqa: E402
from worker.fleet.db import normalize_url  # noqa: E402
from worker.fleet.migrate import upgrade  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def say(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def url_for(base: str, name: str) -> str:
    return base.rsplit("/", 1)[0] + "/" + name


def write_config(root: Path, targets: dict[str, str]) -> int:
    """A config folder: the postgres and fleet packs (every postgres check each minute), N targets.
    Returns how many (check, target) pairs a minute holds."""
    for pack in ("postgres", "fleet"):
        shutil.copytree(REPO / "config" / pack, root / pack, ignore=shutil.ignore_patterns("tests"))
    checks = yaml.safe_load((root / "postgres" / "checks.yaml").read_text())
    per_target = 0
    for c in checks["checks"]:
        c.pop("runbook", None)
        c["schedule"] = "* * * * *"  # each minute on the minute: a slot's lateness is the run's, not beat's phase
        if c.get("database") != "fleet" and c.get("kind", "sql") == "sql" and c.get("enabled", True):
            per_target += 1
    (root / "postgres" / "checks.yaml").write_text(yaml.safe_dump(checks, sort_keys=False))
    fleet = yaml.safe_load((root / "fleet" / "checks.yaml").read_text())
    for c in fleet["checks"]:
        c.pop("runbook", None)
    (root / "fleet" / "checks.yaml").write_text(yaml.safe_dump(fleet, sort_keys=False))
    (root / "packs.yaml").write_text("enabled: [fleet]\n")
    (root / "targets.yaml").write_text(yaml.safe_dump({"targets": [
        {"name": name, "url": url, "packs": ["postgres"]} for name, url in targets.items()]}, sort_keys=False))
    (root / "routing.yaml").write_text(yaml.safe_dump({
        "channels": {"email": {"kind": "email"}},
        "routes": [{"match": {}, "channels": ["email"], "group_wait": "30s", "repeat_interval": "24h"}]}))
    return per_target * len(targets)


class Measured(Proc):
    """The devkit's process (its own session, stopped as one group), with its CPU and memory read."""

    def family(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.p.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> float:
        total = 0.0
        for p in self.family():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss_mib(self) -> float:
        total = 0
        for p in self.family():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total / 2**20


def postgres_cpu() -> float:
    """CPU seconds of every postgres process on this machine (the server under test, here)."""
    total = 0.0
    for p in psutil.process_iter(["name"]):
        if p.info["name"] and p.info["name"].startswith("postgres"):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    return total


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup", type=int, default=2, help="whole minutes left out of the figures at the start")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--cap", type=int, default=None, help="OPSFLEET_CHECK_CONNECTIONS for the worker (default: the fleet's, 10)")
    ap.add_argument("--database-url", default=os.environ.get("OPSFLEET_BENCH_DATABASE_URL", DEFAULT_URL))
    ap.add_argument("--json", help="write the raw figures here")
    args = ap.parse_args()

    run = uuid.uuid4().hex[:6]
    admin = sa.create_engine(normalize_url(args.database_url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    names = [f"opsfleet_bt_{run}_{i:03d}" for i in range(args.targets)]
    fleet_name = f"opsfleet_bt_{run}_fleet"
    procs: list[Measured] = []
    tmp = Path(tempfile.mkdtemp(prefix="opsfleet-bench-targets-"))
    redis_server = RedisServer(tmp / "redis").start()
    sink = ProviderSink().start()
    out: dict = {"targets": args.targets, "minutes": args.minutes, "concurrency": args.concurrency, "cap": args.cap or 10}
    try:
        say(f"creating {args.targets + 1} databases ...")
        with admin.connect() as conn:
            for n in [*names, fleet_name]:
                conn.execute(sa.text(f'CREATE DATABASE "{n}"'))
        fleet_url = url_for(args.database_url, fleet_name)
        upgrade(fleet_url)
        cfg = tmp / "config"
        cfg.mkdir()
        pairs_per_minute = write_config(cfg, {f"t{i:03d}": url_for(args.database_url, n) for i, n in enumerate(names)})
        out["pairs_per_minute"] = pairs_per_minute
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OPSFLEET_", "RESEND_", "SLACK_", "ALERT_"))},
               "DATABASE_URL": fleet_url, "CELERY_BROKER_URL": redis_server.url, "REDIS_URL": redis_server.url,
               "OPSFLEET_CONFIG_DIR": str(cfg), "OPSFLEET_PACKS_DIR": str(cfg), "OPSFLEET_PACKS": "fleet",
               "RESEND_API_KEY": "re_bench_key_0123456789", "RESEND_API_URL": sink.resend_api_url,
               "ALERT_EMAIL_RECIPIENTS": "ops@example.com", "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING",
               "PYTHONUNBUFFERED": "1", **({"OPSFLEET_CHECK_CONNECTIONS": str(args.cap)} if args.cap else {})}
        say(f"{pairs_per_minute} (check, target) evaluations a minute; starting the worker (-c {args.concurrency}) "
            "and beat ...")
        worker = Measured([*CELERY, "worker", "-Q", "checks,notify", "-c", str(args.concurrency), "-n", f"bt{run}@%h",
                           "--without-mingle", "--without-gossip", "-l", "WARNING"], env, tmp / "worker.log")
        procs.append(worker)
        if not worker.wait_for("[queues]", 120):  # the banner (-l WARNING logs no "ready")
            raise RuntimeError(f"worker did not start:\n{worker.output()[-3000:]}")
        beat = Measured([*CELERY, "beat", "-l", "INFO", "-s", str(tmp / "beat-schedule")], env, tmp / "beat.log")
        procs.append(beat)
        fleet = sa.create_engine(normalize_url(fleet_url), poolclass=sa.pool.NullPool)
        t0 = time.time()
        cpu0 = {"worker": worker.cpu(), "beat": beat.cpu(), "postgres": postgres_cpu()}
        rss: list[tuple[float, float]] = []
        conns: list[int] = []
        measured_from = None
        end = t0 + args.minutes * 60
        while time.time() < end:
            time.sleep(5)
            now = time.time()
            with admin.connect() as conn:
                conns.append(conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE :p AND application_name = 'opsfleet-checks'"),
                    {"p": f"opsfleet_bt_{run}_%"}).scalar())
            if not rss or now - rss[-1][0] >= 30:
                rss.append((now, worker.rss_mib()))
                say(f"  t+{now - t0:4.0f}s worker RSS {rss[-1][1]:.0f} MiB, check connections {conns[-1]}")
            if measured_from is None and now - t0 >= args.warmup * 60:
                measured_from = now
                cpu_m = {"worker": worker.cpu(), "beat": beat.cpu(), "postgres": postgres_cpu()}
        t1 = time.time()
        cpu1 = {"worker": worker.cpu(), "beat": beat.cpu(), "postgres": postgres_cpu()}
        for p in reversed(procs):
            p.stop()
        procs.clear()

        with fleet.connect() as conn:
            slots = conn.execute(sa.text(
                """SELECT slot, count(*) AS runs, count(DISTINCT (check_name, target)) AS pairs,
                          percentile_disc(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - slot)) AS p50,
                          max(extract(epoch FROM started_at - slot)) AS max_late
                   FROM fleet.check_runs WHERE target <> '' AND slot >= to_timestamp(:a) AND slot < to_timestamp(:b)
                   GROUP BY slot ORDER BY slot"""),
                {"a": measured_from, "b": t1 - 60}).all()
            late = [float(r[0]) for r in conn.execute(sa.text(
                """SELECT extract(epoch FROM started_at - slot) FROM fleet.check_runs
                   WHERE target <> '' AND slot >= to_timestamp(:a) AND slot < to_timestamp(:b)"""),
                {"a": measured_from, "b": t1 - 60})]
            statuses = dict(conn.execute(sa.text(
                "SELECT status, count(*) FROM fleet.check_runs WHERE target <> '' AND slot >= to_timestamp(:a) "
                "AND slot < to_timestamp(:b) GROUP BY status"), {"a": measured_from, "b": t1 - 60}).all())
            total_runs = conn.execute(sa.text("SELECT count(*) FROM fleet.check_runs WHERE started_at >= to_timestamp(:a)"),
                                      {"a": measured_from}).scalar()
        fleet.dispose()
        expected = pairs_per_minute
        out["slots"] = [{"slot": r.slot.isoformat(), "runs": r.runs, "pairs": r.pairs, "missed": expected - r.pairs,
                         "twice": r.runs - r.pairs, "p50_late_s": float(r.p50), "max_late_s": float(r.max_late)}
                        for r in slots]
        measured_s = t1 - measured_from
        out.update({
            "measured_minutes": round(measured_s / 60, 2), "full_slots": len(slots),
            "missed": sum(s["missed"] for s in out["slots"]), "twice": sum(s["twice"] for s in out["slots"]),
            "late_p50_s": pct(late, 0.5), "late_p99_s": pct(late, 0.99), "late_max_s": max(late) if late else None,
            "statuses": statuses, "evaluations_per_s": total_runs / measured_s,
            "worker_cpu_per_eval_ms": 1000 * (cpu1["worker"] - cpu_m["worker"]) / max(total_runs, 1),
            "server_cpu_per_eval_ms": 1000 * (cpu1["postgres"] - cpu_m["postgres"]) / max(total_runs, 1),
            "worker_cpu_share": (cpu1["worker"] - cpu_m["worker"]) / measured_s,
            "server_cpu_share": (cpu1["postgres"] - cpu_m["postgres"]) / measured_s,
            "beat_cpu_s_per_min": 60 * (cpu1["beat"] - cpu_m["beat"]) / measured_s,
            "rss_mib": [round(m) for _, m in rss], "max_check_connections": max(conns) if conns else None,
            "cpu_whole_run": {k: cpu1[k] - cpu0[k] for k in cpu1},
            "loadavg": os.getloadavg(),
        })
        print(report(out))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2, default=str))
        return 0 if out["missed"] == 0 and out["twice"] == 0 else 1
    finally:
        for p in reversed(procs):
            p.stop()
        sink.stop()
        redis_server.stop()
        with admin.connect() as conn:
            for n in [*names, fleet_name]:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def report(o: dict) -> str:
    rss = o["rss_mib"]
    lines = [
        f"## {o['targets']} targets x the postgres pack, every check each minute ({o['pairs_per_minute']:,} evaluations "
        f"a minute), worker -c {o['concurrency']} + beat, connection cap {o['cap']}, {o['measured_minutes']} measured "
        "minutes",
        "",
        "| full slots | (check, target) slots expected | missed | twice | lateness p50 / p99 / max | evaluations/s | "
        "worker CPU per evaluation | server CPU per evaluation | worker RSS first / last / max | most check connections "
        "| beat CPU per minute |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|",
        f"| {o['full_slots']} | {o['full_slots'] * o['pairs_per_minute']:,} | {o['missed']:,} | {o['twice']} | "
        f"{o['late_p50_s']:.1f} / {o['late_p99_s']:.1f} / {o['late_max_s'] or 0:.1f} s | {o['evaluations_per_s']:.1f} | "
        f"{o['worker_cpu_per_eval_ms']:.1f} ms | {o['server_cpu_per_eval_ms']:.1f} ms | "
        f"{rss[0] if rss else 0} / {rss[-1] if rss else 0} / {max(rss) if rss else 0} MiB | "
        f"{o['max_check_connections']} | {o['beat_cpu_s_per_min']:.2f} s |",
        "",
        f"Run statuses: {o['statuses']}. CPU share over the measured minutes: worker {o['worker_cpu_share']:.2f} cores, "
        f"Postgres {o['server_cpu_share']:.2f} cores. Load average at the end: "
        f"{', '.join(f'{x:.1f}' for x in o['loadavg'])}.",
        "",
        "Per slot (missed = pairs with no run in the slot):",
        "",
        "| slot | runs | missed | twice | p50 late | max late |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {s['slot'][11:16]} | {s['runs']} | {s['missed']} | {s['twice']} | {s['p50_late_s']:.1f} s | "
          f"{s['max_late_s']:.1f} s |" for s in o["slots"]],
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
