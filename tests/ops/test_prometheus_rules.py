"""The fleet's own Prometheus rules (ops/prometheus/opsfleet-rules.yml) under `promtool test rules`.

promtool comes with Debian's `prometheus` package (.ci/run installs it); without it these skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO

RULES = REPO / "ops" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt install prometheus)")


def promtool(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60)  # noqa: S603


@needs_promtool
def test_the_rules_are_valid():
    out = promtool("check", "rules", RULES / "opsfleet-rules.yml")
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_the_scrape_config_with_metrics_auth_is_valid():
    """ops/prometheus/prometheus.yml, the README's scrape config for OPSFLEET_METRICS_AUTH, as Prometheus reads it."""
    out = promtool("check", "config", RULES / "prometheus.yml")
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


@needs_promtool
def test_the_rules_pass_their_unit_tests():
    out = promtool("test", "rules", RULES / "opsfleet-rules.test.yml")
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_a_wrong_expectation_fails(tmp_path):
    """The harness notices a failing rule test: the weekly check 6 days after its run expected to alert."""
    shutil.copy(RULES / "opsfleet-rules.yml", tmp_path)
    text = (RULES / "opsfleet-rules.test.yml").read_text()
    wrong = text.replace("- exp_labels: {severity: warning, check: daily_late, target: default}",
                         "- exp_labels: {severity: warning, check: weekly_ok, target: default}", 1)
    assert wrong != text
    (tmp_path / "t.yml").write_text(wrong)
    out = promtool("test", "rules", tmp_path / "t.yml")
    assert out.returncode != 0 and "weekly_ok" in out.stdout + out.stderr


@needs_promtool
@pytest.mark.parametrize(("keeps", "drops"), [
    ("> on(check, target) (1.5", "> on(check) (1.5"),
    ("sum by (check, target) (opsfleet_check_runs", "sum by (check) (opsfleet_check_runs"),
    ("and on(job, target)", "and on(job)"),
])
def test_a_rule_that_drops_target_fails_the_two_target_tests(tmp_path, keeps, drops):
    """Per-check and per-job series carry `target` (worker/watch/metrics.py): a rule that joins or
    aggregates them without it mixes one target's runs with another's, and the unit tests say so."""
    rules = (RULES / "opsfleet-rules.yml").read_text()
    assert rules.count(keeps) == 1
    (tmp_path / "opsfleet-rules.yml").write_text(rules.replace(keeps, drops))
    shutil.copy(RULES / "opsfleet-rules.test.yml", tmp_path)
    out = promtool("test", "rules", tmp_path / "opsfleet-rules.test.yml")
    said = out.stdout + out.stderr  # the two-target test fails, or the join meets two series a side and errs
    assert out.returncode != 0 and ("name: two targets" in said or "many-to-many" in said), said


# starts its own servers or processes (no shared-server fixture says so): not the fast lane
pytestmark = pytest.mark.e2e
