"""README and config stay true to the code."""

from __future__ import annotations

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


def test_config_readme_documents_every_check_and_job_field():
    from worker.checks.spec import Check
    from worker.maintenance.spec import MaintenanceJob

    text = (REPO / "config" / "README.md").read_text()
    for model in (Check, MaintenanceJob):
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert f"`{key}`" in text, f"{model.__name__}.{key} is not in config/README.md"
