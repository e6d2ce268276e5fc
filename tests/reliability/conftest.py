"""Fixtures of tests/reliability/ (faults, fuzzing, the README's promises): `servers`, throwaway
Postgres and Redis servers of a test's own, which it restarts (test_restarts.py,
test_restarts_workers.py, test_beat_redis_restart.py); their helpers are tests/support/restarts.py's.
The notify fixtures these tests share with tests/notify/ (`db`, `setup`) are tests/support/notify.py's.
The worker tests whose broker plays no part (a clock, a beat, a folded resend) run on Redis only,
through a `broker` of their module: here it would take RabbitMQ from every test of the folder."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ops.devkit.servers import PostgresServer, RedisServer
from tests.support.restarts import prepare
from worker.fleet.db import normalize_url


@pytest.fixture
def servers(run_dir):
    """Throwaway servers of this test's own: `postgres(name, fleet=, app=)` (the fleet schema migrated,
    the sample application's tables made) and `redis(name)`; all stopped at the end. Their folders are
    under the session's run_dir, not tmp_path: a Postgres run as another user than root loses a folder
    under /tmp/pytest-of-root whenever another pytest starts (pytest sets it back to 0700)."""
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(dir=run_dir))
    started: list = []

    def postgres(name: str, *, fleet: bool = False, app: bool = False) -> PostgresServer:
        server = PostgresServer(tmp_path / name).start()
        started.append(server)
        prepare(normalize_url(server.url), fleet=fleet, app=app)
        return server

    def redis(name: str) -> RedisServer:
        server = RedisServer(tmp_path / name).start()
        started.append(server)
        return server

    yield SimpleNamespace(postgres=postgres, redis=redis)
    for server in reversed(started):
        server.stop()
