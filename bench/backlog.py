"""Benchmark backlog reprocessing: registrations/s end to end, against the database floor and the naive design.

    .venv/bin/python bench/backlog.py [--sizes 100000,1000000] [--workers 2] [--batch-size 1000]
                                      [--repeat 3] [--naive-sample 2000] [--database-url URL]

For each size it builds one database with that many pending registrations (paid, no confirmation
number: seed 000's backlog) on the server of --database-url (default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres; the user must be allowed to CREATE DATABASE),
then measures each design on its own copy of it (CREATE DATABASE ... TEMPLATE, then a CHECKPOINT so
every phase starts from the same state), in the same run:

  floor      one set-based UPDATE assigning every confirmation number (the database's own limit);
             for context also the same writes as the real job, set-based (numbers, email rows,
             email status), i.e. what batching cannot beat.
  db part    worker.backlog.runs.reprocess() in this process with a provider stub that answers at once:
             the batched SQL alone (claim with SKIP LOCKED, number + email row, record), one process.
             Floor and db part run --repeat times in pairs, each first in every other pair (a VM's
             disk and CPU vary by 30% and more from one minute to the next: the ratio is taken within
             each pair, and the median of the pairs reported with the lowest and highest).
  end to end --workers real Celery workers (`celery -A worker`, prefork, one process each) run
             backlog.reprocess_confirmations at once on one backlog; the Resend fake
             (ops.devkit.sink.ProviderSink, in its own process) answers at once through the real SDK.
             Checked afterwards: one number and one sent email row per registration, and the fake
             holds exactly one email per registration. Peak RSS is the worker processes' VmHWM.
  naive      (first size only) one Celery task per registration, each with one single-email send,
             on the same number of worker processes, run on a sample of --naive-sample registrations;
             its rate is extrapolated to the full size (said so in the output).

Needs redis-server (a throwaway one is started) and Postgres. Prints Markdown; --json for raw figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from statistics import median

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
API_KEY = "re_bench_0123456789"
BACKLOG = "status = 'completed' AND payment_status = 'completed' AND confirmation_number IS NULL"


# -------------------------------------------------------------------- the naive design, as a Celery app
# `celery -A backlog:naive_app worker` (with bench/ on PYTHONPATH) runs it; only the naive phase uses it.

def _naive_app():
    from celery import Celery

    broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    app = Celery("naive_backlog", broker=broker)
    app.conf.update(task_serializer="json", accept_content=["json"], task_acks_late=True, task_ignore_result=True,
                    worker_prefetch_multiplier=1, worker_hijack_root_logger=False, task_default_queue="naive")

    @app.task(name="naive.confirm_one")
    def confirm_one(registration_id: int) -> None:
        """What the seed's edge functions did per registration: number it, write its email row, send one
        email, record the result."""
        import resend

        from worker.backlog.confirmations import confirmation_number
        from worker.channels.email import EmailChannel

        engine = _naive_engine()
        with engine.begin() as conn:
            row = conn.execute(sa.text(
                f"""UPDATE registrations SET confirmation_number = :n, confirmation_generated_at = now(),
                           email_status = 'pending' WHERE id = :id AND {BACKLOG}
                    RETURNING email, full_name"""),  # noqa: S608
                {"id": registration_id, "n": confirmation_number(registration_id)}).first()
            if row is None:
                return
            subject = f"Your registration is confirmed ({confirmation_number(registration_id)})"
            email_id = conn.execute(sa.text(
                """INSERT INTO confirmation_emails (registration_id, recipient, subject, status)
                   VALUES (:r, :to, :s, 'pending') RETURNING id"""),
                {"r": registration_id, "to": row.email, "s": subject}).scalar()
        channel = EmailChannel(API_KEY, "confirm@example.com", "Events", [], api_url=os.environ["RESEND_API_URL"])
        resp = channel._call(resend.Emails.send, {
            "from": channel.sender, "to": [row.email], "subject": subject,
            "text": f"Hello {row.full_name}, your registration is confirmed.",
            "html": f"<p>Hello {row.full_name}, your registration is confirmed.</p>"},
            options={"idempotency_key": f"confirmation/{registration_id}"})
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE confirmation_emails SET status = 'sent', provider_id = :p, sent_at = now() "
                                 "WHERE id = :id"), {"p": resp["id"], "id": email_id})
            conn.execute(sa.text("UPDATE registrations SET email_status = 'sent' WHERE id = :id"),
                         {"id": registration_id})

    return app


_ENGINE = None


def _naive_engine():
    global _ENGINE
    if _ENGINE is None:
        from worker.fleet.db import create

        _ENGINE = create(os.environ["DATABASE_URL"], pool_size=1)
    return _ENGINE


if os.environ.get("OPSFLEET_BENCH_NAIVE_WORKER"):
    naive_app = _naive_app()


# -------------------------------------------------------------------- the Resend fake, in its own process

def _sink_child() -> None:
    """Serve the Resend fake; answer `stats` on stdin with one JSON line; exit on EOF."""
    from ops.devkit.sink import ProviderSink

    sink = ProviderSink(resend_api_keys=[API_KEY]).start()
    print(sink.resend_api_url, flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            emails = sink.emails
            to = Counter(e["to"][0] for e in emails)
            reqs = sink.requests
            print(json.dumps({
                "emails": len(emails), "recipients": len(to), "doubled": sum(1 for v in to.values() if v > 1),
                "batch_calls": sum(r.route == "resend.emails.batch" for r in reqs),
                "single_calls": sum(r.route == "resend.emails" for r in reqs),
                "replayed": sum(r.replayed for r in reqs), "errors": sum((r.status or 0) >= 400 for r in reqs)}),
                flush=True)
        elif line.strip() == "reset":
            sink.reset()
            print("{}", flush=True)
    sink.stop()


class Sink:
    def __init__(self) -> None:
        self.p = subprocess.Popen([sys.executable, __file__, "--sink-child"], stdin=subprocess.PIPE,  # noqa: S603
                                  stdout=subprocess.PIPE, text=True, cwd=REPO)
        self.url = self.p.stdout.readline().strip()

    def stats(self) -> dict:
        self.p.stdin.write("stats\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())

    def stop(self) -> None:
        self.p.stdin.close()
        self.p.wait(30)


# -------------------------------------------------------------------- databases

class Server:
    def __init__(self, url: str) -> None:
        from worker.fleet.db import normalize_url

        self.url = sa.make_url(normalize_url(url))
        self.admin = sa.create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        self.created: list[str] = []

    def db_url(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def create(self, template: str | None = None) -> str:
        name = f"opsfleet_bench_backlog_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        self.created.append(name)
        return name

    def checkpoint(self) -> None:
        """Before each timed phase: flush what copying the template dirtied, so every phase starts from
        the same state (its first change to each page after a checkpoint writes the full page to WAL)."""
        with self.admin.connect() as conn:
            conn.execute(sa.text("CHECKPOINT"))

    def drop_all(self, keep: list[str] | None = None) -> None:
        kept = [n for n in self.created if n in (keep or [])]
        with self.admin.connect() as conn:
            for name in self.created:
                if name not in kept:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created = kept

    def version(self) -> str:
        with self.admin.connect() as conn:
            return conn.execute(sa.text("SELECT version()")).scalar().split(" on ")[0]


def build_backlog(server: Server, size: int) -> str:
    """A database with the fleet and sample-app schemas and `size` pending registrations."""
    from ops.sample_app import init
    from worker.fleet.migrate import upgrade

    name = server.create()
    url = server.db_url(name)
    upgrade(url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    init(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO registrations (id, customer_id, event_id, email, full_name, amount_in_cents, status,
                                          payment_status, payment_intent_id, created_at, updated_at)
               SELECT i, i, 1 + i % 500, 'guest' || i || '@example.com', 'Guest ' || i, 4500, 'completed',
                      'completed', 'pi_' || i, now() - interval '2 hours',
                      now() - interval '1 hour' - make_interval(secs => (:n - i) * 0.01)
               FROM generate_series(1, :n) i"""), {"n": size})
        conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('registrations', 'id'), :n)"), {"n": size})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE registrations"))
    engine.dispose()
    return name


def check_exactly_once(url: str, size: int) -> dict:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            """SELECT count(*) FILTER (WHERE confirmation_number IS NOT NULL),
                      count(DISTINCT confirmation_number), count(*) FILTER (WHERE email_status = 'sent')
               FROM registrations""")).one()
        emails = conn.execute(sa.text(
            """SELECT count(*), count(DISTINCT registration_id), count(*) FILTER (WHERE status = 'sent')
               FROM confirmation_emails""")).one()
    engine.dispose()
    ok = tuple(row) == (size, size, size) and tuple(emails) == (size, size, size)
    return {"numbered": row[0], "distinct_numbers": row[1], "email_rows": emails[0], "emails_sent": emails[2],
            "exactly_once": ok}


# -------------------------------------------------------------------- phases

def phase_floor(server: Server, base: str, all_writes: bool = True) -> dict:
    name = server.create(template=base)
    engine = sa.create_engine(server.db_url(name), poolclass=sa.pool.NullPool)
    out = {}
    server.checkpoint()
    t = time.perf_counter()
    with engine.begin() as conn:  # timed with its commit, as every claim is
        conn.execute(sa.text(f"""UPDATE registrations SET confirmation_generated_at = now(),
                                 confirmation_number = 'CNF-' || lpad(id::text, 10, '0') WHERE {BACKLOG}"""))  # noqa: S608
    out["update_s"] = time.perf_counter() - t
    if not all_writes:
        engine.dispose()
        return out
    steps = [
        """INSERT INTO confirmation_emails (registration_id, recipient, subject, status)
           SELECT id, email, 'Your registration is confirmed (' || confirmation_number || ')', 'pending'
           FROM registrations""",
        "UPDATE confirmation_emails SET status = 'sent', provider_id = md5(id::text), sent_at = now()",
        "UPDATE registrations SET email_status = 'sent'",
    ]
    t = time.perf_counter()
    for stmt in steps:
        with engine.begin() as conn:
            conn.execute(sa.text(stmt))
    out["all_writes_s"] = out["update_s"] + time.perf_counter() - t
    engine.dispose()
    return out


class _InstantProvider:
    """Stands in for EmailChannel in the db-part phase: renders nothing further, answers at once."""

    api_key, from_email, sender = API_KEY, "confirm@example.com", "Events <confirm@example.com>"

    def __init__(self) -> None:
        self.n = 0

    def send_batch_each(self, messages, idempotency_key):
        from worker.channels.email import BatchItem

        items = [BatchItem(f"stub-{self.n + i}", None) for i in range(len(messages))]
        self.n += len(messages)
        return items


def phase_db(server: Server, base: str, size: int, batch_size: int) -> dict:
    from worker.backlog.runs import reprocess

    name = server.create(template=base)
    url = server.db_url(name)
    engine = sa.create_engine(url, pool_size=2)
    server.checkpoint()
    t = time.perf_counter()
    r = reprocess(engine, engine, _InstantProvider(), batch_size=batch_size)
    wall = time.perf_counter() - t
    engine.dispose()
    check = check_exactly_once(url, size)
    return {"wall_s": wall, "db_s": r.db_seconds, "claim_s": r.claim_seconds, "claimed": r.claimed,
            "exactly_once": check["exactly_once"]}


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _start_workers(n: int, env: dict, args: list[str], tmp: Path, tag: str) -> list[subprocess.Popen]:
    procs = []
    for i in range(n):
        log = open(tmp / f"{tag}-{i}.log", "w")  # noqa: SIM115
        procs.append(subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "celery", "-A", args[0], "worker", *args[1:], "-c", "1", "-n", f"{tag}{i}-{uuid.uuid4().hex[:4]}@%h",
             "--without-mingle", "--without-gossip", "-l", "WARNING"],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        procs[-1].args_log = log.name
    return procs


def _wait_ready(procs, broker: str, timeout: float = 60) -> None:
    from celery import Celery

    app = Celery(broker=broker)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=0.5) or []
            if len(replies) >= len(procs):
                return
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a worker exited during start-up:\n{Path(p.args_log).read_text()[-3000:]}")
        raise RuntimeError("workers did not become ready")
    finally:
        app.close()


def _stop(procs) -> None:
    import signal

    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def _peak_rss_mib(procs) -> float:
    import psutil

    peak = 0
    for p in procs:
        try:
            tree = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        peak = max([peak, *(_vm_hwm_kib(q.pid) for q in tree)])
    return peak / 1024


def phase_e2e(server: Server, base: str, size: int, workers: int, batch_size: int, redis_url: str,
              tmp: Path) -> dict:
    from celery import Celery

    name = server.create(template=base)
    url = server.db_url(name)
    server.checkpoint()
    sink = Sink()
    env = {**os.environ, "DATABASE_URL": url, "CELERY_BROKER_URL": redis_url, "RESEND_API_KEY": API_KEY,
           "RESEND_API_URL": sink.url, "FROM_EMAIL": "confirm@example.com", "FROM_NAME": "Events",
           "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING"}
    procs = _start_workers(workers, env, ["worker", "-Q", "backlog"], tmp, "e2e")
    client = Celery(broker=redis_url, backend=redis_url)
    try:
        _wait_ready(procs, redis_url)
        baseline_mib = _peak_rss_mib(procs)
        t = time.perf_counter()
        results = [client.send_task("backlog.reprocess_confirmations", kwargs={"batch_size": batch_size},
                                    queue="backlog") for _ in range(workers)]
        summaries = [r.get(timeout=3600) for r in results]
        wall = time.perf_counter() - t
        peak_mib = _peak_rss_mib(procs)
        stats = sink.stats()
    finally:
        _stop(procs)
        client.close()
        sink.stop()
    check = check_exactly_once(url, size)
    check["exactly_once"] = check["exactly_once"] and stats["emails"] == size and stats["recipients"] == size \
        and stats["doubled"] == 0
    return {"wall_s": wall, "claimed": [s["claimed"] for s in summaries],
            "db_s": sum(s["db_seconds"] for s in summaries), "send_s": sum(s["send_seconds"] for s in summaries),
            "peak_rss_mib": peak_mib, "idle_rss_mib": baseline_mib, "sink": stats, **check}


def phase_naive(server: Server, base: str, sample: int, workers: int, redis_url: str, tmp: Path) -> dict:
    from celery import Celery

    name = server.create(template=base)
    url = server.db_url(name)
    server.checkpoint()
    sink = Sink()
    env = {**os.environ, "DATABASE_URL": url, "CELERY_BROKER_URL": redis_url, "RESEND_API_URL": sink.url,
           "OPSFLEET_BENCH_NAIVE_WORKER": "1", "PYTHONPATH": f"{REPO / 'bench'}:{REPO}"}
    procs = _start_workers(workers, env, ["backlog:naive_app", "-Q", "naive"], tmp, "naive")
    client = Celery(broker=redis_url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        _wait_ready(procs, redis_url)
        t = time.perf_counter()
        for rid in range(1, sample + 1):
            client.send_task("naive.confirm_one", args=[rid], queue="naive")
        while True:
            with engine.connect() as conn:
                done = conn.execute(sa.text("SELECT count(*) FROM confirmation_emails WHERE status = 'sent'")).scalar()
            if done >= sample:
                break
            if time.perf_counter() - t > 1800:
                raise RuntimeError(f"naive run stuck at {done}/{sample}")
            time.sleep(0.05)
        wall = time.perf_counter() - t
        stats = sink.stats()
    finally:
        _stop(procs)
        client.close()
        engine.dispose()
        sink.stop()
    return {"wall_s": wall, "sample": sample, "rate": sample / wall, "sink": stats}


# -------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="pairs of (floor, database part) per size; the ratios are per pair, their median reported")
    parser.add_argument("--naive-sample", type=int, default=2000)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    parser.add_argument("--sink-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink_child:
        _sink_child()
        return 0

    from ops.devkit.servers import RedisServer

    sizes = [int(s) for s in args.sizes.split(",")]
    server = Server(args.database_url)
    figures: dict = {"workers": args.workers, "batch_size": args.batch_size, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="opsfleet-bench-backlog-") as d:
        tmp = Path(d)
        redis = RedisServer(tmp / "redis").start()
        try:
            for i, size in enumerate(sizes):
                f: dict = {}
                t = time.perf_counter()
                base = build_backlog(server, size)
                f["build_s"] = time.perf_counter() - t
                f["floors"], f["dbs"] = [], []
                for rep in range(args.repeat):  # floor and db part in pairs, each first in every other pair
                    for phase in ("floor", "db") if rep % 2 == 0 else ("db", "floor"):
                        if phase == "floor":
                            f["floors"].append(phase_floor(server, base, all_writes=rep == 0))
                        else:
                            f["dbs"].append(phase_db(server, base, size, args.batch_size))
                        print(f"[{size}] {phase} {f[phase + 's'][-1]}", file=sys.stderr, flush=True)
                    server.drop_all(keep=[base])
                f["e2e"] = phase_e2e(server, base, size, args.workers, args.batch_size, redis.url, tmp)
                print(f"[{size}] end to end {f['e2e']}", file=sys.stderr, flush=True)
                if i == 0 and args.naive_sample:
                    f["naive"] = phase_naive(server, base, args.naive_sample, args.workers, redis.url, tmp)
                    print(f"[{size}] naive {f['naive']}", file=sys.stderr, flush=True)
                figures["sizes"][size] = f
                server.drop_all()
        finally:
            server.drop_all()
            redis.stop()
    figures["machine"] = {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "postgres": server.version()}
    print(report(figures))
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    return 0


def report(fig: dict) -> str:
    m = fig["machine"]
    lines = [f"machine: {m['cores']} cores, {m['platform']}, Python {m['python']}, {m['postgres']}",
             f"end to end: {fig['workers']} Celery worker processes (prefork, 1 process each), "
             f"batch_size {fig['batch_size']}, the Resend fake in its own process", "",
             "| registrations | end to end | registrations/s | worker peak RSS (idle) | one number + one email each |",
             "|---:|---:|---:|---:|:---:|"]
    for size, f in fig["sizes"].items():
        e = f["e2e"]
        once = e["exactly_once"] and all(d["exactly_once"] for d in f["dbs"])
        lines.append(f"| {size:,} | {e['wall_s']:.1f} s | {size / e['wall_s']:,.0f} | {e['peak_rss_mib']:.1f} MiB "
                     f"({e['idle_rss_mib']:.1f}) | {'yes' if once else 'NO'} |")
    lines += ["", "Database part (one process, provider answering in no time), in pairs with the floor (each "
                  "first in every other pair); times are medians, ratios the median of the pairs' ratios "
                  "[lowest - highest]:", "",
              "| registrations | pairs | floor: one UPDATE | claims: numbers + email rows | claims / floor | "
              "all DB work (claims + recording) | all / floor | the same writes, set-based | all / set-based |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size, f in fig["sizes"].items():
        floors = [fl["update_s"] for fl in f["floors"]]
        claims, alls = [d["claim_s"] for d in f["dbs"]], [d["db_s"] for d in f["dbs"]]
        ratio = [c / fl for c, fl in zip(claims, floors, strict=True)]
        ratio_all = [a / fl for a, fl in zip(alls, floors, strict=True)]
        set_based = f["floors"][0]["all_writes_s"]
        lines.append(f"| {size:,} | {len(floors)} | {median(floors):.2f} s | {median(claims):.2f} s | "
                     f"**{median(ratio):.1f}x** [{min(ratio):.1f} - {max(ratio):.1f}] | {median(alls):.2f} s | "
                     f"{median(ratio_all):.1f}x [{min(ratio_all):.1f} - {max(ratio_all):.1f}] | {set_based:.2f} s | "
                     f"{alls[0] / set_based:.1f}x |")
    first = next(iter(fig["sizes"]))
    n = fig["sizes"][first].get("naive")
    if n:
        e2e_rate = first / fig["sizes"][first]["e2e"]["wall_s"]
        lines += ["", f"Naive design (one Celery task and one single-email send per registration, same worker "
                      f"processes), measured on a sample of {n['sample']:,} registrations: {n['wall_s']:.1f} s, "
                      f"{n['rate']:,.0f} registrations/s, extrapolated to {first:,}: {first / n['rate']:,.0f} s. "
                      f"Batched end to end is **{e2e_rate / n['rate']:.0f}x** the naive rate."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
