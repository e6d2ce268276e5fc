"""Least privilege: checks run as a monitoring role that cannot do harm (README, Least privilege).
The whole catalog runs green under that role on the seeded sample app; the harm a READ ONLY
transaction still allows a superuser (signalling backends, reloading the config) fails under it;
a superuser or a role that may write is warned about in `opsfleet health` and at a worker's start."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa

from ops.sample_app import init
from ops.sample_app.seed import seed
from tests.support import REPO
from worker.checks.engine import run_check
from worker.config import load_config
from worker.fleet.db import checks_role_warnings, create
from worker.fleet.migrate import upgrade
from worker.fleet.settings import Settings
from worker.watch.health import run_all

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
# What the README tells an operator to run (pg_monitor, then SELECT on the application's tables).
MONITOR_ROLE_SQL = """
CREATE ROLE {role} LOGIN;
GRANT pg_monitor TO {role};
GRANT CONNECT ON DATABASE "{db}" TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};
GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};
"""


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.split("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


@pytest.fixture(scope="module")
def app(fresh_database):
    """The seeded sample app (superuser engine), a monitoring role on it, and a role that may write."""
    url = fresh_database()
    upgrade(url)
    admin = create(url)
    init(admin)
    seed(admin, 3000, now=NOW)
    monitor, writer = f"opsfleet_mon_{uuid.uuid4().hex[:8]}", f"opsfleet_rw_{uuid.uuid4().hex[:8]}"
    db = urlsplit(url).path.lstrip("/")
    with admin.begin() as conn:
        for stmt in MONITOR_ROLE_SQL.format(role=monitor, db=db).strip().splitlines():
            conn.execute(sa.text(stmt))
        for stmt in MONITOR_ROLE_SQL.format(role=writer, db=db).strip().splitlines():
            conn.execute(sa.text(stmt))
        conn.execute(sa.text(f"GRANT INSERT ON registrations TO {writer}"))
    yield {"url": url, "admin": admin, "monitor": as_role(url, monitor), "writer": as_role(url, writer)}
    with admin.begin() as conn:
        for role in (monitor, writer):
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
    admin.dispose()


def test_the_whole_catalog_runs_green_under_the_monitoring_role(app):
    cfg = load_config(REPO / "config", packs="all")
    monitor = create(app["monitor"])
    try:
        outcomes = {n: run_check(c, monitored=monitor, fleet=app["admin"], now=NOW, routing=None)
                    for n, c in cfg.checks.items() if c.enabled and c.kind == "sql"}
    finally:
        monitor.dispose()
    errors = {n: o.error for n, o in outcomes.items() if o.status == "error"}
    assert errors == {} and len(outcomes) > 60
    fired = {n for n, o in outcomes.items() if o.transitions}
    assert {"webhook_error_rate_high", "confirmation_backlog"} <= fired  # it sees the planted problems
    notes = {n: o.note for n, o in outcomes.items() if o.note}
    assert not any("pg_monitor" in (v or "") for v in notes.values()), notes  # pg_monitor is enough


def test_what_read_only_still_allows_a_superuser_fails_under_the_monitoring_role(app):
    monitor = create(app["monitor"])
    try:
        with app["admin"].connect() as admin_conn:
            pid = admin_conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            for call in (f"SELECT pg_terminate_backend({pid})", f"SELECT pg_cancel_backend({pid})",
                         "SELECT pg_reload_conf()"):
                with monitor.connect() as conn, pytest.raises(sa.exc.DBAPIError,
                                                               match="permission denied|must be a superuser"):
                    conn.execute(sa.text("BEGIN READ ONLY"))
                    conn.execute(sa.text(call))
            assert admin_conn.execute(sa.text("SELECT 1")).scalar() == 1  # still alive
        with monitor.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="permission denied"):
            conn.execute(sa.text("UPDATE registrations SET status = status"))
    finally:
        monitor.dispose()


def test_a_superuser_or_a_role_that_may_write_is_warned_about_and_the_monitoring_role_is_not(app):
    [superuser] = checks_role_warnings(app["admin"])
    assert "a superuser (DATABASE_URL)" in superuser and "MAINTENANCE_DATABASE_URL" in superuser
    for key, expected in (("writer", "may write 1 table(s)"), ("monitor", None)):
        engine = create(app[key])
        try:
            found = checks_role_warnings(engine)
        finally:
            engine.dispose()
        assert (found[0] if found else None) is None if expected is None else expected in found[0]
    # `opsfleet health` (and /health) shows it as a warning of its own, the database itself being fine
    cfg = load_config(REPO / "config")
    probes = {p.name: p for p in run_all(Settings(database_url=app["url"]), cfg, groups={"database"})}
    assert probes["database"].state == "ok" and probes["checks role"].state == "warn"
    probes = {p.name: p for p in run_all(Settings(database_url=app["monitor"], fleet_database_url=app["url"]), cfg,
                                         groups={"database"})}
    assert probes["checks role"].state == "ok"
