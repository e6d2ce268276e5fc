"""The README's demo command: ends by itself, shows what fired and what was captured, leaves nothing running."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ops.devkit.servers import port_open
from tests.conftest import REPO


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            blob = Path(f"/proc/{pid}/environ").read_bytes() + Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in blob:
            found.append(pid + " " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
    return found


def test_demo_runs_for_a_duration_and_leaves_no_process_behind():
    # its own folder: pytest's numbered tmp dirs can be rotated away by another concurrent pytest run
    run_dir = Path(tempfile.mkdtemp(prefix="opsfleet-demo-test-")) / "demo"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "FLEET_DATABASE_URL", "OPSFLEET_CONFIG_DIR")}
    env["COLUMNS"] = "200"
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "worker.cli", "demo", "--duration", "35", "--scale", "3000", "--run-dir", str(run_dir)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out
    pg_port = re.search(r"postgres: embedded on 127\.0\.0\.1:(\d+)", out).group(1)
    redis_port = re.search(r"redis: embedded at redis://127\.0\.0\.1:(\d+)", out).group(1)

    # it says what fired and what was captured
    fired = re.search(r"alerts that fired: (\d+)", out)
    captured = re.search(r"messages captured: (\d+) emails, (\d+) Slack", out)
    assert fired and int(fired.group(1)) >= 1, out[-3000:]
    assert captured and int(captured.group(1)) + int(captured.group(2)) >= 1, out[-3000:]
    assert "confirmation_backlog" in out
    assert (run_dir / "captured.jsonl").read_text().strip()
    # no configured secret in any log line of the run nor in what the providers received
    password = re.search(r"password (\S+?);", out).group(1)
    for path in [*run_dir.glob("*.log"), run_dir / "captured.jsonl"]:
        text = path.read_text(errors="replace")
        for secret in ("re_demo_local_sink_key", password):
            assert secret not in text, f"{secret[:6]}... in {path.name}"

    # and it leaves nothing running: no server on its ports, no process that was given its database
    assert not port_open("127.0.0.1", int(pg_port))
    assert not port_open("127.0.0.1", int(redis_port))
    assert _processes_mentioning(f"127.0.0.1:{pg_port}") == []
    shutil.rmtree(run_dir.parent, ignore_errors=True)


def _status_page_answers(out: str) -> int:
    """The status page the demo printed answers with its password (and refuses without); its port."""
    import base64
    import json
    import time
    import urllib.error
    import urllib.request

    m = re.search(r"status page: http://127\.0\.0\.1:(\d+)/\s+\(user demo, password (\S+?);", out)
    assert m, out[-3000:]
    url = f"http://127.0.0.1:{m.group(1)}/api/status"
    auth = "Basic " + base64.b64encode(f"demo:{m.group(2)}".encode()).decode()
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": auth}),  # noqa: S310
                                        timeout=20) as resp:
                doc = json.loads(resp.read())
            break
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "the demo's status page does not answer"
            time.sleep(0.5)
    assert len(doc["checks"]) > 50 and "alerts" in doc
    try:
        urllib.request.urlopen(url, timeout=20)  # noqa: S310
        raise AssertionError("the status page answered without credentials")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    return int(m.group(1))


def test_ctrl_c_stops_the_demo_with_exit_130_and_its_messages_can_be_read_whole():
    import signal
    import time

    run_dir = Path(tempfile.mkdtemp(prefix="opsfleet-demo-test-")) / "demo"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "FLEET_DATABASE_URL", "OPSFLEET_CONFIG_DIR")}
    env["COLUMNS"] = "200"
    out_path = run_dir.parent / "out.txt"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "demo", "--scale", "3000", "--run-dir", str(run_dir)],  # noqa: S603
                                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not (run_dir / "captured.jsonl").is_file() or \
                    not (run_dir / "captured.jsonl").read_text().strip():
                assert proc.poll() is None, out_path.read_text()[-3000:]
                time.sleep(0.5)
            page = _status_page_answers(out_path.read_text())  # while the demo runs, its status page is up
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends to the foreground group
            assert proc.wait(120) == 130, out_path.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = out_path.read_text()
    assert not port_open("127.0.0.1", page)  # and down once it stopped
    assert "Traceback" not in text and "stopping..." in text and "opsfleet demo-show N" in text
    shown = subprocess.run([sys.executable, "-m", "worker.cli", "demo-show", "1", "--run-dir", str(run_dir)],  # noqa: S603
                           env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and re.match(r"(email|slack) 1 of \d+", shown.stdout), shown.stdout + shown.stderr
    shutil.rmtree(run_dir.parent, ignore_errors=True)


# starts its own servers or processes (no shared-server fixture says so): not the fast lane
pytestmark = pytest.mark.e2e
