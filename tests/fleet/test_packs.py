"""Packs: the seed systems' checks, jobs and backlogs are opt-in folders; the shipped default
(postgres and fleet) comes up healthy against any Postgres; a pack whose tables or functions the
database lacks is refused at start and by `config validate`, one line per missing object; `opsfleet
init` writes a starter config that validates."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from tests.support import REPO
from tests.support.cli import run_cli
from worker.checks.engine import run_check
from worker.config import load_config
from worker.fleet.db import create
from worker.fleet.errors import ConfigError

SEED_PACKS = {"confirmations", "ace_engage", "wedsync", "whatsapp", "ticketing"}


def test_the_shipped_default_enables_postgres_and_fleet_and_all_means_every_pack(monkeypatch):
    monkeypatch.delenv("OPSFLEET_PACKS", raising=False)
    default = load_config(REPO / "config")
    assert list(default.packs) == ["postgres", "fleet"]
    assert {default.check_pack[c] for c in default.checks} == {"postgres", "fleet"}
    assert set(default.maintenance) == {"analyze_weekly", "fleet_history_retention"} and default.backlogs == {}
    # the dashboard channel writes the sample app's system_alerts: off with its pack
    assert "dashboard" not in default.routing.channels
    assert all("dashboard" not in r.channels for r in default.routing.routes)
    everything = load_config(REPO / "config", packs="all")
    assert set(everything.packs) == SEED_PACKS | {"postgres", "fleet"} and len(everything.checks) == 80
    assert "dashboard" in everything.routing.channels and len(everything.backlogs) == 2
    monkeypatch.setenv("OPSFLEET_PACKS", "postgres,ticketing")
    assert list(load_config(REPO / "config").packs) == ["postgres", "ticketing"]


def test_an_unknown_pack_is_named_with_its_line_and_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.delenv("OPSFLEET_PACKS", raising=False)
    (tmp_path / "packs.yaml").write_text("enabled:\n  - postgres\n  - confirmatons\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert "packs.yaml:3: enabled.1: no pack 'confirmatons'" in str(err.value) and "confirmations" in str(err.value)
    with pytest.raises(ConfigError, match="OPSFLEET_PACKS=nope: no pack 'nope'"):
        monkeypatch.setenv("OPSFLEET_PACKS", "nope")
        load_config(tmp_path)


def test_a_first_deploy_against_any_postgres_runs_every_default_check_without_an_error(bare_db, monkeypatch):
    monkeypatch.delenv("OPSFLEET_PACKS", raising=False)
    cfg = load_config(REPO / "config")
    engine = create(bare_db)
    try:
        now = datetime.now(UTC)
        outcomes = {name: run_check(c, monitored=engine, fleet=engine, now=now, routing=cfg.routing)
                    for name, c in cfg.checks.items() if c.enabled}
    finally:
        engine.dispose()
    errors = {n: o.error for n, o in outcomes.items() if o.status == "error"}
    assert errors == {} and len(outcomes) == 27


def _refusal_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 2, proc.stdout + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("opsfleet")]


def test_a_pack_whose_tables_are_missing_is_refused_by_a_checks_worker_and_by_validate(env, bare_db, tmp_path):
    e = {**env, "DATABASE_URL": bare_db, "OPSFLEET_PACKS": "postgres,fleet,whatsapp"}
    worker = subprocess.run([sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "checks", "-c", "1"],  # noqa: S603
                            env=e, capture_output=True, text=True, timeout=90, cwd=REPO)
    lines = _refusal_lines(worker)
    missing = [line for line in lines if "pack whatsapp needs" in line]
    assert {line.split("needs table ")[1].split(",")[0] for line in missing} == \
        {"'whatsapp_error_logs'", "'whatsapp_notifications'", "'whatsapp_sessions'"}
    assert all("config/whatsapp/pack.yaml" in line for line in missing)
    assert "disable the pack in config/packs.yaml" in lines[-1]
    validate = run_cli(["config", "validate"], e)
    assert [line.removeprefix("opsfleet: error: ") for line in _refusal_lines(validate)] == \
        [line.removeprefix("opsfleet worker: ") for line in lines]
    # with only the default packs both start clean
    ok = run_cli(["config", "validate"], {**e, "OPSFLEET_PACKS": "postgres,fleet"})
    assert ok.returncode == 0 and "packs postgres, fleet" in ok.stdout, ok.stderr


def test_a_check_whose_query_names_a_missing_table_is_named_with_its_line(env, bare_db, tmp_path):
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "mine.yaml").write_text(
        "checks:\n  - name: fine\n    description: d\n    schedule: 1m\n    query: SELECT 1 AS value\n"
        "    condition: '> 5'\n    severity: info\n    summary: s\n"
        "  - name: typo\n    description: d\n    schedule: 1m\n    query: SELECT count(*) AS value FROM ordrs\n"
        "    condition: '> 5'\n    severity: info\n    summary: s\n")
    e = {**env, "DATABASE_URL": bare_db, "OPSFLEET_CONFIG_DIR": str(tmp_path), "OPSFLEET_PACKS": ""}
    lines = _refusal_lines(run_cli(["config", "validate"], e))
    assert lines[0].endswith('mine.yaml:9: checks[typo]: relation "ordrs" does not exist'), lines


def test_a_check_with_a_syntax_error_is_told_to_fix_its_query_not_its_database(env, bare_db, tmp_path):
    (tmp_path / "checks").mkdir()
    mine = tmp_path / "checks" / "mine.yaml"
    mine.write_text("checks:\n  - name: broken\n    description: d\n    schedule: 1m\n    query: SELECT count(* AS value\n"
                    "    condition: '> 5'\n    severity: info\n    summary: s\n")
    e = {**env, "DATABASE_URL": bare_db, "OPSFLEET_CONFIG_DIR": str(tmp_path), "OPSFLEET_PACKS": ""}
    # a syntax error: Postgres's parser (pglast) refuses it as the file loads, no database asked
    lines = _refusal_lines(run_cli(["config", "validate"], e))
    assert len(lines) == 1 and 'mine.yaml:5: checks[broken].query: the query does not parse: syntax error at or near ' \
        '"AS"' in lines[0] and "DATABASE_URL" not in lines[0], lines
    # a query that parses but the database cannot run: the query's own fault, not the database's
    mine.write_text("checks:\n  - name: broken\n    description: d\n    schedule: 1m\n"
                    "    query: SELECT 1 / 'x'::int AS value\n    condition: '> 5'\n    severity: info\n    summary: s\n")
    lines = _refusal_lines(run_cli(["config", "validate"], e))
    assert len(lines) == 2 and lines[0].endswith('mine.yaml:2: checks[broken]: invalid input syntax for type integer: '
                                                 '"x"'), lines
    assert "fix it at the file and line named" in lines[1] and "DATABASE_URL" not in lines[1], lines


def test_init_writes_a_starter_config_that_validates_and_runs(env, bare_db, tmp_path):
    target = tmp_path / "myapp"
    made = run_cli(["init", str(target)], env)
    assert made.returncode == 0, made.stderr
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*.yaml")) == \
        ["app/checks.yaml", "app/pack.yaml", "packs.yaml", "routing.yaml", "targets.yaml"]
    e = {**env, "DATABASE_URL": bare_db, "OPSFLEET_CONFIG_DIR": str(target), "OPSFLEET_PACKS": ""}
    ok = run_cli(["config", "validate"], e)
    assert ok.returncode == 0 and "packs postgres, fleet, app" in ok.stdout, ok.stderr
    dry = run_cli(["checks", "run", "transactions_idle_too_long", "--dry-run"], e)
    assert dry.returncode == 0 and "condition > 0" in dry.stdout, dry.stderr
    again = run_cli(["init", str(target)], env)
    assert again.returncode == 2 and "is there already" in again.stderr and "--force" in again.stderr


def test_every_seed_pack_requires_what_its_checks_and_jobs_read(app_db_url):
    """Each shipped pack's `requires` is true of the sample application (which has every seed's
    tables), and EXPLAIN of every check plans there: the packs' declarations are not stale."""
    from worker.checks.catalog import check_queries
    from worker.packs import missing

    cfg = load_config(REPO / "config", packs="all")
    engine = create(app_db_url)
    try:
        with engine.connect() as conn:
            assert [m for p in cfg.packs.values() for m in missing(p, conn)] == []
        assert check_queries(cfg.checks.values(), {"monitored": engine, "fleet": engine}, cfg.check_field) == []
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        engine.dispose()
