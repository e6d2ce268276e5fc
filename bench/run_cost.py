"""Benchmark one check evaluation's cost beyond its query, run after run, as a worker pays it.

    .venv/bin/python bench/run_cost.py [--runs 1500] [--rounds 5] [--database-url URL] [--keep]

bench/checks.py times the whole catalog a few passes at a time; this times single checks over
thousands of runs, each its own slot: worker.checks.engine.run_check end to end (its query READ ONLY,
the fleet transaction: the slot's claim with the instances, what moved, the commit) against the same
query alone (collect_sql) on the same kept connections, in alternating blocks of --runs, median of
--rounds. Three checks, on a fresh fleet database on the server of --database-url (dropped at the end):

    steady       one instance whose value stays (`SELECT 1 AS value`, as database_up)
    moving       one instance whose value changes nearly every run (`round(random() * 5)`)
    40 instances db_xid_wraparound_warning's query (two instances per database of the server); the
                 bench makes throwaway databases until the server has 20 and drops them at the end

Printed per check: run_check, the query alone, and the difference (the cost beyond the SQL).
Not a test: a measurement to record in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from worker.checks.collect import collect_sql  # noqa: E402
from worker.checks.engine import run_check  # noqa: E402
from worker.checks.spec import Check  # noqa: E402
from worker.config import load_config  # noqa: E402
from worker.fleet.db import create, create_for_checks, normalize_url  # noqa: E402
from worker.fleet.migrate import upgrade  # noqa: E402

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
INSTANCES = 40


def _check(name: str, query: str, summary: str) -> Check:
    return Check.model_validate({"name": name, "description": "bench", "schedule": "1m", "query": query,
                                 "condition": "> 10", "severity": "warning", "summary": summary})


def measure(check: Check, engines: tuple, runs: int, rounds: int) -> tuple[float, float]:
    """(run_check ms, query ms): medians over `rounds` alternating blocks of `runs`."""
    monitored, fleet = engines
    slot = [0]

    def one() -> None:
        slot[0] += 1
        outcome = run_check(check, monitored=monitored, fleet=fleet, now=NOW, routing=None,
                            slot=NOW - timedelta(minutes=slot[0]))
        if outcome.status != "ok":
            raise SystemExit(f"bench: {check.name}: {outcome.status} {outcome.error}")

    for _ in range(200):  # warm: kept connections, prepared statements, the instances stored
        one()
        collect_sql(check, monitored, NOW)
    whole, query = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(runs):
            one()
        whole.append((time.perf_counter() - t) / runs * 1000)
        t = time.perf_counter()
        for _ in range(runs):
            collect_sql(check, monitored, NOW)
        query.append((time.perf_counter() - t) / runs * 1000)
    return statistics.median(whole), statistics.median(query)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1500, help="runs per block")
    ap.add_argument("--rounds", type=int, default=5, help="alternating blocks per kind")
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--keep", action="store_true", help="keep the fleet database (named on stderr)")
    args = ap.parse_args(argv)
    base = normalize_url(args.database_url)
    admin_url = base.replace("postgresql+psycopg://", "postgresql://")
    name = f"opsfleet_bench_runcost_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True)
    except psycopg.OperationalError as exc:
        print(f"bench: cannot reach Postgres at {args.database_url}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    made: list[str] = []
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        have = admin.execute("SELECT count(*) FROM pg_database WHERE datallowconn").fetchone()[0]
        for i in range(max(0, INSTANCES // 2 - have)):
            made.append(f"{name}_x{i}")
            admin.execute(f'CREATE DATABASE "{made[-1]}"')
        url = base.rsplit("/", 1)[0] + f"/{name}"
        try:
            upgrade(url)
            xid = load_config(REPO / "config").checks["db_xid_wraparound_warning"]
            checks = [_check("steady", "SELECT 1 AS value", "at {{ value }}"),
                      _check("moving", "SELECT round(random() * 5) AS value", "at {{ value }}"),
                      xid]
            engines = (create_for_checks(url), create(url, application_name="opsfleet", prepared=True, pre_ping=False))
            print(f"- {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the start; {args.rounds} "
                  f"blocks of {args.runs:,} runs per kind; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
            print("| check | instances | run_check ms | query alone ms | beyond the query ms |")
            print("|---|---:|---:|---:|---:|")
            for check in checks:
                whole, query = measure(check, engines, args.runs, args.rounds)
                n = len(collect_sql(check, engines[0], NOW))
                print(f"| {check.name} | {n} | {whole:.3f} | {query:.3f} | **{whole - query:.3f}** |", flush=True)
            print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
            for e in engines:
                e.dispose()
        finally:
            for db in made + ([] if args.keep else [name]):
                admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            if args.keep:
                print(f"kept {name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
