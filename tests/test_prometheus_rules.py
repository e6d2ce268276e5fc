"""The fleet's own Prometheus rules (ops/prometheus/opsfleet-rules.yml) under `promtool test rules`.

promtool comes with Debian's `prometheus` package (.ci/run installs it); without it these skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

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
def test_the_rules_pass_their_unit_tests():
    out = promtool("test", "rules", RULES / "opsfleet-rules.test.yml")
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_a_wrong_expectation_fails(tmp_path):
    """The harness notices a failing rule test: the weekly check 6 days after its run expected to alert."""
    shutil.copy(RULES / "opsfleet-rules.yml", tmp_path)
    text = (RULES / "opsfleet-rules.test.yml").read_text()
    wrong = text.replace("- exp_labels: {severity: warning, check: daily_late}",
                         "- exp_labels: {severity: warning, check: weekly_ok}", 1)
    assert wrong != text
    (tmp_path / "t.yml").write_text(wrong)
    out = promtool("test", "rules", tmp_path / "t.yml")
    assert out.returncode != 0 and "weekly_ok" in out.stdout + out.stderr


# starts its own servers or processes (no shared-server fixture says so): not the fast lane
pytestmark = pytest.mark.e2e
