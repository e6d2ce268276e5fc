"""Every usage error of the CLI is one line on stderr and exit 2, never a traceback (typer ships its own
copy of click, whose errors must be caught too), and a group without a command prints its help."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli

USAGE = [
    (["checks", "run"], "checks run: Missing argument 'name'"),
    (["chekcs", "list"], "No such command 'chekcs'. Did you mean 'checks'?"),
    (["--bogus"], "No such option: --bogus"),
    (["backlog", "reprocess", "--limit", "abc"], "backlog reprocess: Invalid value for '--limit'"),
    (["metrics", "--port", "abc"], "metrics: Invalid value for '--port'"),
    (["silence", "add", "--for"], "Option '--for' requires an argument"),
    (["backlog", "reprocess", "--batch-size", "0"], "backlog reprocess: Invalid value for '--batch-size'"),
    (["checks", "run", "a", "b"], "checks run: Got unexpected extra argument(s) (b)"),
]


@pytest.mark.parametrize(("args", "needle"), USAGE, ids=[" ".join(a) for a, _ in USAGE])
def test_a_usage_error_is_one_line_and_exit_2(env, args, needle):
    proc = run_cli(args, env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opsfleet: error: ") and needle in lines[0], proc.stderr
    assert "--help`)" in lines[0] and proc.stdout == ""


@pytest.mark.parametrize("group", [[], ["checks"], ["backlog"]])
def test_a_group_without_a_command_prints_its_help(env, group):
    proc = run_cli(group, env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "Usage:" in proc.stdout and "Commands" in proc.stdout


def test_a_database_error_of_a_command_is_one_line(env):
    """`backlog status` against a database without the application's tables: the database's own line."""
    proc = run_cli(["backlog", "status"], env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'relation "registrations" does not exist' in lines[0]
