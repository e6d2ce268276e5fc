"""The opsfleet CLI as a user runs it: a subprocess in the repository's root."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True, text=True, timeout=timeout,
        cwd=REPO, **kw,
    )
