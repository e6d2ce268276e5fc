"""Benchmark the sample-app seeder: wall time, rows/s and peak memory per size, plus a baseline.

    .venv/bin/python bench/seed.py [--sizes 100000,1000000] [--database-url URL] [--batch-size N]

For each size it creates a fresh database on the server of DATABASE_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres; the user must be allowed to CREATE DATABASE),
runs `init` + `seed(scale=size)` in a subprocess, and drops the database again. Peak memory is the
subprocess's own maximum RSS as the kernel reports it to os.wait4 (per child, unlike
RUSAGE_CHILDREN, which keeps the maximum over all children). The baseline, at the smallest size,
writes the same registrations rows twice more in fresh databases: once with COPY (as seed() does)
and once with a plain executemany INSERT, to show what COPY buys. Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from itertools import islice

import psycopg
import sqlalchemy as sa
from psycopg import sql

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


# ------------------------------------------------------------------ child: does the work, prints JSON

def _child(mode: str, size: int, url: str, batch_size: int) -> dict:
    from ops.sample_app import init, seed
    from ops.sample_app.seed.confirmations import REGISTRATION_COLUMNS, iter_registration_rows
    from ops.sample_app.seed.copy import copy_rows

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    if mode == "imports":  # the interpreter + libraries alone: the floor under every peak
        return {"rows": {}, "seconds": 0.0}
    init(engine)
    started = time.perf_counter()
    if mode == "seed":
        rows = seed(engine, size, batch_size=batch_size)
    else:
        raw = engine.raw_connection()
        try:
            conn = raw.driver_connection
            now = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            conn.rollback()
            regs = iter_registration_rows(size, now)
            if mode == "generate-registrations":  # the generator alone, nothing written
                n = sum(1 for _ in regs)
            elif mode == "copy-registrations":
                n = copy_rows(conn, "registrations", REGISTRATION_COLUMNS, regs, total=size, batch_size=batch_size)
            else:  # insert-registrations: the plain way, executemany in batches
                insert = sql.SQL("INSERT INTO registrations ({}) VALUES ({})").format(
                    sql.SQL(", ").join(map(sql.Identifier, REGISTRATION_COLUMNS)),
                    sql.SQL(", ").join(sql.Placeholder() * len(REGISTRATION_COLUMNS)))
                n = 0
                while batch := list(islice(regs, batch_size)):
                    with conn.cursor() as cur:
                        cur.executemany(insert, batch)
                    conn.commit()
                    n += len(batch)
            rows = {"registrations": n}
        finally:
            raw.close()
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"rows": rows, "seconds": seconds}


# ------------------------------------------------------------------ parent: databases, subprocesses, report

def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _measure(admin_url: str, mode: str, size: int, batch_size: int) -> dict:
    """Run one child in a fresh database; returns its JSON plus wall seconds and peak RSS (MiB)."""
    name = f"opsfleet_bench_{uuid.uuid4().hex[:8]}"
    db_url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(_libpq(admin_url), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, __file__, "--child", mode, "--sizes", str(size), "--database-url", db_url,
             "--batch-size", str(batch_size)],
            stdout=subprocess.PIPE, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{mode} at {size} failed (exit {proc.returncode})")
        result = json.loads(out.strip().splitlines()[-1])
    finally:
        with psycopg.connect(_libpq(admin_url), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    total = sum(result["rows"].values())
    return {**result, "mode": mode, "size": size, "wall": wall, "total": total,
            "rate": total / result["seconds"] if result["seconds"] else 0.0,
            "peak_mib": usage.ru_maxrss / 1024}  # ru_maxrss is in KiB on Linux


def _environment(admin_url: str) -> list[str]:
    with psycopg.connect(_libpq(admin_url)) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [f"- machine: {os.cpu_count()} cores, {mem:.1f} GiB RAM; `{' '.join(os.uname())}`",
            f"- Python {sys.version.split()[0]}, psycopg {psycopg.__version__}, PostgreSQL {server}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated registration counts")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--child", choices=("seed", "generate-registrations", "copy-registrations",
                                            "insert-registrations", "imports"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    url = args.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    sizes = sorted(int(s) for s in args.sizes.split(","))

    if args.child:
        print(json.dumps(_child(args.child, sizes[0], url, args.batch_size)))
        return 0

    print("\n".join(_environment(url)))
    print(f"- batch size {args.batch_size}; each run in its own fresh database and subprocess\n")
    floor = _measure(url, "imports", sizes[0], args.batch_size)
    runs = []
    for size in sizes:
        run = _measure(url, "seed", size, args.batch_size)
        runs.append(run)
        print(f"  seeded {size:,}: {run['total']:,} rows in {run['seconds']:.1f} s", file=sys.stderr)

    print("| registrations | rows, all tables | seed time | wall (incl. start, init) | rows/s | peak RSS |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r['size']:,} | {r['total']:,} | {r['seconds']:.1f} s | {r['wall']:.1f} s | {r['rate']:,.0f} "
              f"| {r['peak_mib']:.1f} MiB |")
    print(f"\nInterpreter + libraries alone (no data): {floor['peak_mib']:.1f} MiB peak RSS.")
    if len(runs) > 1:
        lo, hi = runs[0], runs[-1]
        print(f"Memory ratio {hi['size']:,} / {lo['size']:,}: {hi['peak_mib'] / lo['peak_mib']:.2f}x peak RSS "
              f"for {hi['total'] / lo['total']:.1f}x the rows.")

    gen = _measure(url, "generate-registrations", sizes[0], args.batch_size)
    copy = _measure(url, "copy-registrations", sizes[0], args.batch_size)
    insert = _measure(url, "insert-registrations", sizes[0], args.batch_size)
    print(f"\nBaseline, {sizes[0]:,} registrations rows only (same generator, same indexes):\n")
    print("| method | time | rows/s | write time (minus generating) | peak RSS |")
    print("|---|---:|---:|---:|---:|")
    for label, r in (("generate only, no writes", gen), ("COPY (binary), as seed() does", copy),
                     ("executemany INSERT, same batches", insert)):
        write = f"{r['seconds'] - gen['seconds']:.2f} s" if r is not gen else "-"
        print(f"| {label} | {r['seconds']:.2f} s | {r['rate']:,.0f} | {write} | {r['peak_mib']:.1f} MiB |")
    print(f"\nCOPY speed-up over executemany: {insert['seconds'] / copy['seconds']:.1f}x end to end, "
          f"{(insert['seconds'] - gen['seconds']) / (copy['seconds'] - gen['seconds']):.1f}x for the writing alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
