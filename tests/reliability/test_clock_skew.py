"""A worker whose clock is wrong (issue 14, section 1): one 30 s ahead, and one whose clock jumps an
hour mid-run, under libfaketime (Debian's `faketime`), beside a worker with the right time.

Tasks take `now` from the fleet database (worker.fleet.db.fleet_now), not from their host, so:
- a worker 30 s ahead evaluates the slot that has begun, never the next one (which a worker with
  the right time would then find taken);
- a worker whose clock jumps ahead does not send a Slack retry before the provider's Retry-After,
  after a 429 (the rate-limit buckets keep the Redis server's time) or a 503 (the outbox row's next
  attempt is the database's time): not from its sweep, nor from the follow-up task its jumped
  timers fire early (the task finds the row not yet due and asks again at the right time);
- one message reaches Slack either way.

The broker plays no part in a clock: these run on Redis only.

Skipped with one line where libfaketime is not installed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from ops.devkit.process import start_worker, wait_until
from ops.devkit.sink import Reply
from tests.support.brokers import purge_fleet_queues
from worker.fleet.db import fleet_now
from worker.fleet.timeutil import Schedule

LIBFAKETIME = next((p for p in (Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
                                Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
                                Path("/usr/lib/faketime/libfaketime.so.1")) if p.exists()), None)
RETRY_AFTER = 20  # seconds, in Slack's 429 or 503
FAST_CHECK = """\
  - name: gauge_fast
    description: a check on a 10 s schedule (a clock 30 s ahead is three slots ahead)
    schedule: 10s
    query: SELECT v AS value FROM gauge
    condition: "> 1000"
    severity: warning
    summary: "gauge at {{ value }}"
"""

pytestmark = [pytest.mark.reliability,
              pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime is not installed: apt-get install faketime")]


@pytest.fixture
def broker(redis_url):
    purge_fleet_queues(redis_url)
    return redis_url


def skewed(env: dict[str, str], **faketime: str) -> dict[str, str]:
    """`env` for a process whose clock libfaketime shifts (FAKETIME="+30s", or a FAKETIME_TIMESTAMP_FILE
    the test rewrites to make the clock jump). Monotonic time shifts with it: sleeps misbehave under
    libfaketime 0.9.10 otherwise."""
    return {**env, "LD_PRELOAD": str(LIBFAKETIME), **faketime}


def runs(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT slot, started_at FROM fleet.check_runs WHERE check_name = 'gauge_fast' "
                                    "ORDER BY id")).all()


def test_a_worker_30s_ahead_evaluates_the_slot_that_has_begun(setup, tmp_path):
    engine, sink, env, client = setup
    cfg = Path(env["OPSFLEET_CONFIG_DIR"]) / "checks" / "test.yaml"
    cfg.write_text(cfg.read_text() + FAST_CHECK)
    ahead = start_worker(skewed(env, FAKETIME="+30s"), tmp_path, queues="checks", name="ahead")
    try:
        sent_at = fleet_now(engine)
        client.send_task("checks.run", kwargs={"name": "gauge_fast"}, queue="checks")
        assert wait_until(lambda: runs(engine), 30), ahead.output()[-3000:]
        done_at = fleet_now(engine)
    finally:
        ahead.stop()
    (slot, started_at), = runs(engine)
    schedule = Schedule.parse("10s")
    assert schedule.slot(sent_at) <= slot <= schedule.slot(done_at), (slot, sent_at, done_at)
    assert sent_at <= started_at <= done_at  # the database's time, not the worker's 30 s ahead


@pytest.mark.parametrize(("status", "sweeps"), [(429, True), (503, False)])
def test_a_worker_whose_clock_jumps_an_hour_sends_the_slack_retry_after_retry_after_once(setup, tmp_path,
                                                                                        status, sweeps):
    """With sweeps, beat's sweeper runs every second and must not send early; without, the follow-up
    task alone (fired early by the jumped timers) must wait for the right time and then send."""
    engine, sink, env, client = setup
    sink.script("slack.webhook", [Reply(status, headers={"Retry-After": str(RETRY_AFTER)})])
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    worker = start_worker(skewed(env, FAKETIME_TIMESTAMP_FILE=str(offset), FAKETIME_CACHE_DURATION="1"),
                          tmp_path, queues="checks,notify", name="jumpy")
    try:
        client.send_task("checks.run", kwargs={"name": "gauge_high"}, queue="checks")
        assert wait_until(lambda: sink.requests_for("slack.webhook"), 60), worker.output()[-3000:]
        refused = sink.requests_for("slack.webhook")[0]
        assert refused.status == status
        offset.write_text("+1h\n")  # the host's clock jumps an hour ahead (an NTP step, a VM resumed)
        time.sleep(1.5)  # libfaketime rereads the file each second

        def sent() -> bool:
            if sweeps:
                client.send_task("notify.sweep", queue="notify")  # what beat does every sweep_interval
            return any(r.status == 200 for r in sink.requests_for("slack.webhook"))

        assert wait_until(sent, RETRY_AFTER + 30, every=1.0), worker.output()[-3000:]
        time.sleep(2)  # a second send, if any, would come now
    finally:
        worker.stop()
    tries = sink.requests_for("slack.webhook")
    assert [r.status for r in tries] == [status, 200], [(r.status, r.at) for r in tries]
    assert tries[1].at - refused.at >= RETRY_AFTER - 0.5, f"retried {tries[1].at - refused.at:.1f} s after a {status} " \
                                                          f"asking for {RETRY_AFTER} s"
    assert len(sink.slack_messages) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM fleet.notifications WHERE channel = 'slack'")).scalar() == "sent"
