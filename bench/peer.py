"""opsfleet beside the standard Prometheus stack: the same database, the same breaches, the same Slack fake.

    .venv/bin/python bench/peer.py [--rounds 3] [--idle-minutes 10] [--database-url URL] [--seed N]
                                   [--json PATH] [--keep] [--skip-breaches] [--skip-idle]

The usual way to watch one Postgres is Prometheus + postgres_exporter (+ sql_exporter for application SQL)
+ Alertmanager. This runs that stack from the Debian packages (prometheus, prometheus-postgres-exporter,
prometheus-sql-exporter: justwatchcom's, prometheus-alertmanager; a missing one is named in one line and
the bench exits 0) and opsfleet from this checkout (beat + one worker `-Q checks,notify -c 2`, a
redis-server of its own as broker) against fresh databases on the server of --database-url (dropped at
the end unless --keep), both posting to the loopback Slack fake (ops/devkit/sink), each on its own webhook.

Four rules, equivalent on both sides (bench/peer_stack.py): a session idle in a transaction over 60 s,
connections over 90% of the monitored database's CONNECTION LIMIT 20 for 30 s, a session waiting over 60 s
for a lock, and seed 004's double booking (a failed seat_reservation_audit_log row naming a constraint in the
last 5 minutes). opsfleet: the postgres pack's and ticketing pack's queries kept to the monitored database,
schedule 15s. Prometheus: postgres_exporter's pg_stat_activity_* (default collectors) and two sql_exporter
queries, scrape and evaluation every 15 s, the sql_exporter job every 15 s. Both: group_wait 30 s, repeat
4h, resolved notices sent; Alertmanager groups by alertname with its default group_interval 5m.

Breaches (unless --skip-breaches): each kind --rounds times. The kinds' threads take turns, one incident at a
time until opsfleet has sent its resolved notice (opsfleet folds what waits on a channel into the message
that leaves first, which would shorten its MTTD; Alertmanager's groups per alertname do not meet). A round:
a random instant within 15 s, make the breach, wait until both stacks' firing message is in the fake, hold
15 s, undo it, wait for both resolved messages (7 minutes each at most). MTTD = the breach instant (the
session idle or waiting 60 s, the 19th connection, the row committed) -> the fake accepted the firing
message. Then two rounds with every kind breached at once, in which each stack's alerting process is
restarted once both have told every kind (Alertmanager; opsfleet's worker and beat), by SIGKILL (a crash)
then SIGTERM (a restart): firing messages beyond the first are duplicates.

Cost of watching (unless --skip-idle): three watchers at once, each on an idle database of its own so that
pg_stat_database tells their load apart (the server has no pg_stat_statements unless it preloads it): the
Prometheus stack; opsfleet with only the four rules; opsfleet with its default packs (postgres, fleet) too.
After a 60 s warm-up, --idle-minutes of: CPU seconds per process tree (psutil, reaped prefork children
included), RSS and PSS (prefork children share their parent's pages, so the RSS sum counts them twice),
the monitored (and fleet) database's transactions, tuples and sessions per minute, and the CPU of the
server's backends serving each database. Then a worker's readiness (spawn -> `ready.` in its log) and
`import worker.app`. Not a test: a measurement to record in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_stack as ps  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TIMEOUT_S, HOLD_S, RESTART_HOLD_S, WARMUP_S = 420, 15, 150, 60
STACKS = ("opsfleet", "prometheus")


def say(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def first(rows, kind: str, firing: bool, after: float, before: float = float("inf")) -> float | None:
    return min((at for at, k, f, _ in rows if k == kind and f == firing and after <= at <= before), default=None)


def wait_told(sink, paths: dict[str, str], kinds: list[str], firing: bool, after: float, stop: threading.Event
              ) -> dict[str, dict[str, float]]:
    """stack -> kind -> the first message (firing or resolved) at or after `after`; until all or TIMEOUT_S."""
    deadline, got = time.time() + TIMEOUT_S, {}
    while not stop.is_set():
        got = {s: {k: at for k in kinds if (at := first(ps.told(sink, p), k, firing, after)) is not None}
               for s, p in paths.items()}
        if all(len(v) == len(kinds) for v in got.values()) or time.time() > deadline:
            break
        time.sleep(0.2)
    return got


def kind_rounds(kind: str, rounds: int, dsn: str, sink, paths, rng: random.Random, gate: threading.Lock, stop,
                out: list) -> None:
    with psycopg.connect(ps.pg_dsn(dsn).rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        for r in range(rounds):
            with gate:  # one incident at a time until opsfleet said resolved: it folds what waits on a channel
                if stop.wait(rng.uniform(0, ps.EVAL_S)):  # into the message that leaves first
                    return
                start = time.time()
                breach, undo = ps.BREACHES[kind](ps.pg_dsn(dsn), admin)
                fired = wait_told(sink, paths, [kind], True, start, stop)
                stop.wait(HOLD_S)
                undo()
                cleared = time.time()
                wait_told(sink, {"opsfleet": paths["opsfleet"]}, [kind], False, cleared, stop)
            resolved = wait_told(sink, paths, [kind], False, cleared, stop)  # Alertmanager: its group_interval
            rec = {"kind": kind, "round": r + 1, "start": start, "breach": breach, "cleared": cleared,
                   "end": time.time(), **{f"{s}_fired": fired[s].get(kind) for s in paths},
                   **{f"{s}_resolved": resolved[s].get(kind) for s in paths}}
            out.append(rec)
            say(f"  {kind} {r + 1}/{rounds}: " + ", ".join(
                f"{s} {rec[f'{s}_fired'] - breach:.1f} s" if rec[f"{s}_fired"] else f"{s} NOT TOLD" for s in paths))


def restart_round(sig: str, dsn: str, sink, stacks: dict, paths, stop) -> dict:
    """Every kind at once; once both stacks told each, restart each stack's alerting process; hold; undo."""
    with psycopg.connect(ps.pg_dsn(dsn).rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        start = time.time()
        undos = [ps.BREACHES[k](ps.pg_dsn(dsn), admin)[1] for k in ps.KINDS]
        fired = wait_told(sink, paths, ps.KINDS, True, start, stop)
        restarted = time.time()
        for s in STACKS:
            stacks[s].restart_alerting(ps.SIGNALS[sig])
        say(f"  restart ({sig}) done in {time.time() - restarted:.1f} s; holding {RESTART_HOLD_S} s")
        stop.wait(RESTART_HOLD_S)
        for undo in undos:
            undo()
        cleared = time.time()
        resolved = wait_told(sink, paths, ps.KINDS, False, cleared, stop)
        end = time.time()
    out = {"signal": sig, "start": start, "restarted": restarted, "cleared": cleared, "end": end, "per": {}}
    for s, p in paths.items():
        rows = ps.told(sink, p)
        for k in ps.KINDS:
            n = len({i for at, kk, f, i in rows if kk == k and f and start <= at <= end})
            out["per"][f"{s}:{k}"] = {"told_before": k in fired[s], "firing_msgs": n, "duplicates": max(0, n - 1),
                                      "resolved": k in resolved[s]}
    say(f"  restart ({sig}): " + ", ".join(f"{k} {v['firing_msgs']}" for k, v in out["per"].items()))
    return out


def breaches(args, run: str, admin, tmp: Path, sink, base: str, made: list[str]) -> dict:
    app, fleet = f"peer_{run}_app", f"peer_{run}_fleet"
    create_dbs(admin, base, made, [app, fleet], app_dbs=[app])
    admin.execute(f'ALTER DATABASE "{app}" CONNECTION LIMIT {ps.CONN_LIMIT}')
    stacks = {"prometheus": ps.PromStack(tmp, "prom", url(base, app), sink.url)}
    stacks["opsfleet"] = ps.OpsStack(tmp, "ops", url(base, app), url(base, fleet), sink, [])
    paths = {s: stacks[s].path for s in STACKS}
    stop, threads, recs = threading.Event(), [], []
    try:
        say("breaches: starting both stacks ...")
        for s in STACKS:
            stacks[s].start()
        t0 = time.time()
        with psycopg.connect(url(base, fleet)) as fc:
            ps.wait_until(lambda: fc.execute("SELECT count(DISTINCT check_name) FROM fleet.check_runs "
                                             "WHERE check_name LIKE 'peer_%'").fetchone()[0] == 4, 150, 1)
        if not ps.wait_until(lambda: stacks["prometheus"].evaluating(), 120, 1):
            raise RuntimeError("Prometheus did not evaluate its four rules healthy within 120 s")
        say(f"  both evaluating after {time.time() - t0:.0f} s; {args.rounds} rounds of each kind ...")
        rng, gate = random.Random(args.seed), threading.Lock()
        for k in ps.KINDS:
            t = threading.Thread(target=kind_rounds, args=(k, args.rounds, url(base, app), sink, paths,
                                                           random.Random(rng.randrange(2**32)), gate, stop, recs),
                                 daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        restarts = [restart_round(sig, url(base, app), sink, stacks, paths, stop) for sig in ("kill", "term")]
        all_rows = {s: ps.told(sink, p) for s, p in paths.items()}
        msgs = {s: len({i for *_, i in rows}) for s, rows in all_rows.items()}
        return {"rounds": sorted(recs, key=lambda r: (r["kind"], r["round"])), "restarts": restarts, "messages": msgs,
                "rows": all_rows, "prom_ready_s": stacks["prometheus"].ready_s, "loadavg": os.getloadavg()}
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for s in stacks.values():
            s.stop()


def idle(args, run: str, admin, tmp: Path, sink, base: str, made: list[str]) -> dict:
    names = {w: f"peer_{run}_idle_{w}" for w in ("prom", "ops", "opsdef")}
    fleets = {w: f"peer_{run}_idlefleet_{w}" for w in ("ops", "opsdef")}
    create_dbs(admin, base, made, [*names.values(), *fleets.values()], app_dbs=list(names.values()))
    watchers = {"Prometheus stack": ps.PromStack(tmp, "iprom", url(base, names["prom"]), sink.url),
                "opsfleet, the four rules": ps.OpsStack(tmp, "iops", url(base, names["ops"]), url(base, fleets["ops"]),
                                                        sink, []),
                "opsfleet + default packs": ps.OpsStack(tmp, "iopsdef", url(base, names["opsdef"]),
                                                        url(base, fleets["opsdef"]), sink, ["postgres", "fleet"])}
    dbs = {"Prometheus stack": (names["prom"], None), "opsfleet, the four rules": (names["ops"], fleets["ops"]),
           "opsfleet + default packs": (names["opsdef"], fleets["opsdef"])}
    all_dbs = [*names.values(), *fleets.values()]
    backends = ps.BackendCPU(ps.pg_dsn(base), all_dbs)
    try:
        say("idle: starting three watchers ...")
        for w in watchers.values():
            w.start()
        ready_s = watchers["Prometheus stack"].ready_s
        if not ps.wait_until(lambda: watchers["Prometheus stack"].evaluating(), 120, 1):
            raise RuntimeError("Prometheus did not evaluate its four rules healthy within 120 s")
        say(f"  warm-up {WARMUP_S} s, then {args.idle_minutes} minutes of watching idle databases ...")
        time.sleep(WARMUP_S)
        groups = {w: s.groups() for w, s in watchers.items()}
        t0, cpu0, db0 = time.time(), {w: {g: ps.cpu_s(p) for g, p in gs.items()} for w, gs in groups.items()}, \
            ps.db_stats(admin, all_dbs)
        backends.t0 = t0
        backends.start()
        mem: dict[str, dict[str, list]] = {w: {g: [] for g in gs} for w, gs in groups.items()}
        load = [os.getloadavg()]
        while time.time() - t0 < args.idle_minutes * 60:
            for w, gs in groups.items():
                for g, pids in gs.items():
                    mem[w][g].append(ps.memory(pids))
            time.sleep(min(15, max(0.1, args.idle_minutes * 60 - (time.time() - t0))))
        hours = (time.time() - t0) / 3600
        cpu1, db1 = {w: {g: ps.cpu_s(p) for g, p in gs.items()} for w, gs in groups.items()}, ps.db_stats(admin, all_dbs)
        backends.stop.set()
        backends.join(10)
        load.append(os.getloadavg())
        bcpu = backends.per_db()
        out = {"hours": hours, "loadavg": load, "prom_ready_s": ready_s, "watchers": {}}
        for w in watchers:
            procs = {g: {"cpu_s_per_h": (cpu1[w][g] - cpu0[w][g]) / hours,
                         "rss_mib": statistics.fmean(m[0] for m in mem[w][g]) / 2**20,
                         "pss_mib": statistics.fmean(m[1] for m in mem[w][g]) / 2**20,
                         "rss_max_mib": max(m[0] for m in mem[w][g]) / 2**20, "nproc": mem[w][g][-1][2]}
                     for g in groups[w]}
            load_of = {}
            for role, db in zip(("monitored", "fleet"), dbs[w], strict=True):
                if db:
                    load_of[role] = {k: (db1[db][k] - db0[db][k]) / (hours * 60) for k in db0[db]} | {
                        "backend_cpu_s_per_h": bcpu[db] / hours}
            out["watchers"][w] = {"procs": procs, "server": load_of}
        return out
    finally:
        backends.stop.set()
        for w in watchers.values():
            w.stop()


def readiness(args, run: str, admin, tmp: Path, sink, base: str, made: list[str]) -> dict:
    app, fleet = f"peer_{run}_ready_app", f"peer_{run}_ready_fleet"
    create_dbs(admin, base, made, [app, fleet], app_dbs=[app])
    ops = ps.OpsStack(tmp, "ready", url(base, app), url(base, fleet), sink, [])
    opsdef = ps.OpsStack(tmp, "readydef", url(base, app), url(base, fleet), sink, ["postgres", "fleet"])
    try:
        say("readiness: worker starts, 3 of each ...")
        out = {"loadavg": [os.getloadavg()], "default": ops.readiness(3, ()),
               "no_mingle_gossip": ops.readiness(3, ("--without-mingle", "--without-gossip")),
               "default_packs": opsdef.readiness(3, ())}
        imports = []
        for _ in range(3):
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-c", "import worker.app"], cwd=ps.REPO, env=ops.env, check=True)  # noqa: S603
            imports.append(time.monotonic() - t0)
        out["loadavg"].append(os.getloadavg())
        return out | {"import": imports}
    finally:
        ops.stop()
        opsdef.stop()


def url(base: str, name: str) -> str:
    return base.rsplit("/", 1)[0] + "/" + name


def create_dbs(admin, base: str, made: list[str], names: list[str], app_dbs: list[str]) -> None:
    for n in names:
        admin.execute(f'CREATE DATABASE "{n}"')
        made.append(n)
    for n in app_dbs:
        with psycopg.connect(ps.pg_dsn(url(base, n)), autocommit=True) as c:
            for stmt in ps.SCHEMA:
                c.execute(stmt)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="breaches of each kind (default 3)")
    ap.add_argument("--idle-minutes", type=float, default=10.0, help="minutes of watching idle databases (default 10)")
    ap.add_argument("--database-url", default=os.environ.get("OPSFLEET_BENCH_DATABASE_URL", DEFAULT_URL))
    ap.add_argument("--seed", type=int, default=None, help="seed of the breach instants (default: random)")
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--keep", action="store_true", help="keep the databases and the temp folder (configs, logs)")
    ap.add_argument("--skip-breaches", action="store_true")
    ap.add_argument("--skip-idle", action="store_true")
    args = ap.parse_args()
    if args.rounds < 1 or args.idle_minutes <= 0:
        ap.error("--rounds must be at least 1 and --idle-minutes above 0")
    if missing := ps.missing_packages():
        print(f"peer.py: skipped, the Prometheus stack is not installed: apt-get install {' '.join(missing)}")
        return 0
    args.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    base = args.database_url
    try:
        admin = psycopg.connect(ps.pg_dsn(base), autocommit=True)
    except psycopg.OperationalError as exc:
        print(f"peer.py: --database-url does not answer: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    from peer_report import report

    from ops.devkit.sink import ProviderSink

    run, made = uuid.uuid4().hex[:6], []
    tmp = Path(tempfile.mkdtemp(prefix="opsfleet-bench-peer-"))
    sink = ProviderSink().start()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ps.REPO, capture_output=True, text=True,
                            check=False).stdout.strip()
    out = {"seed": args.seed, "rounds": args.rounds, "idle_minutes": args.idle_minutes, "commit": commit, "machine": {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1), "loadavg_start": os.getloadavg(),
        "postgres": admin.execute("SHOW server_version").fetchone()[0],
        "preload": admin.execute("SHOW shared_preload_libraries").fetchone()[0]},
        "versions": {b: ps.version(b) for b in ps.BINARIES}}
    try:
        for phase, skip, fn in (("idle", args.skip_idle, idle), ("breaches", args.skip_breaches, breaches),
                                ("readiness", False, readiness)):
            if not skip:
                out[phase] = fn(args, run, admin, tmp, sink, base, made)
                out["machine"]["loadavg_end"] = os.getloadavg()
                if args.json:  # after each phase: the raw figures survive a phase or a report that fails
                    Path(args.json).write_text(json.dumps(out, indent=2, default=str))
        print(report(out))
        return 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        sink.stop()
        if args.keep:
            say(f"kept: databases {', '.join(made)}; configs and logs in {tmp}")
        else:
            for n in made:
                admin.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
            shutil.rmtree(tmp, ignore_errors=True)
        admin.close()


if __name__ == "__main__":
    sys.exit(main())
