"""A beat outlives its Redis (found by bench/soak.py: RedBeat let the error through and beat exited).
Redis restarted empty under a running beat: the beat keeps running, takes the lock again, writes the
schedule Redis lost, and sends its due tasks again; Redis down for a while: it waits and goes on."""

from __future__ import annotations

import time

import pytest

from ops.devkit.process import start_beat, wait_until
from ops.devkit.sink import ProviderSink
from tests.support.restarts import fleet_env

CHECK = """\
checks:
  - name: tick
    description: a check every 2 s
    schedule: 2s
    query: SELECT 1 AS value
    condition: "> 5"
    severity: warning
    summary: never fires
"""


def sends(beat) -> int:
    return beat.output().count("Sending due task check:tick")


@pytest.mark.slow  # a beat and a Redis restarted twice: about 25 s
def test_a_beat_outlives_a_redis_restart_and_a_redis_outage_and_schedules_again(servers, fleet_db, tmp_path):
    redis_server = servers.redis("redis")
    with ProviderSink() as sink:
        env = fleet_env(tmp_path, database_url=fleet_db, fleet_url=fleet_db, redis_url=redis_server.url, sink=sink)
    (tmp_path / "config" / "checks" / "none.yaml").write_text(CHECK)
    beat = start_beat(env, tmp_path, "beat")
    try:
        assert wait_until(lambda: sends(beat) >= 2, 30), beat.output()[-3000:]
        redis_server.restart()  # empty: the lock, the schedule and the queues are gone
        before = sends(beat)
        assert wait_until(lambda: sends(beat) >= before + 2, 30), beat.output()[-3000:]
        assert beat.p.poll() is None
        out = beat.output()
        assert "beat_lock_lost" in out or "beat_redis_unavailable" in out
        assert "beat_schedule_rewritten" in out
        redis_server.restart(down=5)  # down for 5 s this time
        before = sends(beat)
        assert wait_until(lambda: sends(beat) >= before + 2, 40), beat.output()[-3000:]
        assert beat.p.poll() is None and "Traceback" not in beat.output()
    finally:
        beat.kill()
        time.sleep(0.2)


pytestmark = [pytest.mark.reliability, pytest.mark.e2e]
