"""A process imports what it runs: a worker (worker.app and every task module, as `celery worker`
loads them) leaves the reports' drawing libraries (matplotlib, numpy, PIL: 40 MiB and 250 modules)
to the process that makes a report, and the providers' SDKs (resend, slack_sdk, pagerduty: a quarter
of a second) to the first channel built; `import worker.app` (every `celery -A worker call`, every
command that sends a task) loads neither, nor the config's models and the database clients; `opsfleet
--help` loads none of the fleet's libraries (Celery, SQLAlchemy, pydantic, structlog)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO

HEAVY = ("matplotlib", "numpy", "PIL")
SDKS = ("resend", "slack_sdk", "pagerduty")
DATABASE = ("sqlalchemy", "psycopg")
FLEET_LIBRARIES = ("celery", "kombu", "sqlalchemy", "pydantic", "structlog", "redis")
WORKER = "import importlib, worker.app\nfrom worker.fleet.names import TASK_MODULES\n" \
         "for m in TASK_MODULES: importlib.import_module(m)"


def _imported(code: str, env: dict[str, str], names: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of `names` (top-level packages) a fresh interpreter running `code` has imported."""
    probe = code + f"\nimport sys, json\nprint(json.dumps([m for m in {names!r} if m in sys.modules]))"
    proc = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True,  # noqa: S603
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_worker_imports_no_drawing_library_until_a_report_is_made(env):
    assert _imported(WORKER, env) == []
    assert _imported(WORKER + "\nfrom worker.reports import mail", env) == list(HEAVY)  # the probe sees them


def test_a_worker_imports_no_provider_sdk_until_a_channel_is_built(env):
    assert _imported(WORKER, env, SDKS) == []
    built = "\nfrom worker.channels.registry import CHANNELS\nfor kind in CHANNELS: CHANNELS[kind]"
    assert _imported(WORKER + built, env, SDKS) == list(SDKS)  # the probe sees them


def test_importing_the_app_loads_no_sdk_drawing_library_or_database_client(env):
    assert _imported("import worker.app", env, SDKS + HEAVY + DATABASE) == []
    assert _imported("import worker.app, worker.config", env, DATABASE) == list(DATABASE)  # the probe sees them


def test_opsfleet_help_imports_none_of_the_fleets_libraries(env):
    run = "import sys\nsys.argv = ['opsfleet', '--help']\nfrom worker.cli import main\n" \
          "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code"
    assert _imported(run, env, FLEET_LIBRARIES + SDKS + HEAVY) == []
    assert _imported(run + "\nimport worker.app", env, ("celery", "structlog")) == ["celery", "structlog"]
