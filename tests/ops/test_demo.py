"""The README's demo command: ends by itself, shows what fired and what was captured, leaves nothing running."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ops.devkit.demo import DEMO_CONFIG, maintenance_variable, url_variable
from ops.devkit.servers import port_open
from ops.sample_app import SYSTEMS
from tests.support import REPO

# What each seed system's database has planted that its checks see within the demo's first minute
# (ops/sample_app/seed/): the target's own problems. WedSync's are Postgres health, its pack's checks
# being probes that stay disabled until given a URL.
PLANTED = {
    "confirmations": {"confirmation_backlog", "high_confirmation_error_rate", "webhook_error_rate_high",
                      "slow_confirmation_processing"},
    "ace_engage": {"error_rate_threshold", "performance_degradation", "sms_delivery_failures", "sms_failed_per_hour"},
    "wedsync": {"db_sequences_near_max", "db_dead_tuples_high"},
    "whatsapp": {"whatsapp_delivery_rate_low", "whatsapp_error_rate_high", "whatsapp_session_stale"},
    "ticketing": {"double_booking_attempts", "expired_reservations_not_released", "payment_failure_rate_high",
                  "reservation_cleanup_job_failed"},
}


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


def _demo_packs(monkeypatch) -> dict[str, str | None]:
    """Each check of the demo's config folder -> its pack (its targets' URLs need only be set to load it)."""
    from worker.config import load_config

    for system in SYSTEMS:
        monkeypatch.setenv(url_variable(system), f"postgresql://demo@127.0.0.1:1/{system}")
        monkeypatch.setenv(maintenance_variable(system), f"postgresql://demo@127.0.0.1:1/{system}")
    return dict(load_config(DEMO_CONFIG).check_pack)


def test_demo_runs_for_a_duration_and_leaves_no_process_behind(monkeypatch):
    # its own folder: pytest's numbered tmp dirs can be rotated away by another concurrent pytest run
    run_dir = Path(tempfile.mkdtemp(prefix="opsfleet-demo-test-")) / "demo"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "FLEET_DATABASE_URL", "OPSFLEET_CONFIG_DIR")}
    env["COLUMNS"] = "200"
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "worker.cli", "demo", "--duration", "45", "--scale", "3000", "--run-dir", str(run_dir)],
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
    assert (run_dir / "captured.jsonl").read_text().strip()
    _checks_ran_under_the_monitoring_role_and_the_fleet_is_healthy(out)
    _a_remediated_alert_says_what_it_said_when_it_fired_and_what_ran(out)
    _alert_messages_are_listed_apart_from_customer_emails(out, run_dir)
    _each_target_fired_its_own_problems_and_no_other_systems(json.loads((run_dir / "fired.json").read_text()), out,
                                                             _demo_packs(monkeypatch))
    # no configured secret in any log line of the run nor in what the providers received
    password = re.search(r"password (\S+?);", out).group(1)
    for path in [*run_dir.glob("*.log"), run_dir / "captured.jsonl"]:
        text = path.read_text(errors="replace")
        for secret in ("re_demo_local_sink_key", password):
            assert secret not in text, f"{secret[:6]}... in {path.name}"

    # the monitoring role's password went to the server hashed: pg_stat_statements (which the checks'
    # pg_monitor reads) keeps no clear one
    stat = run_dir / "postgres" / "pgdata" / "pg_stat" / "pg_stat_statements.stat"
    assert not re.search(rb"PASSWORD '(?!SCRAM-SHA-256\$|md5)", stat.read_bytes() if stat.exists() else b"")

    # and it leaves nothing running: no server on its ports, no process that was given its database
    assert not port_open("127.0.0.1", int(pg_port))
    assert not port_open("127.0.0.1", int(redis_port))
    assert _processes_mentioning(f"127.0.0.1:{pg_port}") == []
    shutil.rmtree(run_dir.parent, ignore_errors=True)


def _checks_ran_under_the_monitoring_role_and_the_fleet_is_healthy(out: str) -> None:
    """The README's least-privilege role runs every check (the workers' check connections to the five
    databases log in as it, none ends in error), so `opsfleet health` is green: no superuser warning."""
    checks = re.search(r"checks: (\d+) runs, (\d+) errors; their connections log in as (.+)", out)
    assert checks and int(checks.group(1)) > 50 and checks.group(2) == "0", out[-3000:]
    assert re.fullmatch(r"opsfleet_demo_monitor \(on \d target databases\)", checks.group(3).strip()), checks.group(0)
    health = re.search(r"fleet health: (.+)", out)
    assert health and health.group(1).strip() == "healthy", health.group(0) if health else out[-3000:]


def _a_remediated_alert_says_what_it_said_when_it_fired_and_what_ran(out: str) -> None:
    """confirmation_backlog says the backlog it fired with (not the 0 its remediation left), and that it
    resolved after reprocess_confirmations ran (the demo runs the check again once its remediation ends)."""
    summary = out[out.index("alerts that fired:"):]
    row = next((line for line in summary.splitlines() if "│ confirmation_backlog " in line), "")
    fired = re.search(r"│ (\d+) registrations awaiting confirmation", row)
    assert fired and int(fired.group(1)) > 20, row or out[-3000:]  # its condition: > 20
    ran = re.search(r"│ resolved after remediation reprocess_confirmations \((\d+) rows\)", row)
    assert ran and int(ran.group(1)) > 0, row


def _alert_messages_are_listed_apart_from_customer_emails(out: str, run_dir: Path) -> None:
    """The customers' confirmation emails (their tag category=confirmation) are one line, not rows of
    the table of alert messages; their numbers are those `opsfleet demo-show N` takes."""
    from ops.devkit.demo_show import captured, is_customer_email

    records = captured(run_dir)
    customers = [n for n, r in enumerate(records, 1) if is_customer_email(r)]
    assert customers and len(customers) < len(records)
    table = out[out.rindex("alert messages:"):out.rindex("customer emails:")]
    listed = {int(n) for n in re.findall(r"^│ (\d+) +│", table, re.M)}
    assert listed == set(range(1, len(records) + 1)) - set(customers), table
    assert "Your registration is confirmed" not in table
    assert re.search(rf"customer emails: {len(customers)} confirmation emails .* messages [\d, -]+ of ", out)


def _each_target_fired_its_own_problems_and_no_other_systems(fired: list[dict], out: str, pack_of: dict) -> None:
    """Five targets, each with an alert of its own planted problem firing with `target=<name>`, and
    none of another system's alerts on it (a check of another system's pack, or another system's
    planted problem); the summary and the captured messages name the targets."""
    assert {a["target"] for a in fired if a["target"]} == set(SYSTEMS), fired
    for a in fired:
        assert a["labels"].get("target", "") == a["target"], a  # the label is the target the state is kept for
    for system in SYSTEMS:
        mine = [a for a in fired if a["labels"].get("target") == system]
        assert {a["check"] for a in mine if a["state"] == "firing"} & PLANTED[system], (system, mine)
        others = set().union(*(PLANTED[s] for s in SYSTEMS if s != system))
        assert not {a["check"] for a in mine} & others, (system, mine)
        assert {pack_of[a["check"]] for a in mine} <= {"postgres", system}, (system, mine)
    assert re.search(r"alerts that fired: \d+ on 5 targets", out), out[-3000:]
    assert re.search(r"│ \d+ +│ (email|slack) +│ (confirmations|ace_engage|wedsync|whatsapp|ticketing)", out), out[-3000:]


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
