"""A beat restarted during a slot (issue 14, section 1): beat sends a slot's checks.run, is stopped while
a worker evaluates it (a deploy's restart: SIGTERM, RedBeat releases its lock), and a new beat takes
over at once from the schedule RedBeat keeps in Redis. Every slot is evaluated once: the restarted
beat does not send the slot again, and no slot is skipped except one that fell while no beat ran.
(A beat SIGKILLed instead leaves its lock to run out first: tests/reliability/test_promise_beat_takeover.py.)"""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from ops.devkit.process import start_beat, start_worker, wait_until
from tests.support.brokers import purge_fleet_queues
from tests.support.slowproxy import SlowProxy
from worker.fleet.db import fleet_now

STEP = timedelta(seconds=10)
CHECK = """\
checks:
  - name: gauge_fast
    description: a check every 10 s
    schedule: 10s
    query: SELECT v AS value, pg_sleep(2) AS evaluating FROM gauge
    condition: "> 1000"
    severity: warning
    summary: "gauge at {{ value }}"
"""
SENT = "Sending due task check:gauge_fast"


@pytest.fixture
def broker(redis_url):  # the beat's schedule and lock live in Redis; the broker plays no part here
    purge_fleet_queues(redis_url)
    return redis_url


def events(output: str) -> list[dict]:
    out = []
    for line in output.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                out.append(event)
    return out


def slots(engine) -> list:
    with engine.connect() as conn:
        return [r.slot for r in conn.execute(sa.text(
            "SELECT slot FROM fleet.check_runs WHERE check_name = 'gauge_fast' AND status <> 'skipped' ORDER BY slot"))]


@pytest.mark.slow  # about 55 s: five 10 s slots and two beats' starts
def test_a_beat_restarted_mid_slot_evaluates_every_slot_once_and_skips_none_it_ran_for(setup, tmp_path):
    engine, sink, env, client = setup
    (Path(env["OPSFLEET_CONFIG_DIR"]) / "checks" / "test.yaml").write_text(CHECK)
    env = {**env, "OPSFLEET_PACKS": ""}
    worker = start_worker(env, tmp_path, queues="checks", concurrency=2)
    beats = [start_beat(env, tmp_path, "first")]
    try:
        assert wait_until(lambda: beats[0].output().count(SENT) >= 2, 60), beats[0].output()[-3000:]
        assert wait_until(lambda: len(slots(engine)) >= 1, 20), worker.output()[-3000:]
        sends = beats[0].output().count(SENT)
        assert wait_until(lambda: beats[0].output().count(SENT) > sends, 20, every=0.05)
        beats[0].stop()  # just after sending: the worker is evaluating that slot (pg_sleep 2)
        stopped = fleet_now(engine)
        beats[0].p.wait(20)
        beats.append(start_beat(env, tmp_path, "second"))
        assert beats[1].wait_for("beat: Acquired lock", 30), beats[1].output()[-3000:]
        resumed = fleet_now(engine)
        assert wait_until(lambda: beats[1].output().count(SENT) >= 2, 60), beats[1].output()[-3000:]
        assert wait_until(lambda: len([s for s in slots(engine) if s > resumed]) >= 1, 30)
    finally:
        for beat in beats:
            beat.stop()
        worker.stop()
    got = slots(engine)  # one row per slot by construction (store.claim): a resent slot is a skipped run
    resent = [e for e in events(worker.output()) if e.get("event") == "check_evaluated" and e.get("status") == "skipped"]
    assert not resent, f"a beat sent a slot again: {resent}"
    evaluated = [e for e in events(worker.output()) if e.get("event") == "check_evaluated"]
    assert len(evaluated) == len(got), (evaluated, got)
    expected, s = [], got[0]
    while s <= got[-1]:
        if not stopped < s <= resumed:  # a slot that began while no beat ran may be skipped
            expected.append(s)
        s += STEP
    missing = [s for s in expected if s not in got]
    assert not missing, f"slots skipped while a beat ran: {missing} (got {got}; no beat from {stopped} to {resumed})"



@pytest.mark.slow  # about 30 s: three 10 s slots and a beat's start
def test_a_beat_stopped_while_it_sends_a_slot_sends_it_before_it_exits(setup, tmp_path):
    """RedBeat marks an entry run in Redis, then publishes it. The beat's Redis answers slowly here
    (each reply held 1.5 s) and SIGTERM lands just after "Sending due task", while the beat waits for
    Redis to confirm the mark: the slot must still be published (the signal waits for the tick), else
    the next beat reads it as sent and nobody evaluates it."""
    engine, sink, env, client = setup
    (Path(env["OPSFLEET_CONFIG_DIR"]) / "checks" / "test.yaml").write_text(CHECK)
    redis_url = sa.engine.make_url(env["REDIS_URL"].replace("redis://", "postgresql://", 1))
    proxy = SlowProxy(redis_url.port or 6379).start()
    beat_env = {**env, "REDIS_URL": env["REDIS_URL"].replace(f":{redis_url.port}/", f":{proxy.port}/", 1)}
    assert beat_env["REDIS_URL"] != env["REDIS_URL"]
    worker = start_worker(env, tmp_path, queues="checks", concurrency=2)
    beat = start_beat(beat_env, tmp_path, "slow-redis")
    try:
        assert wait_until(lambda: len(slots(engine)) >= 1, 60), beat.output()[-3000:]
        sends = beat.output().count(SENT)
        proxy.delay = 1.5
        assert wait_until(lambda: beat.output().count(SENT) > sends, 30, every=0.02), beat.output()[-3000:]
        beat.stop()  # SIGTERM while RedBeat waits for its mark's reply
        beat.p.wait(30)
        sent = beat.output().count(SENT)  # each a slot of its own (10 s apart)
        assert wait_until(lambda: len(slots(engine)) >= sent, 15), (
            f"{sent} slots sent, {len(slots(engine))} evaluated: the one being sent when SIGTERM came was "
            f"never published ({beat.output()[-1500:]})")
    finally:
        beat.stop()
        worker.stop()
        proxy.stop()


pytestmark = pytest.mark.reliability
