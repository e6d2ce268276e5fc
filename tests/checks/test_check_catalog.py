"""The check catalog (config/checks/*.yaml) against the seeded sample application.

One database holds the fleet schema and the sample app seeded at NOW with its planted problems (plus a
few planted fleet rows), shared by the module. Every enabled SQL check must run and return numbers;
the planted problems must make the expected checks' condition hold (and the healthy ones not); the
`for` rules must go pending at NOW - for and fire at NOW through the real engine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from ops.sample_app import init
from ops.sample_app.seed import seed
from ops.sample_app.seed.common import FAILING_WEBHOOK, STALE_WHATSAPP_SESSION
from tests.support import REPO
from worker.checks.collect import collect_sql
from worker.checks.engine import run_check
from worker.checks.templates import render
from worker.config import load_config
from worker.fleet.db import create
from worker.fleet.migrate import upgrade

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SCALE = 3000
CLEANUP_JOB = "cleanup_expired_seat_reservations"

CONFIG = load_config(REPO / "config")
SQL_CHECKS = sorted(n for n, c in CONFIG.checks.items() if c.kind == "sql" and c.enabled)

# check -> {label: values} the instances whose condition holds must have exactly; None: any instance
FIRING: dict[str, dict[str, set[str]] | None] = {
    # seed 000
    "confirmation_backlog": None,
    "confirmation_backlog_size": None,
    "confirmation_backlog_age": None,
    "confirmation_rate_low": None,
    "high_confirmation_error_rate": None,
    "webhook_error_rate_high": {"webhook_name": {FAILING_WEBHOOK}},
    "slow_confirmation_processing": None,
    # seed 001
    "error_rate_threshold": None,
    "performance_degradation": None,
    "sms_delivery_failures": None,
    "sms_failed_per_hour": None,
    # seed 003
    "whatsapp_session_stale": {"session_id": {STALE_WHATSAPP_SESSION}},
    "whatsapp_delivery_rate_low": None,
    "whatsapp_delivery_rate_low_24h": None,
    "whatsapp_error_rate_high": None,
    "whatsapp_top_errors": None,
    "whatsapp_log_retention_overdue": None,
    # seed 004
    "double_booking_attempts": None,
    "payment_failure_rate_high": None,
    "reservation_cleanup_job_failed": None,
    "reservation_cleanup_job_health": {"problem": {"no_run_10m", "failed_run", "slow_run"}},
    "expired_reservations_not_released": None,
    "reservation_top_errors": None,
    # fleet (rows planted below)
    "check_errors_in_a_row": {"check_name": {"broken_check"}},
    "database_down": None,
    "maintenance_job_health": {"job": {CLEANUP_JOB},
                               "problem": {"last_run_failed", "run_exceeded_timeout", "no_recent_run"}},
    "notifications_dead": None,
    "outbox_stuck": None,
}

# healthy in the seeded data by construction (the seed plants nothing there, or says so)
HEALTHY = [
    "no_confirmations_generated", "email_delivery_rate_low", "performance_degradation_severe",
    "page_load_slow", "failed_emails_per_hour", "backup_verification_failed", "database_up",
    "whatsapp_error_rate_critical", "whatsapp_session_disconnected", "payment_processing_down",
    "reservation_success_rate_low", "reservation_expiration_rate_high", "reservation_expiration_rate_high_1h",
    "reservation_hold_time_long", "active_reservations_high", "db_long_running_queries",
]

CLOCK_CALLS = re.compile(
    r"\b(now\s*\(|current_date\b|current_time\b|current_timestamp\b|localtime\b|localtimestamp\b|"
    r"clock_timestamp\s*\(|statement_timestamp\s*\(|transaction_timestamp\s*\()", re.IGNORECASE)


def _plant_fleet_rows(engine: sa.Engine) -> None:
    """A check failing 3 runs in a row (and one that only fails sometimes), the monitored database's
    sentinel failing twice, the cleanup job failing late and slowly, a dead and a stuck notification."""
    cleanup = CONFIG.maintenance[CLEANUP_JOB].model_dump(mode="json", by_alias=True)
    purge = CONFIG.maintenance["purge_whatsapp_logs"].model_dump(mode="json", by_alias=True)
    with engine.begin() as conn:
        runs = [("broken_check", m, "error") for m in (3, 2, 1)]
        runs += [("flaky_check", 3, "error"), ("flaky_check", 2, "ok"), ("flaky_check", 1, "error")]
        runs += [("database_up", 2, "error"), ("database_up", 1, "error")]
        for name, minutes, status in runs:
            at = NOW - timedelta(minutes=minutes)
            conn.execute(sa.text(
                """INSERT INTO fleet.check_runs (check_name, slot, started_at, finished_at, duration_ms, rows, status, error)
                   VALUES (:c, :at, :at, :at, 5, 0, :s, :e)"""),
                {"c": name, "at": at, "s": status, "e": 'relation "gone" does not exist' if status == "error" else None})
        jobs = [(CLEANUP_JOB, NOW - timedelta(minutes=m), 0.4, "ok", cleanup) for m in range(60, 20, -5)]
        jobs.append((CLEANUP_JOB, NOW - timedelta(minutes=20), 31.0, "error", cleanup))
        jobs.append(("purge_whatsapp_logs", NOW - timedelta(hours=3), 2.0, "ok", purge))
        for job, started, seconds, status, params in jobs:
            conn.execute(sa.text(
                """INSERT INTO fleet.job_runs (job, kind, started_at, finished_at, status, error, params)
                   VALUES (:j, :k, :s, :f, :st, :e, CAST(:p AS jsonb))"""),
                {"j": job, "k": params["kind"], "s": started, "f": started + timedelta(seconds=seconds), "st": status,
                 "e": "canceling statement due to statement timeout" if status == "error" else None,
                 "p": json.dumps(params)})
        notes = [("dead", NOW - timedelta(minutes=30), NOW - timedelta(minutes=20)),
                 ("pending", NOW - timedelta(minutes=30), NOW - timedelta(minutes=25)),
                 ("retrying", NOW - timedelta(minutes=30), NOW + timedelta(minutes=20))]
        for i, (status, created, due) in enumerate(notes):
            conn.execute(sa.text(
                """INSERT INTO fleet.notifications (channel, check_name, transition, payload, dedup_key, status,
                                                    attempts, next_attempt_at, created_at, last_error, dead_at)
                   VALUES ('email', 'planted', 'firing', '{}', :k, :s, 1, :due, :created, :e,
                           CASE WHEN :s = 'dead' THEN CAST(:due AS timestamptz) END)"""),
                {"k": f"planted:{i}", "s": status, "due": due, "created": created,
                 "e": "401: invalid API key" if status == "dead" else None})


@pytest.fixture(scope="module")
def engine(fresh_database):
    url = fresh_database()
    upgrade(url)
    eng = create(url)
    init(eng)
    seed(eng, SCALE, now=NOW)
    _plant_fleet_rows(eng)
    yield eng
    eng.dispose()


def _active(name: str, engine: sa.Engine, at: datetime = NOW):
    check = CONFIG.checks[name]
    samples = collect_sql(check, engine, at)
    return samples, [s for s in samples if s.value is not None and check.condition.holds(s.value)]


# -- the catalog itself (no database) -------------------------------------------------------------
SEED_OF_FILE = {"confirmations.yaml": "seed 000", "ace_engage.yaml": "seed 001", "wedsync.yaml": "seed 002",
                "whatsapp.yaml": "seed 003", "ticketing.yaml": "seed 004"}


def test_catalog_files_cite_their_seed_and_have_runbooks():
    assert len(CONFIG.checks) >= 60
    for name, check in CONFIG.checks.items():
        file = Path(CONFIG.check_files[name].split(":")[0]).name
        if file in SEED_OF_FILE:
            assert SEED_OF_FILE[file] in check.description, f"{name}: description must cite {SEED_OF_FILE[file]}"
        else:
            assert re.search(r"seed 00[0-4]|DESIGN\.md", check.description), f"{name}: description cites no source"
        assert check.runbook, f"{name}: no runbook"
        assert (REPO / check.runbook).is_file(), f"{name}: runbook {check.runbook} does not exist"


def test_queries_take_the_clock_from_now_parameter():
    for name, check in CONFIG.checks.items():
        if check.query:
            assert not CLOCK_CALLS.search(check.query), f"{name}: use :now, not the database clock"


def test_probes_are_disabled_until_given_a_real_url():
    for name, check in CONFIG.checks.items():
        if check.kind == "http":
            assert not check.enabled, f"{name}: an http probe of a placeholder URL must stay disabled"


def test_seed_rules_keep_their_thresholds_and_schedules():
    c = CONFIG.checks
    expect = {
        "confirmation_backlog": ("> 20", timedelta(minutes=15), "warning"),
        "no_confirmations_generated": ("> 0", timedelta(minutes=10), "critical"),
        "high_confirmation_error_rate": ("> 10", timedelta(minutes=5), "critical"),
        "slow_confirmation_processing": ("> 5", timedelta(minutes=10), "warning"),
        "double_booking_attempts": ("> 0", timedelta(0), "critical"),
        "payment_processing_down": ("> 20", timedelta(0), "critical"),
        "error_rate_threshold": ("> 5", timedelta(0), "critical"),
        "sms_delivery_failures": ("> 10", timedelta(0), "medium"),  # the Alert Types table, not the function
    }
    for name, (cond, for_, severity) in expect.items():
        assert (str(c[name].condition), c[name].for_, c[name].severity) == (cond, for_, severity), name
    assert {n: c[n].schedule.text for n in ("error_rate_threshold", "performance_degradation", "sms_delivery_failures")} \
        == {"error_rate_threshold": "0 * * * *", "performance_degradation": "15 * * * *",
            "sms_delivery_failures": "30 * * * *"}
    assert c["whatsapp_delivery_rate_low"].schedule.text == "*/15 * * * *"
    assert c["whatsapp_session_disconnected"].schedule.interval == timedelta(minutes=1)


def test_config_validate_prints_ok():
    out = subprocess.run([sys.executable, "-m", "worker.cli", "config", "validate", "--offline", str(REPO / "config")],  # noqa: S603
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok"), out.stdout


# -- every enabled SQL check against the seeded data ----------------------------------------------
@pytest.mark.parametrize("name", SQL_CHECKS)
def test_sql_check_runs_and_returns_numbers(name, engine):
    check = CONFIG.checks[name]
    samples = collect_sql(check, engine, NOW)
    for s in samples:
        assert s.value is None or isinstance(s.value, float)
        # the summary renders for this instance, and for it vanishing (value None)
        for value in (s.value, None):
            text = render(check.summary, value=value, labels=s.labels, check=name)
            assert "[template error" not in text, text


@pytest.mark.parametrize("name", sorted(FIRING))
def test_planted_problem_makes_condition_hold(name, engine):
    samples, active = _active(name, engine)
    assert active, f"{name}: condition {CONFIG.checks[name].condition} holds for none of {samples}"
    for label, values in (FIRING[name] or {}).items():
        assert {s.labels[label] for s in active} == values, f"{name}: {label} of the firing instances"


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_check_does_not_hold(name, engine):
    samples, active = _active(name, engine)
    assert samples, f"{name}: no rows"
    assert not active, f"{name}: condition {CONFIG.checks[name].condition} holds for {active}"


def test_pg_stat_statements_absent_is_no_data_not_an_error(engine):
    with engine.connect() as conn:
        loaded = conn.execute(sa.text("SELECT current_setting('pg_stat_statements.max', true)")).scalar()
    if loaded is not None:
        pytest.skip("pg_stat_statements is loaded on this server")
    for name in ("db_slow_queries", "db_query_time_avg_high"):
        assert [s.value for s in collect_sql(CONFIG.checks[name], engine, NOW)] == [None]


def test_whatsapp_delivery_rate_needs_more_than_ten_messages(engine):
    # an hour 3 days before NOW has only the sparse history: too few messages is no data, not an alert
    samples = collect_sql(CONFIG.checks["whatsapp_delivery_rate_low"], engine, NOW - timedelta(days=3))
    assert [s.value for s in samples] == [None]


# -- through the engine: pending at NOW - for, firing at NOW --------------------------------------
@pytest.mark.parametrize("name", sorted(FIRING))
def test_planted_problem_fires(name, engine):
    check = CONFIG.checks[name]
    wanted = FIRING[name] or {}

    def states(at: datetime) -> set[str]:
        out = run_check(check, monitored=engine, fleet=engine, now=at, routing=CONFIG.routing)
        assert out.status == "ok", out.error
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT labels, state FROM fleet.alerts WHERE check_name = :c"),
                                {"c": name}).all()
        rows = [r for r in rows if all(r.labels.get(k) in v for k, v in wanted.items())]
        assert rows, f"{name}: no alert instance at {at}"
        return {r.state for r in rows}

    if check.for_ > timedelta(0):
        assert states(NOW - check.for_) == {"pending"}
    assert states(NOW) == {"firing"}
    with engine.connect() as conn:
        queued = conn.execute(sa.text("SELECT COUNT(*) FROM fleet.notifications WHERE check_name = :c"),
                              {"c": name}).scalar()
    if check.severity != "info":  # info goes to the daily digest, which is not an outbox channel
        assert queued >= 1, f"{name}: firing queued no notification"
