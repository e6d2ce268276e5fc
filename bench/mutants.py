"""Mutation probe: each hand-made mutant breaks one promise of the README in a copy of the repository;
the tests that prove that promise must fail. Prints per mutant "caught by <test>" or "SURVIVED"; exit 1
if any survives.

    .venv/bin/python bench/mutants.py            # every mutant
    .venv/bin/python bench/mutants.py -k beat    # the mutants whose name contains "beat"

Each mutant runs its test files against the copy (`pytest -x -n 3` when pytest-xdist is there), in
turn; the copy shares this checkout's .venv and the test servers (tests/conftest.py).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = REPO / ".venv" / "bin" / "python"
R = "tests/reliability/"


@dataclass
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: list[str]
    regex: bool = False


MUTANTS = [
    # the five of issue 14, section 0
    Mutant("visibility timeout deleted", "worker/app.py",
           '    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},\n', "",
           [R + "test_promise_redelivery.py", "tests/fleet/test_celery_fleet.py::test_every_task_is_routed_to_its_family_queue"]),
    Mutant("redbeat_lock_timeout 50", "worker/app.py", "redbeat_lock_timeout=30,", "redbeat_lock_timeout=50,",
           [R + "test_promise_beat_takeover.py"]),
    Mutant("MAX_ATTEMPTS 10**6", "worker/notify/delivery.py", "MAX_ATTEMPTS = 8\n", "MAX_ATTEMPTS = 10**6\n",
           [R + "test_promise_dead_letters.py"]),
    Mutant("concurrent_idempotent_requests branch disabled", "worker/channels/email.py",
           'if name == "concurrent_idempotent_requests":', "if False:", [R + "test_promise_dead_letters.py"]),
    Mutant("remediate a no-op", "tasks/checks.py",
           "        app.send_task(check.remediate.task, kwargs=dict(check.remediate.kwargs))\n", "        pass\n",
           [R + "test_promise_remediation.py"]),
    Mutant("maintenance PROGRESS a no-op", "tasks/maintenance.py",
           '        self.update_state(state="PROGRESS", meta={"job": job, "rows": rows, "batches": batches})\n',
           "        pass\n", [R + "test_promise_remediation.py"]),
    Mutant("backlog PROGRESS a no-op", "tasks/backlog.py",
           '        self.update_state(state="PROGRESS", meta={"job": job, **p.as_meta()})\n', "        pass\n",
           [R + "test_promise_remediation.py"]),
    # ours
    Mutant("429 counted as an attempt", "worker/notify/outbox.py", "CASE WHEN :throttled THEN 1 ELSE 0 END",
           "CASE WHEN :throttled THEN 0 ELSE 0 END", [R + "test_promise_dead_letters.py"]),
    Mutant("log masking off", "worker/fleet/logs.py", "def mask_text(text: str) -> str:\n",
           "def mask_text(text: str) -> str:\n    return text\n", [R + "test_promise_secret_masking.py"]),
    Mutant("no Redis buckets unless the broker is Redis", "tasks/notify.py",
           "    return redisconn.client(get_settings().redis())\n",
           '    s = get_settings()\n    return redisconn.client(s.redis()) if s.broker_url().startswith("redis") else None\n',
           [R + "test_promise_rabbitmq_rate_limit.py"]),
    Mutant("resend fake: concurrent mode ignored", "ops/devkit/sink/resend.py",
           "if self.resend_concurrent_mode and first is not None", "if False and first is not None",
           [R + "test_promise_dead_letters.py"]),
    Mutant("a stale worker's failure recorded without its lease", "worker/notify/outbox.py",
           "HOLDS_LEASE = \"id = :id AND status = 'sending' AND lease_until = :lease\"",
           "HOLDS_LEASE = \"id = :id AND CAST(:lease AS timestamptz) IS NOT NULL\"",
           [R + "test_partition.py", R + "test_lease_lost.py"]),
    Mutant("kombu broker guard off", "worker/app.py", "\nguard_redis_transport()  #", "\npass  #",
           [R + "test_broker_guard.py"]),
    Mutant("job liveness at three gaps", "config/fleet/checks.yaml",
           "< :now - GREATEST(2 * make_interval(secs => s.longest_gap_s)",
           "< :now - GREATEST(3 * make_interval(secs => s.longest_gap_s)",
           ["tests/checks/test_rule_tests.py::test_rule_tests_pass[fleet/maintenance_job_health]"]),
    Mutant("follow-up chain takes only foldable rows", "worker/notify/outbox.py",
           "WHERE id = (SELECT id FROM fleet.notifications WHERE channel = :ch AND {WAITING}",
           "WHERE id = (SELECT id FROM fleet.notifications WHERE channel = :ch AND {FOLDABLE}",
           ["tests/notify/test_notify_followup.py"]),
    # the house round two (issue 19): the stages that moved
    Mutant("holds not asked at send time", "worker/notify/delivery.py",
           "        hold = holds.of_notice(conn, row, routing, now)\n", "        hold = None\n",
           ["tests/notify/test_notify.py::test_silenced_notification_is_recorded_as_suppressed"]),
    Mutant("a folded row's holds not asked", "worker/notify/delivery.py",
           "                hold = holds.of_notice(conn, r, routing, now)\n", "                hold = None\n",
           ["tests/notify/test_notify.py::test_a_silenced_row_waiting_in_a_group_is_suppressed_not_folded_into_the_summary"]),
    Mutant("Slack ignores the alert's first message", "worker/channels/slack.py",
           'if previous and previous.get("ts")', 'if False and previous.get("ts")',
           ["tests/notify/test_notify.py::test_slack_web_api_threads_repeats_and_updates_the_original_when_resolved"]),
    Mutant("a summary's retry folds anew", "worker/notify/delivery.py",
           "        folded = outbox.bound(conn, row, now)\n", "        folded = []\n",
           [R + "test_folded_resend.py"]),
    Mutant("the chain skips a summary refused with 429", "worker/notify/outbox.py",
           'AND (lease_until IS NULL OR lease_until < :now) AND folded_into IS NULL"""',
           'AND (lease_until IS NULL OR lease_until < :now) AND folded_into IS NULL\n'
           '              AND NOT EXISTS (SELECT 1 FROM fleet.notifications b WHERE b.folded_into = notifications.id\n'
           '                              AND b.status IN (\'sending\', \'retrying\'))"""',
           ["tests/notify/test_notify_followup.py::"
            "test_a_summary_refused_with_429_is_taken_by_the_chain_with_its_rows_not_left_to_the_sweeper"]),
    # targets (issue 20)
    Mutant("one check's instances shared across targets", "worker/checks/store.py",
           "WHERE check_name = :c AND (target = :t OR (:t = 'default' AND target = ''))",
           "WHERE check_name = :c AND (true OR target = :t OR (:t = 'default' AND target = ''))",
           ["tests/targets/test_targets.py::test_three_targets_keep_their_state_apart_and_one_down_holds_back_only_its_own"]),
    Mutant("the default target part of the fingerprint", "worker/checks/state.py",
           'if not (k == "target" and v == "default")', 'if True',
           ["tests/targets/test_targets.py::test_a_declared_target_named_default_adopts_the_state_of_a_fleet_of_one_database"]),
    Mutant("no cap on check connections across targets", "worker/fleet/db.py",
           "    while len(order) > cap:\n", "    while False:\n",
           ["tests/targets/test_targets.py::test_a_worker_keeps_at_most_the_cap_of_check_connections_across_targets"]),
    Mutant("database_down holds back every target", "config/routing.yaml",
           "    target_matchers: ['database=\"monitored\"']\n    equal: [target]\n",
           "    target_matchers: ['database=\"monitored\"']\n",
           ["tests/targets/test_targets.py::test_three_targets_keep_their_state_apart_and_one_down_holds_back_only_its_own"]),
]


def copy_repo(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".opsfleet-demo",
                                    "*.egg-info")
    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)


def apply(root: Path, m: Mutant) -> None:
    f = root / m.path
    text = f.read_text()
    if (m.regex and not re.search(m.old, text)) or (not m.regex and m.old not in text):
        raise SystemExit(f"mutant {m.name!r}: its text is no longer in {m.path}; update bench/mutants.py")
    f.write_text(re.sub(m.old, m.new, text, count=1) if m.regex else text.replace(m.old, m.new, 1))


def run_tests(root: Path, tests: list[str]) -> tuple[list[str], float]:
    """Run the tests against the copy; return the failed test ids."""
    xdist = subprocess.run([str(PY), "-c", "import xdist"], capture_output=True).returncode == 0  # noqa: S603
    args = [str(PY), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *tests]
    if xdist and len(tests) > 1:
        args += ["-n", str(min(3, len(tests)))]
    started = time.monotonic()
    proc = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=600)  # noqa: S603
    # only a failed test kills a mutant: an unknown test id (exit 4), a collection error (exit 2) or
    # no test run (exit 5) is the probe's own fault, never a kill
    if proc.returncode not in (0, 1) or re.search(r"^ERROR ", proc.stdout, re.M):
        tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
        raise SystemExit(f"mutation probe: pytest could not run {' '.join(tests)} (exit {proc.returncode}): {tail}")
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, re.M)
    return failed, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", default="", help="only the mutants whose name contains this")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.k.lower() in m.name.lower()]
    survived = 0
    with tempfile.TemporaryDirectory(prefix="opsfleet-mutants-") as tmp:
        base = Path(tmp) / "base"
        copy_repo(base)
        for m in chosen:
            root = Path(tmp) / "m"
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(base, root, symlinks=True)
            apply(root, m)
            failed, took = run_tests(root, m.tests)
            if failed:
                print(f"{m.name}: caught by {', '.join(failed)} ({took:.0f} s)", flush=True)
            else:
                survived += 1
                print(f"{m.name}: SURVIVED ({', '.join(m.tests)} all pass, {took:.0f} s)", flush=True)
    print(f"{len(chosen) - survived} of {len(chosen)} mutants caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
