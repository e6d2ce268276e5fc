"""README and config stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import REPO
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
    """Each folder the layout block of docs/DESIGN.md draws, and each file at its top, exists."""
    text = (REPO / "docs" / "DESIGN.md").read_text()
    drawn = list(_layout_segments(text))
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    drawn += [m.group(1) for line in block.splitlines() if (m := re.match(r"^([\w.-]+\.(?:py|toml|yml))\s", line))]
    assert len(drawn) > 20
    assert [p for p in drawn if not (REPO / p).exists()] == []


def _layout_segments(design: str) -> dict[str, str]:
    """docs/DESIGN.md's layout drawing, as folder -> the text drawn for it: a line whose first word
    ends in `/` opens a folder under the folder of the line above it that is less indented; every
    other line (a file of the folder, a description, its continuation) belongs to the folder open at
    a smaller indentation."""
    block = design.split("## Layout", 1)[1].split("```", 2)[1]
    segments: dict[str, list[str]] = {}
    stack: list[tuple[int, str]] = []  # (indentation, folder path)
    for line in block.splitlines():
        m = re.match(r"^( *)(\S+)", line)
        if not m:
            continue
        indent, word = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if word.endswith("/") and indent < 24:  # a folder (descriptions start at column 24)
            path = (stack[-1][1] if stack else "") + word
            stack.append((indent, path))
            segments.setdefault(path, []).append(line[len(m.group(0)):])
        elif stack:
            segments.setdefault(stack[-1][1], []).append(line)
    return {k: "\n".join(v) for k, v in segments.items()}


def test_the_design_draws_every_module():
    segments = _layout_segments((REPO / "docs" / "DESIGN.md").read_text())
    missing = []
    for top in ("worker", "tasks", "ops"):
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO)
            if "migrations" in rel.parts or "__pycache__" in rel.parts:
                continue
            if path.name == "__init__.py" and rel != Path("worker/__init__.py"):
                continue  # a package's face: drawn as its folder
            folder = str(rel.parent) + "/"
            if not re.search(rf"\b{re.escape(path.stem)}\b", segments.get(folder, "")):
                missing.append(str(rel))
    assert not missing, ("docs/DESIGN.md's layout does not draw " + ", ".join(missing)
                         + ": add each under its folder, with what it is for")


def test_readmes_state_row_names_every_fleet_table():
    """README's 'What runs' table lists the fleet's tables: every table a migration creates."""
    created = set()
    for migration in (REPO / "worker" / "fleet" / "migrations").rglob("*.py"):
        created |= set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?fleet\.(\w+)", migration.read_text()))
    row = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| state |"))
    assert created and created <= set(re.findall(r"\w+", row)), sorted(created - set(re.findall(r"\w+", row)))
