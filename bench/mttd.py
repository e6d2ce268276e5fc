"""Benchmark mean time to detect: from the instant the data goes bad to the provider accepting the alert.

    .venv/bin/python bench/mttd.py [--rounds 10] [--rounds-1m-for N] [--concurrency 2]
                                   [--database-url URL] [--seed N] [--json PATH] [--keep]

The latency measured elsewhere (bench/checks.py, bench/notify.py) starts at `celery call`; an operator's
starts when the data goes bad. Everything runs for real on this machine: a fresh monitored database with
one table, `gauge(name text primary key, v numeric)`, a fresh fleet database (both on the server of
--database-url, dropped at the end), a throwaway redis-server as broker, RedBeat's beat and one Celery
worker (`-Q checks,notify -c CONCURRENCY`, prefork) from this checkout, and the loopback Resend + Slack
fake (ops/devkit/sink). The config folder holds the `fleet` pack and four checks of its own, one per
configuration, each reading its own row of `gauge` (`> 10`, critical, routed to email and Slack with
group_wait 0s):

    mttd_30s_nofor   schedule 30s            mttd_1m_nofor   schedule 1m
    mttd_30s_for30s  schedule 30s, for 30s   mttd_1m_for1m   schedule 1m, for 1m

Each check's breach loop runs in a thread of its own: wait a uniformly random time within 60 s (the
schedules' common period: beat sends the 1m batches with every other 30 s tick, when the 30 s batch starts
a few ms later; a wait within 30 s would land every breach of a 30 s check before the same one of its two
ticks), commit `v = 50` (the breach: the wall time just after COMMIT returns), wait for the sink to accept
the firing email naming the check (and the Slack message), set `v = 0`, wait for both resolved notices.
Printed per configuration: MTTD (breach -> the sink accepted the email) p50 / p90 / max against the bound
interval + for + 2 s and the expected p50 interval / 2 + for; MTTD split (from fleet.alert_events) into
the wait for the first evaluation that saw it, the `for` wait and delivery; every breach over its bound.
Apart, beat's lateness (fleet.check_runs and beat's log): a run's start against its slot, beat's send
against its previous send + interval, send -> run start.

Not a test: a measurement to record in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
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
# name, schedule, interval (s), for (s)
CONFIGS = [("mttd_30s_nofor", "30s", 30, 0), ("mttd_30s_for30s", "30s", 30, 30),
           ("mttd_1m_nofor", "1m", 60, 0), ("mttd_1m_for1m", "1m", 60, 60)]
PERIOD_S = math.lcm(*(c[2] for c in CONFIGS))  # the breaches' random instant: uniform over it
SLACK_GRACE_S = 30.0  # after the email, how long the Slack message may take before the loop moves on
SEND_RE = re.compile(r"Sending due task (\S+) \(")
ROW_RE = re.compile(r"\[([A-Z]+)\] \*?(mttd_[a-z0-9]+_[a-z0-9]+)\b")


def say(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def url_for(base: str, name: str) -> str:
    return base.rsplit("/", 1)[0] + "/" + name


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def write_config(root: Path) -> None:
    """The fleet pack (packs.yaml) and the four checks of the folder's own, routed to email + Slack."""
    checks = [{"name": name, "description": f"bench/mttd.py: gauge row {name} above 10",
               "schedule": schedule, "query": f"SELECT v AS value FROM gauge WHERE name = '{name}'",  # noqa: S608
               "condition": "> 10", **({"for": f"{for_s}s"} if for_s else {}), "severity": "critical",
               "summary": "{{ check }} at {{ value }}"}
              for name, schedule, _, for_s in CONFIGS]
    (root / "checks.yaml").write_text(yaml.safe_dump({"checks": checks}, sort_keys=False))
    (root / "packs.yaml").write_text("enabled: [fleet]\n")
    (root / "routing.yaml").write_text(yaml.safe_dump({
        "channels": {"email": {"kind": "email"}, "slack": {"kind": "slack"}},
        "routes": [{"match": {}, "channels": ["email", "slack"], "group_wait": "0s", "repeat_interval": "24h",
                    "send_resolved": True}]}, sort_keys=False))


def rows_named(text: str) -> dict[str, bool]:
    """The alert rows of a message's body, check -> resolved: a folded message carries several, each
    with its own status (`[CRITICAL] mttd_1m_nofor`, `*[RESOLVED] mttd_30s_nofor*`)."""
    return {name: tag == "RESOLVED" for tag, name in ROW_RE.findall(text)}


def accepted(sink: ProviderSink, check: str, resolved: bool, after: float) -> dict[str, float]:
    """The first instant (sink clock) each channel accepted a message with a firing (or resolved)
    row of `check`, at or after `after`."""
    out: dict[str, float] = {}
    for channel, msgs, body in (("email", sink.emails, lambda m: m.get("text") or ""),
                                ("slack", sink.slack_messages, lambda m: json.dumps(m.get("blocks")))):
        for m in msgs:
            if m["at"] >= after and rows_named(body(m)).get(check) is resolved:
                out[channel] = min(out.get(channel, m["at"]), m["at"])
    return out


def wait_for(sink: ProviderSink, check: str, resolved: bool, after: float, timeout: float,
             stop: threading.Event, both: bool = True) -> dict[str, float]:
    """Poll the sink until the email (and, with `both`, the Slack message) is accepted or `timeout`."""
    deadline = time.time() + timeout
    got: dict[str, float] = {}
    while time.time() < deadline and not stop.is_set():
        got = accepted(sink, check, resolved, after)
        if "email" in got and ("slack" in got or not both):
            break
        if "email" in got:  # the email is in: give Slack its grace, not the whole timeout
            deadline = min(deadline, got["email"] + SLACK_GRACE_S)
        time.sleep(0.05)
    return got


def breach_loop(name: str, interval: int, for_s: int, rounds: int, app, sink: ProviderSink, rng: random.Random,
                stop: threading.Event, out: list[dict]) -> None:
    """`rounds` breaches of one check, each at a random instant, each waited for and undone."""
    timeout = 2 * (interval + for_s) + 60
    for r in range(rounds):
        if stop.wait(rng.uniform(0, PERIOD_S)):
            return
        with app.begin() as conn:
            conn.execute(sa.text("UPDATE gauge SET v = 50 WHERE name = :n"), {"n": name})
        breach = time.time()
        fired = wait_for(sink, name, False, breach, timeout, stop)
        with app.begin() as conn:
            conn.execute(sa.text("UPDATE gauge SET v = 0 WHERE name = :n"), {"n": name})
        reset = time.time()
        rec = {"check": name, "round": r + 1, "breach": breach, "email": fired.get("email"),
               "slack": fired.get("slack"), "reset": reset}
        out.append(rec)
        mttd = f"{rec['email'] - breach:5.1f} s" if rec["email"] else "NOT DETECTED"
        say(f"  {name} {r + 1}/{rounds}: MTTD {mttd}")
        if not rec["email"]:
            continue  # nothing fired: the row is back at 0, nothing to resolve
        done = wait_for(sink, name, True, reset, interval + 60, stop)
        rec["resolved"] = done.get("email")
        if "email" not in done and not stop.is_set():
            say(f"  {name}: no resolved notice within {interval + 60} s of the reset")


def beat_sends(log: Path) -> dict[str, list[float]]:
    """Entry name -> the instants beat logged sending it (its JSON log lines' timestamps)."""
    sends: dict[str, list[float]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if (m := SEND_RE.search(line)) and line.startswith("{"):
            ts = json.loads(line)["timestamp"].replace("Z", "+00:00")
            sends.setdefault(m.group(1), []).append(datetime.fromisoformat(ts).timestamp())
    return sends


def analyse(breaches: list[dict], fleet, sends: dict[str, list[float]], t0: float) -> dict:
    """Join each breach to its transitions (fleet.alert_events) and each run to beat's send."""
    with fleet.connect() as conn:
        events = conn.execute(sa.text(
            "SELECT check_name, to_state, extract(epoch FROM at) FROM fleet.alert_events WHERE at >= to_timestamp(:a) "
            "ORDER BY at"), {"a": t0}).all()
        runs = conn.execute(sa.text(
            "SELECT check_name, extract(epoch FROM slot), extract(epoch FROM started_at), status FROM fleet.check_runs "
            "WHERE started_at >= to_timestamp(:a) AND check_name LIKE 'mttd_%' ORDER BY started_at"), {"a": t0}).all()
    per: dict[str, dict] = {}
    for name, schedule, interval, for_s in CONFIGS:
        mine = [b for b in breaches if b["check"] == name]
        for b in mine:
            evs = [(s, float(at)) for c, s, at in events if c == name and b["breach"] - 5 <= float(at) <= b["reset"]]
            pending = next((at for s, at in evs if s == "pending"), None)
            firing = next((at for s, at in evs if s == "firing"), None)
            first = pending if pending is not None else firing
            b.update(mttd=(b["email"] - b["breach"]) if b["email"] else None,
                     mttd_slack=(b["slack"] - b["breach"]) if b["slack"] else None,
                     eval_wait=(first - b["breach"]) if first is not None else None,
                     for_wait=(firing - first) if firing is not None and first is not None else None,
                     delivery=(b["email"] - firing) if firing is not None and b["email"] else None,
                     bound=interval + for_s + 2)
        mine_runs = [(float(slot), float(start)) for c, slot, start, _ in runs if c == name]
        starts = [start for _, start in mine_runs]
        entry_sends = sorted(sends.get(f"checks[{schedule}]", []))  # the batch of the two checks on it
        to_start = [start - max(s for s in entry_sends if s <= start + 0.5) for start in starts
                    if entry_sends and entry_sends[0] <= start + 0.5]
        per[name] = {"schedule": schedule, "interval": interval, "for": for_s, "breaches": mine,
                     "runs": len(mine_runs), "start_minus_slot": [start - slot for slot, start in mine_runs],
                     "beat_send_late": [b - a - interval for a, b in zip(entry_sends, entry_sends[1:], strict=False)],
                     "send_to_start": to_start, "eval_gaps": [b - a for a, b in zip(starts, starts[1:], strict=False)],
                     "statuses": sorted({s for c, _, _, s in runs if c == name}), "run_starts": starts,
                     "events": [(s, float(at)) for c, s, at in events if c == name]}
    return per


def fmt(values: list[float], ms: bool = False) -> str:
    vals = [v * (1000 if ms else 1) for v in values if v is not None]
    return f"{pct(vals, 0.5):.{0 if ms else 1}f} / {max(vals):.{0 if ms else 1}f} {'ms' if ms else 's'}" if vals else "-"


def report(o: dict) -> str:
    m = o["machine"]
    lines = [f"## MTTD with beat: breach committed -> the provider accepted the email ({o['rounds_note']})", "",
             f"{m['date']}; {m['cores']} cores, {m['ram_gib']} GiB RAM, Postgres {m['postgres']}; beat (RedBeat) + "
             f"one worker -c {o['concurrency']} (`-Q checks,notify`) + the fleet pack; load average at the end "
             f"{', '.join(f'{x:.1f}' for x in m['loadavg'])}; {o['wall_minutes']:.1f} minutes in all; seed {o['seed']}.",
             "", "| check | schedule | for | n | MTTD p50 | p90 | max | expected p50 (interval/2 + for) | "
             "bound (interval + for + 2 s) | max <= bound | Slack p50 / max |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    over, worst = [], []
    for name, c in o["per"].items():
        mttd = [b["mttd"] for b in c["breaches"] if b["mttd"] is not None]
        missed, bound = sum(1 for b in c["breaches"] if b["mttd"] is None), c["interval"] + c["for"] + 2
        over += [b for b in c["breaches"] if b["mttd"] is None or b["mttd"] > bound]
        worst += [(max(mttd) if mttd and not missed else float("inf"), name)] if c["breaches"] else []
        figs = (f"{pct(mttd, 0.5):.1f} s | {pct(mttd, 0.9):.1f} s | {max(mttd):.1f} s" if mttd else "- | - | -")
        verdict = ("**no**" if missed or not mttd or max(mttd) > bound else "yes") if c["breaches"] else "-"
        lines.append(f"| {name} | {c['schedule']} | {c['for']} s | {len(mttd)}"
                     f"{f' (+{missed} not detected)' if missed else ''} | {figs} | {c['interval'] / 2 + c['for']:.0f} s | "
                     f"{bound} s | {verdict} | {fmt([b['mttd_slack'] for b in c['breaches']])} |")
    held = [n for w, n in worst if w < 120]
    lines += ["", f"Seed 002 asks for MTTD < 2 minutes: held (every breach) by {', '.join(held) or 'none'}"
              + (f"; not by {', '.join(n for w, n in worst if w >= 120)}." if len(held) < len(worst) else "."),
              "", "Where the time went (p50 / max): the wait for the first evaluation that read the breach, the "
              "`for` wait (pending -> firing), and delivery (the firing run's start -> the sink accepted the email).",
              "", "| check | first evaluation | for wait | delivery |", "|---|---:|---:|---:|"]
    for name, c in o["per"].items():
        bs = c["breaches"]
        lines.append(f"| {name} | {fmt([b['eval_wait'] for b in bs])} | {fmt([b['for_wait'] for b in bs])} | "
                     f"{fmt([b['delivery'] for b in bs])} |")
    lines += ["", "Breaches over their bound:" if over else "No breach over its bound.", ""]
    for b in over:
        parts = ", ".join(f"{k} {b[k]:.1f} s" for k in ("eval_wait", "for_wait", "delivery") if b.get(k) is not None)
        lines.append(f"- {b['check']} round {b['round']}: " + (f"MTTD {b['mttd']:.1f} s > {b['bound']} s ({parts})"
                                                              if b["mttd"] is not None else "not detected"))
    lines += ["", "Beat's lateness, apart (p50 / max): a run's start against its slot (fleet.check_runs "
              "`started_at - slot`; an interval schedule's slots are multiples of the interval since the epoch, "
              "beat sends on its own phase), beat's send against its own previous send + interval (beat's log), "
              "the send -> the run's start (queue, worker, the batch's check before it); and the gaps between "
              "the check's consecutive evaluations (min / max, and how many fell short of the interval).", "",
              "| check | runs | started_at - slot | beat's send late | send -> run start | evaluation gaps | "
              "gaps < interval | run statuses |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, c in o["per"].items():
        g = c["eval_gaps"]
        lines.append(f"| {name} | {c['runs']} | {fmt(c['start_minus_slot'])} | {fmt(c['beat_send_late'], True)} | "
                     f"{fmt(c['send_to_start'], True)} | {f'{min(g):.3f} / {max(g):.3f} s' if g else '-'} | "
                     f"{sum(1 for x in g if x < c['interval'])} of {len(g)} | {', '.join(c['statuses'])} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help="breaches per check (default 10)")
    ap.add_argument("--rounds-1m-for", type=int, default=None,
                    help="breaches of the 1m + for 1m check (default: --rounds; each takes 2-4 minutes)")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None, help="seed of the breach instants (default: random)")
    ap.add_argument("--database-url", default=os.environ.get("OPSFLEET_BENCH_DATABASE_URL", DEFAULT_URL))
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (the worker's and beat's logs)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.rounds_1m_for is not None and args.rounds_1m_for < 0:
        ap.error(f"--rounds-1m-for must be 0 or more, got {args.rounds_1m_for}")
    if not 1 <= args.concurrency <= 16:
        ap.error(f"--concurrency must be 1..16, got {args.concurrency}")
    rounds = {n: args.rounds_1m_for if n == "mttd_1m_for1m" and args.rounds_1m_for is not None else args.rounds
              for n, *_ in CONFIGS}
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)

    run = uuid.uuid4().hex[:6]
    admin = sa.create_engine(normalize_url(args.database_url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            pg = conn.execute(sa.text("SHOW server_version")).scalar()
    except sa.exc.OperationalError as exc:
        print(f"mttd.py: --database-url does not answer: {str(exc.orig).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    app_name, fleet_name = f"opsfleet_mttd_{run}_app", f"opsfleet_mttd_{run}_fleet"
    procs: list[Proc] = []
    tmp = Path(tempfile.mkdtemp(prefix="opsfleet-bench-mttd-"))
    redis_server = sink = app = None
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        redis_server = RedisServer(tmp / "redis").start()
        sink = ProviderSink().start()
        with admin.connect() as conn:
            for n in (app_name, fleet_name):
                conn.execute(sa.text(f'CREATE DATABASE "{n}"'))
        app_url, fleet_url = url_for(args.database_url, app_name), url_for(args.database_url, fleet_name)
        app = sa.create_engine(normalize_url(app_url), pool_size=len(CONFIGS))
        with app.begin() as conn:
            conn.execute(sa.text("CREATE TABLE gauge (name text PRIMARY KEY, v numeric NOT NULL)"))
            for name, *_ in CONFIGS:
                conn.execute(sa.text("INSERT INTO gauge VALUES (:n, 0)"), {"n": name})
        upgrade(fleet_url)
        cfg = tmp / "config"
        cfg.mkdir()
        write_config(cfg)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OPSFLEET_", "RESEND_", "SLACK_", "ALERT_"))},
               "DATABASE_URL": app_url, "FLEET_DATABASE_URL": fleet_url, "CELERY_BROKER_URL": redis_server.url,
               "REDIS_URL": redis_server.url, "OPSFLEET_CONFIG_DIR": str(cfg), "OPSFLEET_PACKS_DIR": str(REPO / "config"),
               "RESEND_API_KEY": "re_bench_key_0123456789", "RESEND_API_URL": sink.resend_api_url,
               "ALERT_SLACK_WEBHOOK_URL": sink.slack_webhook_url, "ALERT_EMAIL_RECIPIENTS": "ops@example.com",
               "FROM_EMAIL": "alerts@example.com", "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        say(f"starting the worker (-c {args.concurrency}) and beat; breach seed {seed} ...")
        worker = Proc([*CELERY, "worker", "-Q", "checks,notify", "-c", str(args.concurrency), "-n", f"mttd{run}@%h",
                       "--without-mingle", "--without-gossip", "-l", "WARNING"], env, tmp / "worker.log")
        procs.append(worker)
        if not worker.wait_for("[queues]", 120):
            raise RuntimeError(f"worker did not start:\n{worker.output()[-3000:]}")
        beat = Proc([*CELERY, "beat", "-l", "INFO", "-s", str(tmp / "beat-schedule")], {**env, "LOG_LEVEL": "INFO"},
                    tmp / "beat.log")
        procs.append(beat)
        fleet = sa.create_engine(normalize_url(fleet_url), poolclass=sa.pool.NullPool)
        t0 = time.time()
        say("waiting for every check's first run ...")
        while True:
            with fleet.connect() as conn:
                seen = conn.execute(sa.text("SELECT count(DISTINCT check_name) FROM fleet.check_runs "
                                            "WHERE check_name LIKE 'mttd_%'")).scalar()
            if seen == len(CONFIGS):
                break
            if time.time() - t0 > 150 or beat.p.poll() is not None or worker.p.poll() is not None:
                raise RuntimeError(f"the checks did not run within 150 s:\n{(beat.output() + worker.output())[-3000:]}")
            time.sleep(1)
        measured_from = time.time()
        breaches: list[dict] = []
        rng = random.Random(seed)
        for name, _, interval, for_s in CONFIGS:
            t = threading.Thread(target=breach_loop, name=name, daemon=True,
                                 args=(name, interval, for_s, rounds[name], app, sink,
                                       random.Random(rng.randrange(2**32)), stop, breaches))
            t.start()
            threads.append(t)
        say(f"breaching: {', '.join(f'{n} x{r}' for n, r in rounds.items())}")
        for t in threads:
            t.join()
        t1 = time.time()
        for p in reversed(procs):
            p.stop()
        procs.clear()
        per = analyse(breaches, fleet, beat_sends(tmp / "beat.log"), measured_from)
        fleet.dispose()
        note = f"{args.rounds} breaches per check" + (
            f", {rounds['mttd_1m_for1m']} of mttd_1m_for1m" if rounds["mttd_1m_for1m"] != args.rounds else "")
        out = {"seed": seed, "concurrency": args.concurrency, "rounds": rounds, "rounds_note": note,
               "wall_minutes": (t1 - t0) / 60, "per": per, "machine": {
                   "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cores": os.cpu_count(),
                   "ram_gib": round(psutil.virtual_memory().total / 2**30, 1), "postgres": pg, "loadavg": os.getloadavg()}}
        if args.json:  # first: the raw figures survive a report that fails
            out["messages"] = [{"channel": ch, **{k: m[k] for k in ("at", "subject", "text", "tags", "blocks") if k in m}}
                               for ch, ms in (("email", sink.emails), ("slack", sink.slack_messages)) for m in ms]
            Path(args.json).write_text(json.dumps(out, indent=2, default=str))
        print(report(out))
        bad = any(b["mttd"] is None or b["mttd"] > b["bound"] for c in per.values() for b in c["breaches"])
        return 1 if bad else 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        for p in reversed(procs):
            p.stop()
        if app is not None:
            app.dispose()
        if sink is not None:
            sink.stop()
        if redis_server is not None:
            redis_server.stop()
        with admin.connect() as conn:
            for n in (app_name, fleet_name):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)'))
        admin.dispose()
        if args.keep:
            say(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
