"""What people read carries no internal reference (a seed's section path, the design notes, a config
file): summaries, message bodies and the CLI's help. The YAML descriptions keep them, for the people
who maintain the rules."""

from __future__ import annotations

import re

import pytest

from tests.support import REPO
from tests.support.cli import run_cli
from worker.checks.templates import public_text, render
from worker.config import load_config

INTERNAL = re.compile(r"\bseeds?\b|DESIGN\.md|config/|\.ya?ml\b", re.IGNORECASE)
CFG = load_config(REPO / "config", packs="all")


@pytest.mark.parametrize("name", sorted(CFG.checks))
def test_a_checks_summary_and_message_body_name_no_internals(name):
    check = CFG.checks[name]
    summary = render(check.summary, value=42.0, labels={"k": "v"}, check=name)
    body = render(check.details, value=42.0, labels={}, check=name) if check.details else public_text(check.description)
    assert not INTERNAL.search(summary), summary
    assert not INTERNAL.search(body), body


def test_the_citation_of_a_description_is_left_out_of_the_message():
    text = ('seed 004, Alert Configuration / Critical Alerts / 1. Database Constraint Violation (a: b): a failed '
            'reservation in the last 5 minutes (Key Metrics: "should never happen"). See config/x.yaml for more.')
    assert public_text(text) == ('A failed reservation in the last 5 minutes (Key Metrics: "should never happen").')


@pytest.mark.parametrize("args", [[], ["checks"], ["backlog"], ["notify"], ["silence"], ["maintenance"], ["report"], ["alerts", "history"],
                                  ["checks", "run"], ["notify", "test"], ["backlog", "reprocess"], ["health"]])
def test_the_clis_help_names_no_internals(env, args):
    out = run_cli([*args, "--help"], env)
    assert out.returncode == 0, out.stderr
    assert not re.search(r"\bseeds? \d{3}|\bseed\b", out.stdout, re.IGNORECASE), out.stdout
