"""Every usage error of the CLI is one line on stderr and exit 2, never a traceback (typer ships its own
copy of click, whose errors must be caught too), and a group without a command prints its help."""

from __future__ import annotations

import re

import pytest

from tests.support.cli import run_cli

USAGE = [
    (["checks", "run"], "checks run: Missing argument 'NAME'"),
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


HELP = [[], ["checks"], ["test"], ["checks", "run"], ["backlog", "reprocess"], ["silence", "add"], ["demo-show"]]


def _ragged(lines: list[str], width: int) -> list[str]:
    """Lines that end early although the next line continues them with a word that fits: hard line
    breaks of a docstring kept, where a paragraph should be wrapped to the width."""
    found = []
    boxed = [line for line in lines if line.startswith("│") and line.endswith("│")]
    text = [line for line in lines[:next((i for i, ln in enumerate(lines) if ln.startswith("╭")), len(lines))]
            if line.strip() and not line.strip().startswith("Usage:")]
    for a, b, room in [(x[1:-1], y[1:-1], None) for x, y in zip(boxed, boxed[1:], strict=False)] + \
                      [(x, y, width - 1) for x, y in zip(text, text[1:], strict=False)]:
        follow = b.strip()
        continues = bool(follow) and b[:3].strip() == "" and not follow.startswith(("[", "*", "-"))
        free = (room if room is not None else len(a)) - len(a.rstrip())
        if continues and a.strip() and free > len(follow.split()[0]) + 1:
            found.append(f"{a.rstrip()!r} / {follow!r}")
    return found


@pytest.mark.parametrize("args", HELP, ids=[" ".join(a) or "opsfleet" for a in HELP])
def test_help_reads_well_at_80_columns(env, args):
    """No Python type labels (`<bool>`, `<list[str]>`), nothing past 80 columns, and paragraphs wrapped
    to the width, not broken where the docstring's lines were."""
    proc = run_cli([*args, "--help"], {**env, "COLUMNS": "80"})
    assert proc.returncode == 0 and "Usage: opsfleet" in proc.stdout, proc.stderr
    lines = proc.stdout.splitlines()
    assert not re.findall(r"<(?:bool|str|int|float|path|list\[[^>]*\])>", proc.stdout), proc.stdout
    assert max(len(line) for line in lines) <= 80, proc.stdout
    assert _ragged(lines, 80) == [], proc.stdout
    assert "{" not in lines[1] and "......" not in proc.stdout, lines[1]  # `NAME`, `[FILES...]` in the usage
