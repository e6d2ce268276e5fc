"""Processes of the fleet, started and stopped whole (their process group): real Celery workers and
beats for the demo and the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CELERY = [sys.executable, "-m", "celery", "-A", "worker"]


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "w")  # noqa: SIM115
        self.p = subprocess.Popen(args, env=env, cwd=REPO, stdout=self._fh, stderr=subprocess.STDOUT,  # noqa: S603
                                  start_new_session=True)

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, needle: str, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output():
                return True
            if self.p.poll() is not None:
                return needle in self.output()
            time.sleep(0.1)
        return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.p.pid, sig)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        # children of a prefork pool that outlived their parent
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.p.pid, signal.SIGKILL)
        self._fh.close()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


def start_worker(env: dict[str, str], tmp: Path, queues: str = "checks,notify,maintenance,backlog,digest",
                 concurrency: int = 1, name: str | None = None, pool: str | None = None) -> Proc:
    """A worker of worker.app; `pool`: Celery's -P (threads, solo ...), default the app's (prefork)."""
    name = name or f"w{uuid.uuid4().hex[:6]}"
    proc = Proc([*CELERY, "worker", "-Q", queues, "-c", str(concurrency), "-n", f"{name}@%h", "--without-mingle",
                 "--without-gossip", "-l", "INFO", *(["-P", pool] if pool else [])], env, tmp / f"{name}.log")
    if not proc.wait_for("ready", 60):
        out = proc.output()
        proc.kill()
        raise RuntimeError(f"worker did not start:\n{out[-3000:]}")
    return proc


def start_beat(env: dict[str, str], tmp: Path, name: str) -> Proc:
    return Proc([*CELERY, "beat", "-l", "DEBUG", "-s", str(tmp / f"{name}-schedule")], env, tmp / f"{name}.log")


def start_app_worker(app: str, env: dict[str, str], tmp: Path, queues: str, concurrency: int = 1,
                     name: str | None = None) -> Proc:
    """A worker of another Celery app module (`celery -A app`), e.g. a test's app built on worker.app."""
    name = name or f"w{uuid.uuid4().hex[:6]}"
    proc = Proc([sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues, "-c", str(concurrency),
                 "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "-l", "INFO"], env, tmp / f"{name}.log")
    if not proc.wait_for("ready", 60):
        out = proc.output()
        proc.kill()
        raise RuntimeError(f"worker did not start:\n{out[-3000:]}")
    return proc


def wait_until(fn, timeout: float = 60.0, every: float = 0.1) -> bool:
    """Poll `fn` until it is true (a condition, not a sleep standing in for one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(every)
    return bool(fn())
