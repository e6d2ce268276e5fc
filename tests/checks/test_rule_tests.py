"""Rule tests as data: every pack's config/<pack>/tests/*.yaml through worker.checks.ruletest (one
database of this module: the fleet's schema and the sample application's), every SQL check covered,
a deliberately wrong expectation failing at its line, and `opsfleet test` as a user runs it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.support import REPO
from tests.support.cli import run_cli
from worker.checks.ruletest import Runner, discover, load
from worker.config import load_config
from worker.fleet.db import create
from worker.fleet.errors import ConfigError

CONFIG = load_config(REPO / "config", packs="all")
FOLDERS = [CONFIG.root, *(p.folder for p in CONFIG.packs.values())]
FILES = discover(FOLDERS)
SQL_CHECKS = sorted(n for n, c in CONFIG.checks.items() if c.kind == "sql" and c.enabled)

# Checks without a rule test that fires, and why (each still has one that must not).
NO_FIRING_TEST = {
    "database_size": "fires above 8 GB: the test database is a few MB (tests/checks/test_check_rules.py checks its unit)",
    "webhook_logs_size_high": "fires above 10 GB of webhook_logs (its unit is checked in tests/checks/test_check_rules.py)",
    "database_up": "`SELECT 1` with `< 1` never holds by design; a down database is an error run, which "
                   "database_down (tested) pages on",
}
# The statistics and catalog checks: rows cannot make pg_stat_*, sequences, slots or sessions; their rule
# tests prove they evaluate on the server, tests/checks/test_check_rules.py crafts the live statistics and
# tests/checks/test_postgres_presets.py the presets' objects and sessions, each evaluated through the
# engine (tests/support/checks.py), firing with its labels and quiet (README.md, Checks: 52 + 18 + 3).
STATISTICS = {"db_cache_hit_ratio_low", "db_connections_high", "db_dead_tuples_high", "db_long_running_queries",
              "db_query_time_avg_high", "db_slow_queries", "db_unused_indexes",
              "db_xid_wraparound_warning", "db_xid_wraparound_critical", "db_sequences_near_max",
              "db_replication_slot_inactive", "db_replication_slot_wal_retained", "db_invalid_indexes",
              "db_idle_in_transaction", "db_blocked_sessions", "db_longest_transaction",
              "db_connections_near_limit", "db_checkpoints_requested"}


@pytest.fixture(scope="module")
def runner(app_db_url):
    engine = create(app_db_url)
    yield Runner(engine, CONFIG.checks, CONFIG.routing)
    engine.dispose()


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.parent.name}/{p.stem}" for p in FILES])
def test_rule_tests_pass(runner, path):
    result = runner.run(path)
    assert result.tests >= 1
    assert result.ok, "\n".join(result.failures)


@pytest.mark.parametrize("name", SQL_CHECKS)
def test_every_sql_check_ships_a_rule_test_that_fires_and_one_that_does_not(name):
    pack = CONFIG.check_pack[name]
    path = (CONFIG.packs[pack].folder if pack else CONFIG.root) / "tests" / f"{name}.yaml"
    assert path.is_file(), f"{name}: no rule test {path.relative_to(REPO)} (see worker/checks/ruletest.py)"
    _, spec = load(path)
    assert spec.check == name
    if name not in STATISTICS:  # those fire and stay quiet in tests/checks/test_check_rules.py, on a live server
        expects = [e for t in spec.tests for e in ([t.expect] if t.expect else [ev.expect for ev in t.evaluations or []])]
        assert any(e.alerts == [] or e.no_data for e in expects), f"{name}: no rule test that must not fire"
        assert any(e.alerts for e in expects) or name in NO_FIRING_TEST, f"{name}: no rule test that fires"


def test_the_lists_name_existing_checks():
    assert not (set(NO_FIRING_TEST) | STATISTICS) - set(SQL_CHECKS)


def test_the_readme_counts_the_checks_that_have_a_firing_test():
    """README.md says how many shipped SQL checks fire in a test, in their file and in pytest: the
    counts follow the checks and the two lists above."""
    in_file = [n for n in SQL_CHECKS if n not in STATISTICS | set(NO_FIRING_TEST)]
    text = " ".join((REPO / "README.md").read_text().split())
    said = (f"Of the {len(SQL_CHECKS)} shipped SQL checks, {len(in_file) + len(STATISTICS)} have a test that makes "
            f"them fire, through the engine as a worker evaluates them: {len(in_file)} in their file; the postgres "
            f"pack's {len(STATISTICS)} that read")
    assert said in text, said
    assert all(f"`{n}`" in text for n in NO_FIRING_TEST)


def _copy_with(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert old in text, old
    target = tmp_path / source.name
    target.write_text(text.replace(old, new, 1))
    return target


def test_a_deliberately_wrong_expectation_fails_at_its_line(runner, tmp_path):
    source = REPO / "config" / "confirmations" / "tests" / "high_confirmation_error_rate.yaml"
    wrong = _copy_with(tmp_path, source, "expect: {alerts: [{state: firing}], notifications: {email: 1, slack: 1}}",
                       "expect: {alerts: [{state: firing}], notifications: {email: 2, slack: 1}}")
    result = runner.run(wrong)
    [failure] = result.failures
    line = next(i for i, t in enumerate(wrong.read_text().splitlines(), 1) if "email: 2" in t)
    assert failure.startswith(f"{wrong}:{line}: expected notifications {{'email': 2, 'slack': 1}}, "
                              "got {'email': 1, 'slack': 1}"), failure
    assert "evaluation at 5m" in failure


@pytest.mark.parametrize(("old", "new", "says"), [
    ("{alerts: [{state: pending, value: 20}]", "{alerts: [{state: pending, value: 30}]",
     "expected alerts [{} pending 30], got [{} pending 20]"),
    ("{alerts: [{state: pending, value: 100}]}", "{alerts: []}", "expected alerts none, got [{} pending 100]"),
    ("{alerts: [], no_data: true}", "{alerts: [], no_data: false}", "expected no_data false, got {}=NULL"),
])
def test_each_kind_of_expectation_can_fail(runner, tmp_path, old, new, says):
    source = REPO / "config" / "confirmations" / "tests" / "high_confirmation_error_rate.yaml"
    result = runner.run(_copy_with(tmp_path, source, old, new))
    assert len(result.failures) == 1 and says in result.failures[0], result.failures


def test_a_converted_case_fails_when_its_value_is_wrong(runner, tmp_path):
    source = REPO / "config" / "confirmations" / "tests" / "confirmation_backlog.yaml"
    result = runner.run(_copy_with(tmp_path, source, "expect: {alerts: [{state: pending, value: 21}]}",
                                   "expect: {alerts: [{state: pending, value: 22}]}"))
    assert [re.sub(r"^.*?: ", "", f, count=1) for f in result.failures] == [
        "expected alerts [{} pending 22], got [{} pending 21] (test '21-pending', evaluation at 0s)"]


@pytest.mark.parametrize(("text", "says"), [
    ("check: confirmation_backlog\ntests:\n  - name: x\n    rowz: {}\n", ":4: tests[x].rowz: unknown key"),
    ("check: no_such_check\ntests:\n  - name: x\n", ":1: check: no check 'no_such_check'"),
    ("check: confirmation_backlog\ntests:\n  - name: x\n    rows:\n      registrations:\n        - {nope: 1}\n",
     ":6: table registrations has no column 'nope'"),
    ("check: confirmation_backlog\ntests:\n  - name: x\n    rows:\n      no_table:\n        - {a: 1}\n",
     ":5: no table 'no_table'"),
    ("check: confirmation_backlog\ntests:\n  - name: x\n    rows:\n      registrations:\n"
     "        - {customer_id: 1, event_id: 1, email: a, full_name: b, amount_in_cents: x, status: s, "
     "payment_status: p}\n", ":6: the row does not go into registrations: invalid input syntax for type integer"),
    ("check: confirmation_backlog\ntests:\n  - name: x\n    evaluations:\n      - at: soon\n",
     ":5: 'soon' is not an offset like -3m, +1h, 0s"),
    ("check: confirmation_backlog\ntests: [\n", "malformed YAML"),
    ("check: confirmation_backlg\ntests:\n  - name: x\n", ":1: check: no check 'confirmation_backlg' in the enabled "
     "packs (did you mean 'confirmation_backlog'?)"),
    ("check: confirmation_backlog\ntests:\n  - name: x\n    expect: {alerts: [{state: fring}]}\n",
     ":4: tests[x].expect.alerts.0.state: Input should be 'pending' or 'firing'"),
    ("check: confirmation_backlog\ntests:\n  - name: x\n    expect: {}\n    evaluations: [{at: 0s}]\n",
     ":3: tests[x]: give `expect` for one evaluation at 0s, or `evaluations`, not both"),
])
def test_a_bad_rule_test_file_is_one_line_naming_file_and_line(runner, tmp_path, text, says):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        runner.run(path)
    message = str(exc.value)
    assert message.startswith(str(path)) and says in message and "\n" not in message, message


# -- the command -------------------------------------------------------------------------------------
def test_opsfleet_test_runs_files_and_exits_1_on_a_failing_expectation(env, tmp_path):
    server = env["DATABASE_URL"]
    good = REPO / "config" / "confirmations" / "tests" / "high_confirmation_error_rate.yaml"
    ok = run_cli(["test", "--sample-schema", str(good)], env, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok" in ok.stdout and "0 failing expectations" in ok.stdout
    wrong = _copy_with(tmp_path, good, "value: 20}", "value: 21}")
    (tmp_path / "broken.yaml").write_text("check: confirmation_backlog\ntests:\n  - name: x\n    rowz: {}\n")
    bad = run_cli(["test", "--sample-schema", str(wrong), str(tmp_path / "broken.yaml")], env, timeout=120)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert re.search(rf"{re.escape(str(wrong))}:\d+: expected alerts \[\{{\}} pending 21\], got \[\{{\}} pending 20\]",
                     bad.stdout), bad.stdout
    assert "broken.yaml:4: tests[x].rowz: unknown key" in bad.stdout
    assert "2 files, " in bad.stdout and "1 failing expectations, 1 files with errors" in bad.stdout
    assert server == env["DATABASE_URL"]  # the database of DATABASE_URL was only the server's door


def test_opsfleet_test_with_a_schema_file_of_the_users_own(env, tmp_path):
    (tmp_path / "schema.sql").write_text("CREATE TABLE jobs (id serial PRIMARY KEY, state text, at timestamptz);")
    cfg = tmp_path / "config"
    (cfg / "checks").mkdir(parents=True)
    (cfg / "checks" / "jobs.yaml").write_text(yaml.safe_dump({"checks": [{
        "name": "stuck_jobs", "description": "jobs stuck over 10 minutes", "schedule": "1m",
        "query": "SELECT count(*) AS value FROM jobs WHERE state = 'running' AND at < :now - interval '10 minutes'",
        "condition": "> 0", "severity": "warning", "summary": "{{ value }} stuck jobs"}]}))
    (cfg / "tests").mkdir()
    (cfg / "tests" / "stuck_jobs.yaml").write_text(
        "check: stuck_jobs\ntests:\n  - name: one stuck\n    rows:\n      jobs:\n"
        "        - {state: running, at: -11m}\n        - {state: running, at: -10m}\n"
        "    expect: {alerts: [{state: firing, value: 1}]}\n")
    e = {**env, "OPSFLEET_CONFIG_DIR": str(cfg), "OPSFLEET_PACKS": ""}
    proc = run_cli(["test", "--schema", str(tmp_path / "schema.sql")], e, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 files, 1 tests, 1 evaluations: 0 failing expectations" in proc.stdout
    (tmp_path / "bad.sql").write_text("CREATE TABLE (;")
    bad = run_cli(["test", "--schema", str(tmp_path / "bad.sql")], e, timeout=120)
    assert bad.returncode == 2 and "--schema" in bad.stderr and "syntax error" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0


@pytest.mark.skipif(shutil.which("initdb") is None and shutil.which("pg_ctl") is None and
                    not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
                    reason="no initdb/pg_ctl for an embedded Postgres (apt-get install postgresql)")
def test_opsfleet_test_without_database_url_starts_an_embedded_postgres(env):
    e = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    good = REPO / "config" / "ticketing" / "tests" / "double_booking_attempts.yaml"
    proc = run_cli(["test", str(good)], e, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "embedded Postgres" in proc.stderr and "0 failing expectations" in proc.stdout
