"""What the tests of several targets share (tests/targets/, and tests/support/targets_web.py and
targets_cli.py for the web, watch, cli and reports folders): a test pack `app` reading a `jobs` table,
its one check, and a database URL that nothing answers."""

from __future__ import annotations

UNREACHABLE = "postgresql://postgres@127.0.0.1:9/nothing_listens_here"
APP_PACK = """description: a test application with a jobs table
requires: {tables: [jobs]}
"""
APP_CHECKS = """checks:
  - name: jobs_backlog
    description: jobs waiting (a test check of the app pack)
    schedule: 1m
    query: SELECT count(*) AS value FROM jobs WHERE NOT done
    condition: "> 2"
    severity: critical
    summary: "{{ value | int }} jobs waiting"
"""


def jobs_database(fresh_database, waiting: int) -> str:
    """A fresh database with the app pack's `jobs` table holding `waiting` jobs not done; its URL."""
    import sqlalchemy as sa

    from worker.fleet.db import create

    url = fresh_database()
    engine = create(url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE jobs (id serial PRIMARY KEY, done boolean NOT NULL DEFAULT false)"))
        conn.execute(sa.text("INSERT INTO jobs (done) SELECT false FROM generate_series(1, :n)"), {"n": waiting})
    engine.dispose()
    return url


def two_postgres_targets(folder, monkeypatch):
    """A config folder at `folder` with targets a and b, each with the postgres pack (its maintenance
    jobs run on both), loaded; the URLs are placeholders (nothing connects)."""
    from worker.config import load_config

    (folder / "packs.yaml").write_text("enabled: [fleet]\n")
    (folder / "targets.yaml").write_text(
        "targets:\n" + "".join(f"  - name: {n}\n    url: ${{{n.upper()}_URL}}\n    packs: [postgres]\n" for n in "ab"))
    monkeypatch.setenv("A_URL", "postgresql://x/a")
    monkeypatch.setenv("B_URL", "postgresql://x/b")
    return load_config(folder, packs=["fleet"])
