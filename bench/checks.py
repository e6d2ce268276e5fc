"""Benchmark the check engine over the whole catalog: per-check time, the engine's overhead against bare
psycopg, and the full catalog's time, at each size of the sample application.

    .venv/bin/python bench/checks.py [--sizes 100000,1000000] [--database-url URL] [--repeat 3] [--rounds 15]
                                     [--warmup 12] [--explain-over MS] [--keep-database]

For each size it creates a fresh database on the server of DATABASE_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres; the user must be allowed to CREATE DATABASE),
migrates the fleet schema (worker.fleet.migrate.upgrade), runs the sample app's `init` + `seed(scale=size,
now=NOW)` with NOW a fixed instant, VACUUM ANALYZEs it (the steady state that autovacuum keeps a live
database in: statistics, visibility map, hint bits; it also keeps autovacuum from starting on the
freshly loaded tables in the middle of the timings), then times every enabled sql check of the
catalog (config/checks/*.yaml, through worker.config.load_config) in passes over the whole catalog:

  engine     worker.checks.collect.collect_sql(check, engine, NOW): the engine's query path (the thread's kept
             pool connection, worker.fleet.db.read_only_query: BEGIN READ ONLY with statement_timeout, lock_timeout and
             force_custom_plan in one message, the query with :now bound as a prepared statement,
             fetchall, ROLLBACK; rows -> labelled Samples), on engines made as the workers make theirs
             (worker.fleet.db.create_for_checks(): one kept autocommit connection per thread, no pre-ping).
  bare       the same query with psycopg alone, on the very connections the engine keeps (the same
             server backends, so the difference is the engine's code path, not which backend served it), the same guarantees
             and server work in the fewest round trips (3): `BEGIN READ ONLY; SET LOCAL
             statement_timeout = <the check's timeout>; SET LOCAL lock_timeout = 2000; SET LOCAL
             plan_cache_mode = force_custom_plan` as one message; the query as a prepared statement,
             in the text SQLAlchemy sends for it (:now -> %(now)s), bound server-side to the same
             NOW; fetchall; ROLLBACK.
  sqlalchemy the path the engine took before (for comparison): Connection with postgresql_readonly,
             SELECT set_config(...) for both timeouts, text() with :now bound, Rows, rollback (4 round
             trips); what going through SQLAlchemy's Connection costs per check.
  run_check  worker.checks.engine.run_check end to end with the repo's routing: claim the check_runs slot,
             collect, the state machine's writes (alerts, alert_events, outbox rows), one commit.

engine and bare share their connections (the comparison is of client code paths on the same server
backends); sqlalchemy and run_check have their own. --warmup passes of each kind come first (default
12: psycopg prepares a statement on its 6th execution and the server settles its custom/generic plan
choice after 5 more, the steady state of a long-running worker's connections). Then the catalog
figures: --repeat whole passes per kind, kinds in rotated order, their median (and fastest) wall time.
Then the per-check figures of engine and bare: --rounds paired rounds over the catalog, in which each
check is run by engine and bare back to back, each first in half the rounds (on their shared backend
a query's second run finds it warmer); per check the mean of the rounds without the fastest and
slowest 10%. A VM's steal time comes in bursts of tens of milliseconds: pairing puts engine and bare
under the same bursts, which whole passes run at different moments do not (their walls are shown
too). The per-check figures of sqlalchemy and run_check come from their whole passes. overhead =
(engine - bare) / bare. The `value` columns of engine and bare are compared for every
check (same query, same NOW, same rows). Prints Markdown, with the load average around the timings
(other work on the machine inflates the fixed per-check costs most); --explain-over MS adds EXPLAIN
(ANALYZE, BUFFERS) of the checks whose engine time is at least MS ms.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import sqlalchemy as sa
from psycopg import sql

from ops.sample_app import init
from ops.sample_app.seed import seed
from worker.checks.collect import CheckError, collect_sql
from worker.checks.engine import run_check
from worker.checks.spec import Check
from worker.config import load_config
from worker.fleet import migrate
from worker.fleet.db import _KEPT, create, create_for_checks, psycopg_text

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # the fixed instant: seed() anchors its problems here
LOCK_TIMEOUT_MS = 2000  # worker.fleet.db.read_only's default, which collect_sql uses
def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def _same(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is b
    return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))  # type: ignore[arg-type]


# ------------------------------------------------------------------ the ways to run a check

def bare_run(conn: psycopg.Connection, check: Check, query: str) -> list[object]:
    timeout_ms = int(check.timeout.total_seconds() * 1000)
    cur = conn.cursor()
    try:
        cur.execute(f"BEGIN READ ONLY; SET LOCAL statement_timeout = {timeout_ms}; "
                    f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}; SET LOCAL plan_cache_mode = force_custom_plan")
        cur.execute(query, {"now": NOW}, prepare=True)
        cols = [c.name for c in cur.description]
        rows = cur.fetchall()
    except psycopg.Error as exc:
        raise CheckError(f"check {check.name}: {str(exc).strip().splitlines()[0]}") from None
    finally:
        conn.pgconn.exec_(b"ROLLBACK")  # psycopg would drop its prepared statements on a ROLLBACK it sees
    i = cols.index("value")
    return [row[i] for row in rows]


def sqlalchemy_run(engine: sa.Engine, check: Check) -> list[object]:
    timeout_ms = int(check.timeout.total_seconds() * 1000)
    try:
        with engine.connect().execution_options(postgresql_readonly=True) as conn, conn.begin() as txn:
            conn.execute(sa.text("SELECT set_config('statement_timeout', :s, true), set_config('lock_timeout', :l, true)"),
                         {"s": str(timeout_ms), "l": str(LOCK_TIMEOUT_MS)})
            result = conn.execute(sa.text(check.query), {"now": NOW})
            rows = [r._mapping["value"] for r in result]
            txn.rollback()
    except sa.exc.DBAPIError as exc:
        raise CheckError(f"check {check.name}: {str(exc.orig).strip().splitlines()[0]}") from None
    return rows


def _one(kind: str, check: Check, ctx: dict) -> tuple[float, object]:
    """Run one check one way: (seconds, its result)."""
    engines = ctx["engines"].get(kind)
    t0 = time.perf_counter()
    try:
        if kind == "engine":
            result: object = [s.value for s in collect_sql(check, engines[check.database == "fleet"], NOW)]
        elif kind == "bare":
            result = bare_run(ctx["bare"][check.database == "fleet"], check, ctx["queries"][check.name])
        elif kind == "sqlalchemy":
            result = sqlalchemy_run(engines[check.database == "fleet"], check)
        else:
            ctx["slot"] += 1  # a fresh slot per run: the same slot twice would be "skipped"
            out = run_check(check, monitored=engines[0], fleet=engines[1], fleet_queries=engines[2], now=NOW,
                            routing=ctx["routing"], slot=NOW - timedelta(minutes=ctx["slot"]))
            result = out.status if out.status != "error" else f"error: {out.error}"
    except CheckError as exc:
        result = f"error: {exc}"
    return time.perf_counter() - t0, result


def _pass(kind: str, checks: list[Check], ctx: dict) -> tuple[float, dict[str, float], dict[str, object]]:
    """One pass over the catalog: (wall seconds, seconds per check, result per check)."""
    started = time.perf_counter()
    ran = {check.name: _one(kind, check, ctx) for check in checks}
    return time.perf_counter() - started, {k: v[0] for k, v in ran.items()}, {k: v[1] for k, v in ran.items()}


def _paired(checks: list[Check], ctx: dict, r: int, times: dict) -> dict[str, dict[str, object]]:
    """One round over the catalog, each check run by engine and bare back to back, each first in half
    the rounds (on their shared backend a query's second run finds it warmer), so a burst of other work
    on the machine hits both alike; appends to times[kind][check]."""
    results: dict[str, dict[str, object]] = {"engine": {}, "bare": {}}
    for i, check in enumerate(checks):
        for k in ("engine", "bare") if (r + i) % 2 == 0 else ("bare", "engine"):
            seconds, results[k][check.name] = _one(k, check, ctx)
            times[k][check.name].append(seconds)
    return results


def _trimmed_mean(values: list[float], cut: float = 0.1) -> float:
    """The mean without the highest and lowest `cut` of the values (steal-time bursts, the odd cold run)."""
    v = sorted(values)
    k = int(len(v) * cut)
    return statistics.fmean(v[k:len(v) - k] if len(v) > 2 * k else v)


# ------------------------------------------------------------------ one size, in its own database

def _prepare(url: str, size: int) -> dict[str, int]:
    migrate.upgrade(url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        init(engine)
        last = [0.0]

        def progress(table: str, done: int, total: int) -> None:
            if time.perf_counter() - last[0] > 10:
                last[0] = time.perf_counter()
                print(f"    seeding {table}: {done:,}/{total:,}", file=sys.stderr)

        rows = seed(engine, size, now=NOW, progress=progress)
    finally:
        engine.dispose()
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    return rows


def _measure(url: str, size: int, checks: list[Check], routing, repeat: int, rounds: int, warmup: int,
             explain_over: float | None) -> dict:
    t0 = time.perf_counter()
    rows = _prepare(url, size)
    prepared = time.perf_counter() - t0
    print(f"  {size:,}: {sum(rows.values()):,} rows seeded, migrated and vacuum-analyzed in {prepared:.0f} s",
          file=sys.stderr)

    # as the workers make theirs (worker.fleet.db.checks_engine for the queries of both databases, fleet_engine
    # for the state); one set per kind
    engines = {"engine": (create_for_checks(url), create_for_checks(url)),
               "sqlalchemy": (create(url, application_name="opsfleet-checks", pre_ping=False),
                              create(url, application_name="opsfleet")),
               "run_check": (create_for_checks(url), create(url, application_name="opsfleet", prepared=True, pre_ping=False),  # as hot_fleet_engine()
                             create_for_checks(url))}
    queries = {c.name: psycopg_text(c.query)[0] for c in checks}  # the text SQLAlchemy would send
    # bare runs on the very connections the engine keeps (this thread's): the same server backends
    ctx = {"engines": engines, "queries": queries, "routing": routing, "slot": 0,
           "bare": [_KEPT[e].connection(e).driver_connection for e in engines["engine"]]}
    load = [os.getloadavg()[0]]
    try:
        kinds = ["engine", "bare", "sqlalchemy", "run_check"]
        results: dict[str, dict[str, object]] = {}
        for _ in range(warmup):  # caches, pools, prepared statements, plans
            for k in kinds:
                _pass(k, checks, ctx)
        # whole passes, kinds in rotated order: the catalog's wall time; per check for sqlalchemy, run_check
        walls: dict[str, list[float]] = {k: [] for k in kinds}
        times: dict[str, dict[str, list[float]]] = {k: {c.name: [] for c in checks} for k in kinds}
        for r in range(repeat):
            for k in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
                wall, took, results[k] = _pass(k, checks, ctx)
                walls[k].append(wall)
                if k in ("sqlalchemy", "run_check"):
                    for name, seconds in took.items():
                        times[k][name].append(seconds)
        # per check for engine and bare: paired rounds
        for r in range(rounds):
            results.update(_paired(checks, ctx, r, times))
        load.append(os.getloadavg()[0])
        backends = {"engine": {_KEPT[e].connection(e).driver_connection.info.backend_pid for e in engines["engine"]},
                    "bare": {c.info.backend_pid for c in ctx["bare"]}}
        explains = {}
        per = {k: {c.name: _trimmed_mean(times[k][c.name]) for c in checks} for k in kinds}  # (5 passes: 0 cut)
        if explain_over is not None:
            for c in checks:
                if per["engine"][c.name] * 1000 >= explain_over:
                    with psycopg.connect(_libpq(url)) as conn, conn.transaction(force_rollback=True):
                        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + queries[c.name], {"now": NOW}).fetchall()
                    explains[c.name] = "\n".join(r[0] for r in plan)
    finally:
        for pair in engines.values():
            for e in pair:
                e.dispose()

    mismatches = []
    for c in checks:
        e = results["engine"][c.name]
        for b in (results["bare"][c.name], results["sqlalchemy"][c.name]):
            if isinstance(e, str) or isinstance(b, str):
                same = isinstance(e, str) and isinstance(b, str)
            else:
                same = len(e) == len(b) and all(_same(x, y) for x, y in zip(sorted(e, key=_key), sorted(b, key=_key), strict=True))
            if not same and c.name not in mismatches:
                mismatches.append(c.name)
    return {
        "size": size, "rows": rows, "prepared": prepared, "per": per,
        "wall": {k: statistics.median(walls[k]) for k in kinds},
        "fastest": {k: min(walls[k]) for k in kinds}, "rounds": rounds,
        "status": results["run_check"], "engine_results": results["engine"], "mismatches": mismatches,
        "backends": backends,
        "explains": explains, "load": load,
    }


def _key(v: object) -> float:
    return float("-inf") if v is None else float(v)  # type: ignore[arg-type]


# ------------------------------------------------------------------ report

def _environment(url: str) -> list[str]:
    with psycopg.connect(_libpq(url)) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
        sb = conn.execute("SHOW shared_buffers").fetchone()[0]
        wm = conn.execute("SHOW work_mem").fetchone()[0]
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [f"- machine: {os.cpu_count()} cores, {mem:.1f} GiB RAM; `{' '.join(os.uname())}`",
            f"- Python {sys.version.split()[0]}, psycopg {psycopg.__version__}, SQLAlchemy {sa.__version__}, "
            f"PostgreSQL {server} (shared_buffers {sb}, work_mem {wm})"]


LIVE = re.compile(r"pg_stat_|pg_database_size|pg_total_relation_size")  # values that move between runs


def _report(runs: list[dict], checks: list[Check], top: int) -> None:
    for run in runs:
        per, wall = run["per"], run["wall"]
        eng, bare, same, rc = (sum(per[k].values()) for k in ("engine", "bare", "sqlalchemy", "run_check"))
        print(f"\n### {run['size']:,} registrations ({sum(run['rows'].values()):,} rows in all tables)\n")
        print(f"1-minute load average when the timings started / ended: {run['load'][0]:.2f} / {run['load'][1]:.2f} "
              f"({os.cpu_count()} cores; other work on the machine shows here)\n")
        print("| check | engine ms | bare ms | engine - bare | overhead | via SQLAlchemy Connection ms "
              "| run_check ms | status: result |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for c in sorted(checks, key=lambda c: -per["engine"][c.name]):
            e, b, m, r = (per[k][c.name] for k in ("engine", "bare", "sqlalchemy", "run_check"))
            res = run["engine_results"][c.name]
            shown = res[:60] if isinstance(res, str) else (
                f"{len(res)} row{'s' if len(res) != 1 else ''}" + (f", value {_fmt(res[0])}" if len(res) == 1 else ""))
            print(f"| {c.name} | {_ms(e)} | {_ms(b)} | {_ms(e - b)} | {100 * (e - b) / b:+.0f}% | {_ms(m)} | {_ms(r)} "
                  f"| {run['status'][c.name]}: {shown} |")
        slow = sorted(checks, key=lambda c: -per["engine"][c.name])[:top]
        print(f"\nSlowest {top} (engine): " + ", ".join(f"{c.name} {_ms(per['engine'][c.name])} ms" for c in slow) + ".")
        print(f"\n| {len(checks)} checks | engine (collect_sql) | bare psycopg | overhead = (engine - bare) / bare "
              "| via SQLAlchemy Connection | run_check end to end |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, (e, b, m, r) in ((f"per check, sum over the catalog ({run['rounds']} paired rounds)", (eng, bare, same, rc)),
                                    ("catalog pass, wall (median)", tuple(wall[k] for k in
                                                                          ("engine", "bare", "sqlalchemy", "run_check"))),
                                    ("catalog pass, wall (fastest)", tuple(run["fastest"][k] for k in
                                                                           ("engine", "bare", "sqlalchemy", "run_check")))):
            print(f"| {label} | {_ms(e)} ms | {_ms(b)} ms | {_ms(e - b)} ms = **{100 * (e - b) / b:.1f}%** "
                  f"| {_ms(m)} ms | {_ms(r)} ms |")
        n = len(checks)
        print(f"\nPer check (catalog sums / {n}): engine {_ms(eng / n)} ms, bare {_ms(bare / n)} ms, so "
              f"{1e6 * (eng - bare) / n:,.0f} us of engine overhead per check (the kept connection, the cursor, "
              f"rows -> labelled Samples); through a SQLAlchemy Connection, as the engine ran before: "
              f"{_ms(same / n)} ms ({1e6 * (same - bare) / n:,.0f} us over bare).")
        live = [name for name in run["mismatches"] if LIVE.search(next(c.query for c in checks if c.name == name))]
        other = [name for name in run["mismatches"] if name not in live]
        same_backends = run["backends"]["engine"] == run["backends"]["bare"]
        print(f"Server backends (pids): engine {sorted(run['backends']['engine'])}, bare {sorted(run['backends']['bare'])}"
              + (" (the same)." if same_backends else " (DIFFERENT: the comparison is not like for like)."))
        print(f"Results of engine and bare: {'identical for all ' + str(n) + ' checks' if not run['mismatches'] else ''}"
              + (f"identical except {', '.join(live)} (live server counters or sizes, which move between runs)"
                 if live else "") + (f"; DIFFERENT: {', '.join(other)}" if other else "") + ".")
        for name, plan in run["explains"].items():
            print(f"\nEXPLAIN (ANALYZE, BUFFERS) {name} at {run['size']:,}:\n\n```\n{plan}\n```")


def _fmt(v: object) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, (float, Decimal)):
        return f"{float(v):g}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated registration counts")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--config-dir", default=str(ROOT / "config"))
    parser.add_argument("--repeat", type=int, default=3, help="measured catalog passes per kind (wall times)")
    parser.add_argument("--rounds", type=int, default=15,
                        help="paired rounds (each check run by engine and bare back to back) for the overhead")
    parser.add_argument("--warmup", type=int, default=12, help="warm-up passes per kind before measuring")
    parser.add_argument("--top", type=int, default=5, help="how many slowest checks to name")
    parser.add_argument("--explain-over", type=float, metavar="MS",
                        help="print EXPLAIN (ANALYZE, BUFFERS) of checks whose engine time is at least MS ms")
    parser.add_argument("--keep-database", action="store_true", help="keep the largest size's database (named on stderr)")
    args = parser.parse_args(argv)
    url = args.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    sizes = sorted(int(s) for s in args.sizes.split(","))

    cfg = load_config(args.config_dir)
    checks = [c for c in cfg.checks.values() if c.enabled and c.kind == "sql"]
    print("\n".join(_environment(url)))
    print(f"- {len(checks)} enabled sql checks of {len(cfg.checks)} in {args.config_dir}/checks; :now = "
          f"{NOW.isoformat()} (seed's now); {args.warmup} warm-up + {args.repeat} measured passes per kind, "
          f"{args.rounds} paired rounds; "
          "each size in its own fresh database, VACUUM (ANALYZE)d after seeding\n")

    runs = []
    for size in sizes:
        name = f"opsfleet_bench_{uuid.uuid4().hex[:8]}"
        db_url = sa.make_url(url).set(database=name).render_as_string(hide_password=False)
        with psycopg.connect(_libpq(url), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        keep = args.keep_database and size == sizes[-1]
        try:
            runs.append(_measure(db_url, size, checks, cfg.routing, args.repeat, args.rounds, args.warmup, args.explain_over))
            r = runs[-1]
            print(f"  {size:,}: engine {_ms(r['wall']['engine'])} ms, bare {_ms(r['wall']['bare'])} ms, "
                  f"run_check {_ms(r['wall']['run_check'])} ms per catalog pass", file=sys.stderr)
        finally:
            if keep:
                print(f"  kept database {name}", file=sys.stderr)
            else:
                with psycopg.connect(_libpq(url), autocommit=True) as admin:
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    _report(runs, checks, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
