"""What beat sends at many targets (worker/checks/spec.py beat_entries, tasks/checks.py run_batch): the
checks of one target that share a schedule go as one checks.run_batch, each still claiming its own
(check, target, slot); and beat gives every run the instant it sent it, so a run a busy (here: absent)
worker starts late evaluates the slot it was sent for, not the one it starts in."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa
import yaml
from celery import Celery

from ops.devkit.process import start_beat, start_worker, wait_until
from tests.support import REPO
from tests.support.brokers import purge_fleet_queues

ROUTING = yaml.safe_dump({  # one email channel for the critical alerts, the inhibit rules the repository ships
    "channels": {"email": {"kind": "email"}},
    "routes": [{"match": {"severity": "critical"}, "channels": ["email"], "group_wait": "0s"}],
    "inhibit_rules": yaml.safe_load((REPO / "config" / "routing.yaml").read_text())["inhibit_rules"],
})
CHECKS = {"checks": [
    {"name": "database_up", "description": "the database answers", "schedule": "5s", "query": "SELECT 1 AS value",
     "condition": "< 1", "severity": "critical", "summary": "never fires"},
    {"name": "jobs_backlog", "description": "jobs waiting", "schedule": "5s",
     "query": "SELECT count(*) AS value FROM jobs WHERE NOT done", "condition": "> 2", "severity": "critical",
     "summary": "{{ value | int }} jobs waiting"}]}


def two_targets(env: dict, tmp_path, checks: dict, jobs_database, sink) -> dict:
    """A config folder with a pack `app` of `checks` on targets a (5 jobs waiting) and b (none), and the
    environment that points a worker or a beat at it."""
    cfg_dir = tmp_path / "config"
    (cfg_dir / "app").mkdir(parents=True)
    (cfg_dir / "packs.yaml").write_text("enabled: []\n")
    (cfg_dir / "app" / "pack.yaml").write_text("description: a test app\n")
    (cfg_dir / "app" / "checks.yaml").write_text(yaml.safe_dump(checks))
    (cfg_dir / "routing.yaml").write_text(ROUTING)
    (cfg_dir / "targets.yaml").write_text(
        "targets:\n" + "".join(f"  - name: {n}\n    url: ${{{n.upper()}_URL}}\n    packs: [app]\n" for n in "ab"))
    return {**env, "OPSFLEET_CONFIG_DIR": str(cfg_dir), "OPSFLEET_PACKS": "", "OPSFLEET_PACKS_DIR": str(cfg_dir),
            "A_URL": jobs_database(5), "B_URL": jobs_database(0), "RESEND_API_KEY": "re_test_key_0123456789",
            "RESEND_API_URL": sink.resend_api_url, "ALERT_EMAIL_RECIPIENTS": "ops@example.com"}


def runs(fleet, where: str = "TRUE") -> list:
    with fleet.connect() as conn:
        return conn.execute(sa.text(f"SELECT check_name, target, slot, status, task_id FROM fleet.check_runs "  # noqa: S608
                                    f"WHERE {where} ORDER BY slot, check_name")).all()


@pytest.mark.slow  # about 40 s: a beat alone for 17 s, then a worker
def test_runs_beat_sent_while_no_worker_ran_each_evaluate_their_own_slot_once(env, fleet, jobs_database, sink,
                                                                               redis_url, tmp_path):
    env = two_targets(env, tmp_path, CHECKS, jobs_database, sink)
    purge_fleet_queues(redis_url)
    beat = start_beat(env, tmp_path, "batchbeat")
    try:
        assert beat.wait_for("Sending due task checks[5s]@a", 30), beat.output()[-3000:]
        time.sleep(12)  # two or three more slots sent, nobody to run them
    finally:
        beat.stop()
        beat.p.wait(20)
    sent = beat.output().count("Sending due task checks[5s]@a")
    assert sent >= 3 and beat.output().count("Sending due task checks[5s]@b") >= 3
    assert "Sending due task check:" not in beat.output()  # one batch per target, not a run per check
    client = Celery(broker=redis_url)
    bad = [client.send_task("checks.run_batch", kwargs=kwargs, queue="checks").id for kwargs in (
        {"names": ["jobs_backlog", "no_such_check"], "target": "a"},  # one unknown name: none evaluated
        {"names": ["jobs_backlog"]},                                  # on two targets: which?
        {"names": "jobs_backlog", "target": "a"},                     # not a list
        {"names": ["jobs_backlog"], "target": "zz"})]                 # no such target
    worker = start_worker(env, tmp_path, queues="checks,notify", name="batches")
    try:
        assert wait_until(lambda: len(runs(fleet, "target = 'a' AND status <> 'skipped'")) >= 2 * sent, 60), \
            (sent, runs(fleet), [x[:400] for x in worker.output().splitlines() if "error" in x or "reject" in x][:6])
        assert wait_until(lambda: len(runs(fleet, "target = 'b' AND status <> 'skipped'")) >= 2 * sent, 60)
        assert wait_until(lambda: worker.output().count('"event": "task_failed"') >= 4, 20), worker.output()[-3000:]
        out = worker.output()  # before the stop (a stop's warm shutdown has its own lines)
    finally:
        worker.stop()
    a = runs(fleet, "target = 'a'")
    assert not [r for r in a if r.status == "skipped"], a  # each queued run had its own slot
    for check in ("database_up", "jobs_backlog"):
        slots = [r.slot for r in a if r.check_name == check]
        assert len(slots) == len(set(slots)) == sent, (check, slots)  # every slot sent: evaluated once
        assert all((b - s).total_seconds() == 5 for s, b in zip(slots, slots[1:], strict=False)), slots
    assert not runs(fleet, f"task_id IN ({', '.join(repr(i) for i in bad)})")  # a rejected batch wrote nothing
    assert "no check 'no_such_check'" in out or "'no_such_check'" in out
    assert "runs on 2 targets (a, b)" in out and "names must be a non-empty list" in out and "'zz'" in out
    assert "checks.run_batch:2 checks@a" in out  # what Flower and the log call a batch
    assert "Traceback" not in out, out[-3000:]
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{") and "check_evaluated" in line]
    assert {e.get("target") for e in events} == {"a", "b"}


@pytest.mark.slow  # about 15 s: a worker
def test_a_remediation_runs_on_the_target_whose_check_fired(env, fleet, jobs_database, sink, redis_url, tmp_path):
    """jobs_backlog fires on `a` (5 waiting) and not on `b`: its remediation is sent with target a,
    the backlog task then runs on a's database (it refuses a call without a target where several
    targets have the backlog)."""
    checks = {"checks": [{**CHECKS["checks"][1], "remediate": {"task": "maintenance.run", "kwargs": {"job": "x"}}}]}
    env = two_targets(env, tmp_path, checks, jobs_database, sink)
    purge_fleet_queues(redis_url)
    client = Celery(broker=redis_url)
    for t in "ab":
        client.send_task("checks.run", kwargs={"name": "jobs_backlog", "target": t}, queue="checks")
    worker = start_worker(env, tmp_path, queues="checks", name="remediate")  # not maintenance: it stays queued
    try:
        assert wait_until(lambda: len(runs(fleet, "status = 'ok'")) == 2, 60), worker.output()[-3000:]
    finally:
        worker.stop()
    import redis

    queued = [json.loads(m) for m in redis.Redis.from_url(redis_url).lrange("maintenance", 0, -1)]
    sent = [json.loads(__import__("base64").b64decode(m["body"]))[1] for m in queued]
    assert sent == [{"job": "x", "target": "a"}], sent
