"""Every class of bad input gets one clear line, a non-zero exit and no traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from sqlalchemy.engine import make_url

from ops.devkit.servers import free_port
from tests.support import REPO
from tests.support.cli import run_cli


def _one_line_error(proc, *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    text = " ".join(proc.stderr.split())
    for n in needles:
        assert n in text, proc.stderr
    return text


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ("DATABASE_URL", "mysql://u@h/db", "DATABASE_URL must be a postgresql:// URL"),
        ("FLOWER_BASIC_AUTH", "justauser", "FLOWER_BASIC_AUTH must be user:password"),
    ],
)
def test_malformed_setting_names_the_variable(env, var, value, needle):
    proc = run_cli(["db", "upgrade"], {**env, var: value})
    _one_line_error(proc, needle)


def test_a_malformed_broker_url_is_named_where_a_broker_is_used(env):
    """`opsfleet ping` and `celery -A worker` need the broker: one line naming CELERY_BROKER_URL."""
    _one_line_error(run_cli(["ping"], {**env, "CELERY_BROKER_URL": "http://nope"}), "CELERY_BROKER_URL", "'http'")
    proc = subprocess.run([sys.executable, "-m", "celery", "-A", "worker", "inspect", "ping"],  # noqa: S603
                          env={**env, "CELERY_BROKER_URL": "http://nope"}, capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "CELERY_BROKER_URL must be redis://... or amqp://..." in proc.stderr


@pytest.mark.parametrize("broker", [None, "http://nope", "bogus"])
def test_config_loads_and_validates_offline_whatever_the_broker_url(env, broker):
    """Reading YAML needs no broker settings: load_config() in a fresh process, and `opsfleet config
    validate --offline`, with CELERY_BROKER_URL unset or bogus."""
    e = {k: v for k, v in env.items() if k != "CELERY_BROKER_URL"}
    if broker is not None:
        e["CELERY_BROKER_URL"] = broker
    loaded = subprocess.run([sys.executable, "-c", "from worker.config import load_config; "
                             "print(len(load_config().checks))"], env=e, capture_output=True, text=True,
                            timeout=60, cwd=REPO)  # noqa: S603
    assert loaded.returncode == 0 and int(loaded.stdout) > 20, loaded.stderr
    proc = run_cli(["config", "validate", "--offline"], e)
    assert proc.returncode == 0 and proc.stdout.startswith("ok: "), proc.stderr


def test_missing_database_url_says_what_to_set(env):
    env = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    proc = run_cli(["db", "upgrade"], env)
    _one_line_error(proc, "DATABASE_URL is not set", "export DATABASE_URL=")


def test_unreachable_database_is_one_line(env):
    port = free_port()
    proc = run_cli(["db", "upgrade"], {**env, "DATABASE_URL": f"postgresql://u:hunter2secret@127.0.0.1:{port}/x"})
    text = _one_line_error(proc, "cannot reach", f"127.0.0.1:{port}")
    assert "hunter2secret" not in text
    assert proc.returncode == 3


def test_unreachable_broker_is_one_line(env):
    port = free_port()
    proc = run_cli(["ping"], {**env, "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0"})
    _one_line_error(proc, "broker", f"127.0.0.1:{port}")


def _config(tmp_path, checks_yaml: str, name: str = "bad.yaml"):
    (tmp_path / "checks").mkdir(parents=True, exist_ok=True)
    (tmp_path / "checks" / name).write_text(textwrap.dedent(checks_yaml))
    return tmp_path


GOOD_CHECK = """\
checks:
  - name: ok_check
    description: fine
    schedule: 1m
    query: SELECT 1 AS value
    condition: "> 0"
    severity: info
    summary: fine
"""


@pytest.mark.parametrize(
    ("yaml_text", "needles"),
    [
        ("checks:\n  - name: x\n    description: [unclosed\n", ["bad.yaml:4", "malformed YAML", "started at line 3"]),
        (GOOD_CHECK + "    colour: red\n", ["bad.yaml:9", "checks[ok_check].colour", "unknown key"]),
        (GOOD_CHECK.replace("schedule: 1m", 'schedule: "61 * * * *"'), ["bad.yaml:4", "checks[ok_check].schedule",
                                                                         "not a valid cron expression"]),
        (GOOD_CHECK.replace('"> 0"', '"__import__(\'os\')"'), ["bad.yaml:6", "checks[ok_check].condition", "not a condition"]),
        (GOOD_CHECK.replace("severity: info", "severity: apocalyptic"), ["bad.yaml:7", "checks[ok_check].severity"]),
        (GOOD_CHECK.replace("    query: SELECT 1 AS value\n", ""), ["bad.yaml", "a sql check needs `query`"]),
        (GOOD_CHECK.replace("name: ok_check", "name: Not-Snake"), ["bad.yaml:2", "snake_case"]),
        (GOOD_CHECK.replace("summary: fine", "summary: '{{ value '"), ["bad.yaml:8", "template syntax error"]),
        (GOOD_CHECK.replace("query: SELECT 1 AS value", "query: SELECT 1 AS value; DELETE FROM registrations"),
         ["bad.yaml:5", "checks[ok_check].query", "second SQL statement (line 1 of the query)"]),
        (GOOD_CHECK.replace("query: SELECT 1 AS value", "query: SELECT count(*) AS value FROM t WHERE at > :since"),
         ["bad.yaml:5", "checks[ok_check].query", "unknown bind parameter :since"]),
        # an over-indented line is part of the block above it: said so, at its line, with what to do
        (GOOD_CHECK.replace("    query: SELECT 1 AS value\n    condition:", "    query: |\n      SELECT 1 AS value\n      condition:"),
         ["bad.yaml:7: checks[ok_check].condition: required field is missing: line 7 (condition: \"> 0\") is read as "
          "part of `query`'s text, as it is indented deeper than `query:`; indent `condition:` as `query:` is"]),
    ],
)
def test_invalid_config_names_file_line_and_field(env, tmp_path, yaml_text, needles):
    cfg = _config(tmp_path, yaml_text)
    proc = run_cli(["config", "validate"], {**env, "OPSFLEET_CONFIG_DIR": str(cfg)})
    _one_line_error(proc, *needles)


@pytest.mark.parametrize(("args", "says"), [
    (["checks", "run", "confirmation_backlg"], "unknown check 'confirmation_backlg' (did you mean 'confirmation_backlog'?)"),
    (["alerts", "history", "--check", "confirmaton_backlog"], "--check: unknown check 'confirmaton_backlog' (did you mean "),
    (["silence", "add", "--check", "confirmation_backlogg", "--for", "1h"], "(did you mean 'confirmation_backlog'?)"),
])
def test_an_unknown_check_name_suggests_the_closest(env, args, says):
    _one_line_error(run_cli(args, env), says)


def test_a_check_of_a_pack_not_enabled_says_so(env):
    proc = run_cli(["checks", "run", "whatsapp_error_rate_high"], {**env, "OPSFLEET_PACKS": "postgres,fleet"})
    _one_line_error(proc, "check whatsapp_error_rate_high belongs to pack whatsapp, which is not enabled")


def test_duplicate_check_names_point_at_both_files(env, tmp_path):
    _config(tmp_path, GOOD_CHECK, "a.yaml")
    _config(tmp_path, GOOD_CHECK, "b.yaml")
    proc = run_cli(["config", "validate"], {**env, "OPSFLEET_CONFIG_DIR": str(tmp_path)})
    _one_line_error(proc, "b.yaml:2", "already defined at", "a.yaml:2")


def test_missing_config_folder(env, tmp_path):
    proc = run_cli(["config", "validate"], {**env, "OPSFLEET_CONFIG_DIR": str(tmp_path / "nope")})
    _one_line_error(proc, "config folder not found", "OPSFLEET_CONFIG_DIR")


def test_route_naming_unknown_channel(env, tmp_path):
    (tmp_path / "routing.yaml").write_text("channels:\n  email: {kind: email}\nroutes:\n  - channels: [pager]\n")
    proc = run_cli(["config", "validate"], {**env, "OPSFLEET_CONFIG_DIR": str(tmp_path)})
    _one_line_error(proc, "routing.yaml", "pager")


def test_repo_config_is_valid(env, app_db_url):
    proc = run_cli(["config", "validate", str(REPO / "config")], {**env, "DATABASE_URL": app_db_url})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok:")


def test_runbook_path_that_does_not_exist(env, tmp_path):
    cfg = _config(tmp_path / "config", GOOD_CHECK + "    runbook: ops/runbooks/nope.md\n")
    proc = run_cli(["config", "validate"], {**env, "OPSFLEET_CONFIG_DIR": str(cfg)})
    _one_line_error(proc, "bad.yaml:2", "runbook", "ops/runbooks/nope.md does not exist")


def test_worker_refuses_to_start_with_bad_config(env, tmp_path):
    import subprocess
    import sys

    cfg = _config(tmp_path / "config", GOOD_CHECK.replace("1m", "every tuesday"))
    proc = subprocess.run([sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "checks", "-c", "1"],  # noqa: S603
                          env={**env, "OPSFLEET_CONFIG_DIR": str(cfg)}, cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "bad.yaml:4" in proc.stderr and "checks[ok_check].schedule" in proc.stderr
    assert "Traceback" not in proc.stderr


MISSING_TABLE_JOB = """\
jobs:
  - name: archive_old_logs
    kind: archive
    schedule: "0 3 * * *"
    table: webhook_logz
    archive_table: webhook_logs_archive
    older_than: 90d
"""


def test_config_validate_checks_the_jobs_against_the_database(env, tmp_path, app_db_url):
    (tmp_path / "maintenance.yaml").write_text(MISSING_TABLE_JOB)
    e = {**env, "OPSFLEET_CONFIG_DIR": str(tmp_path), "DATABASE_URL": app_db_url}
    proc = run_cli(["config", "validate"], e)
    assert proc.returncode == 2
    _one_line_error(proc, "maintenance.yaml:5: jobs[archive_old_logs].table", "table 'webhook_logz' does not exist in the monitored database")
    offline = run_cli(["config", "validate", "--offline"], e)
    assert offline.returncode == 0 and "not checked against a database" in offline.stdout, offline.stderr
    good = run_cli(["config", "validate", str(REPO / "config")], e)
    assert good.returncode == 0 and "packs, checks and jobs checked against" in good.stdout, good.stderr
    port = free_port()
    down = run_cli(["config", "validate"], {**e, "DATABASE_URL": f"postgresql://u:hunter2secret@127.0.0.1:{port}/x"})
    text = _one_line_error(down, "cannot reach", f"127.0.0.1:{port}", "--offline")
    assert "hunter2secret" not in text


def test_a_maintenance_worker_refuses_to_start_when_a_job_names_a_missing_table(env, tmp_path, app_db_url):
    import subprocess
    import sys

    (tmp_path / "maintenance.yaml").write_text(MISSING_TABLE_JOB)
    proc = subprocess.run([sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "maintenance,backlog", "-c", "1"],  # noqa: S603
                          env={**env, "OPSFLEET_CONFIG_DIR": str(tmp_path), "DATABASE_URL": app_db_url}, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "maintenance.yaml:5: jobs[archive_old_logs].table" in proc.stderr and "webhook_logz" in proc.stderr
    assert "Traceback" not in proc.stderr


def _celery(args: list[str], env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    if args[0] == "beat":
        args = [*args, "-s", str(tmp_path / "beat-schedule")]
    return subprocess.run([sys.executable, "-m", "celery", "-A", "worker", *args], env=env, cwd=REPO,  # noqa: S603
                          capture_output=True, text=True, timeout=90)


def _refused(proc: subprocess.CompletedProcess, *needles: str) -> list[str]:
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "ready." not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("opsfleet")]
    assert lines, proc.stderr[-2000:]
    for n in needles:
        assert any(n in line for line in lines), (n, lines)
    return lines


@pytest.mark.parametrize("process", [["worker", "-Q", "checks", "-c", "1"], ["beat"]])
def test_a_worker_or_beat_without_database_url_refuses_to_start_with_the_clis_line(env, tmp_path, process):
    e = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    lines = _refused(_celery(process, e, tmp_path), "DATABASE_URL is not set")
    cli = run_cli(["db", "upgrade"], e)
    assert cli.stderr.strip().removeprefix("opsfleet: error: ") in lines[0]


@pytest.mark.parametrize("process", [["worker", "-Q", "checks", "-c", "1"], ["beat"]])
def test_an_unreachable_broker_at_start_is_one_line_and_a_refusal(env, tmp_path, process):
    port = free_port()
    lines = _refused(_celery(process, {**env, "CELERY_BROKER_URL": f"redis://:hunter2secret@127.0.0.1:{port}/0",
                                       "REDIS_URL": env["CELERY_BROKER_URL"]}, tmp_path),
                     "cannot reach the broker", f"127.0.0.1:{port}", "CELERY_BROKER_URL")
    assert len(lines) == 1 and "hunter2secret" not in lines[0]


@pytest.mark.parametrize("process", [["worker", "-Q", "notify", "-c", "1"], ["beat"]])
def test_an_unreachable_redis_at_start_is_one_line_and_a_refusal(env, tmp_path, process):
    port = free_port()
    lines = _refused(_celery(process, {**env, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}, tmp_path),
                     "cannot reach Redis", f"127.0.0.1:{port}", "REDIS_URL")
    assert len(lines) == 1


def test_ping_names_the_broker_and_redis(env):
    proc = run_cli(["ping"], env)
    assert proc.returncode == 0, proc.stderr
    assert [line.split(" ")[1] for line in proc.stdout.splitlines()] == ["DATABASE_URL", "fleet", "broker", "redis"]
    port = free_port()
    down = run_cli(["ping"], {**env, "REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    _one_line_error(down, "cannot reach Redis", f"127.0.0.1:{port}")


@pytest.mark.parametrize("process", [["worker", "-Q", "checks", "-c", "1"], ["beat"]])
@pytest.mark.parametrize("mistake", ["role", "database"])
def test_a_worker_or_beat_whose_database_refuses_the_url_refuses_to_start(env, tmp_path, process, mistake):
    """README: a database that refuses the URL's role or names no database is a mistake waiting does
    not mend: exit 2, one line naming the variable (a database that does not answer is waited for)."""
    url = make_url(env["DATABASE_URL"])
    url = url.set(username="opsfleet_no_such_role") if mistake == "role" else url.set(database="opsfleet_no_such_db")
    bad = url.render_as_string(hide_password=False)
    lines = _refused(_celery(process, {**env, "DATABASE_URL": bad, "FLEET_DATABASE_URL": ""}, tmp_path),
                     "DATABASE_URL", "is refused by its server", "does not exist")
    assert len(lines) == 1, lines


def test_a_database_that_does_not_answer_at_start_is_a_warning_not_a_refusal(env):
    port = free_port()
    code = ("from worker.startup import worker_findings, beat_findings\n"
            "w, b = worker_findings(['checks']), beat_findings()\n"
            "print(len(w.errors), len(b.errors), any('not checked against the database' in x for x in w.warnings))")
    proc = subprocess.run([sys.executable, "-c", code], env={**env, "DATABASE_URL": f"postgresql://u@127.0.0.1:{port}/x",  # noqa: S603
                                                             "FLEET_DATABASE_URL": ""},
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["0", "0", "True"], proc.stdout + proc.stderr[-2000:]
