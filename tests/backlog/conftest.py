"""Fixtures of the tests of worker/backlog/: the module's Resend fake (accepting KEY only), the
sample application's database with the backlog tables emptied, and backlog workers on each broker.
The backlog and the promise checked after a run: tests/support/backlog.py."""

from __future__ import annotations

import signal
import uuid

import pytest
import sqlalchemy as sa
from celery import Celery

from ops.devkit.process import CELERY, Proc
from ops.devkit.sink import ProviderSink
from tests.support.backlog import KEY
from worker.fleet.db import create


@pytest.fixture(scope="module")
def sink():
    with ProviderSink(resend_api_keys=[KEY]) as s:
        yield s


@pytest.fixture
def engine(app_db_url, sink):
    eng = create(app_db_url)
    with eng.begin() as conn:
        conn.execute(sa.text("TRUNCATE registrations, confirmation_emails RESTART IDENTITY CASCADE"))
        conn.execute(sa.text("DELETE FROM fleet.job_runs"))
    sink.reset()
    yield eng
    eng.dispose()


@pytest.fixture
def fleet(engine, app_db_url, broker, broker_env, redis_client, redis_url, sink, tmp_path):
    """Start workers on the backlog queue (in parallel) and a client with the result backend, on each broker."""
    wenv = {**broker_env, "DATABASE_URL": app_db_url, "RESEND_API_KEY": KEY, "RESEND_API_URL": sink.resend_api_url,
            "FROM_EMAIL": "confirm@example.com", "FROM_NAME": "Events"}
    procs: list[Proc] = []

    def start(n: int) -> list[Proc]:
        new = [Proc([*CELERY, "worker", "-Q", "backlog", "-c", "1", "-n", f"b{uuid.uuid4().hex[:6]}@%h",
                     "--without-mingle", "--without-gossip", "-l", "INFO"], wenv, tmp_path / f"w{len(procs) + i}.log")
               for i in range(n)]
        procs.extend(new)
        for p in new:
            assert p.wait_for("ready", 60), p.output()[-3000:]
        return new

    client = Celery(broker=broker, backend=redis_url)
    client.broker_name = "rabbitmq" if broker.startswith("amqp") else "redis"
    yield start, client
    for p in procs:
        p.kill(signal.SIGKILL)
    client.close()


@pytest.fixture(scope="module")
def two_targets(fresh_database, tmp_path_factory):
    """Targets a and b running the app pack's confirmations backlog on databases of their own, c running
    none of it (tests/support/targets_jobs.py)."""
    from tests.support.targets_jobs import make_targets

    return make_targets(fresh_database, tmp_path_factory.mktemp("targets") / "config")
