"""A process imports what it runs: a worker (worker.app and every task module, as `celery worker`
loads them) leaves the reports' drawing libraries (matplotlib, numpy, PIL: 40 MiB and 250 modules)
to the process that makes a report."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO

HEAVY = ("matplotlib", "numpy", "PIL")


def _imported(code: str, env: dict[str, str]) -> list[str]:
    probe = code + f"\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    proc = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True,  # noqa: S603
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_worker_imports_no_drawing_library_until_a_report_is_made(env):
    worker = "import importlib, worker.app\nfrom worker.fleet.names import TASK_MODULES\n" \
             "for m in TASK_MODULES: importlib.import_module(m)"
    assert _imported(worker, env) == []
    assert _imported(worker + "\nfrom worker.reports import mail", env) == list(HEAVY)  # the probe sees them
