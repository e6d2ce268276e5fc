"""README and config stay true to the code."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO
from worker.fleet.settings import DOCS


def test_readme_documents_every_environment_variable():
    readme = (REPO / "README.md").read_text()
    for name in DOCS:
        assert f"| `{name}` |" in readme, name


def test_readme_first_screen_has_the_two_commands_and_ci_runs_the_test_one():
    first_screen = "\n".join((REPO / "README.md").read_text().splitlines()[:20])
    assert 'make demo ARGS="--duration 60"' in first_screen
    assert "make test" in first_screen
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_config_readme_documents_every_check_job_and_routing_field():
    from worker.checks.spec import Check
    from worker.maintenance.spec import MaintenanceJob
    from worker.notify.inhibit import InhibitRule
    from worker.notify.routing import ChannelSpec, Route, Routing
    from worker.notify.timeintervals import NamedInterval, TimeInterval, TimeRange

    text = (REPO / "config" / "README.md").read_text()
    for model in (Check, MaintenanceJob):
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert f"`{key}`" in text, f"{model.__name__}.{key} is not in config/README.md"
    routing = text[text.index("## routing.yaml"):text.index("## maintenance.yaml")]
    for model in (ChannelSpec, Route, Routing, InhibitRule, NamedInterval, TimeInterval, TimeRange):
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert f"{key}:" in routing or f"`{key}`" in routing, f"{model.__name__}.{key} is not in config/README.md"


_PATH = re.compile(r"`((?:worker|tasks|ops|config|bench|tests|docs)/[A-Za-z0-9_./-]*)`")


@pytest.mark.parametrize("doc", ["README.md", "docs/DESIGN.md", "config/README.md"])
def test_every_path_a_document_names_exists(doc):
    text = (REPO / doc).read_text()
    missing = sorted({p for p in _PATH.findall(text) if not (REPO / p.rstrip(".")).exists()})
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def test_the_designs_layout_tree_is_the_tree():
    """Each folder and file the layout block of docs/DESIGN.md draws under worker/ exists."""
    text = (REPO / "docs" / "DESIGN.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    drawn = []
    for line in block.splitlines():
        m = re.match(r"^  (\w+/)\s", line)
        if m:
            drawn.append("worker/" + m.group(1))
        m = re.match(r"^(\w+/|[\w.-]+\.(?:py|toml|yml))\s", line)
        if m:
            drawn.append(m.group(1))
    assert len(drawn) > 10
    assert [p for p in drawn if not (REPO / p).exists()] == []
