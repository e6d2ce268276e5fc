"""Fixtures of the tests of worker/fleet/ and the Celery fleet around it: RabbitMQ as the broker (its
URL, and `env` pointed at it), and a database with only the fleet schema (any Postgres, no seed
system's tables)."""

from __future__ import annotations

import pytest

from tests.support.brokers import RABBITMQ_SKIP
from worker.fleet.migrate import upgrade


@pytest.fixture
def amqp(rabbitmq_url):
    if rabbitmq_url is None:
        pytest.skip(RABBITMQ_SKIP)
    return rabbitmq_url


@pytest.fixture
def amqp_env(env, amqp, redis_url):
    return {**env, "CELERY_BROKER_URL": amqp, "REDIS_URL": redis_url, "CELERY_RESULT_BACKEND": redis_url}


@pytest.fixture(scope="module")
def bare_db(fresh_database):
    """Any Postgres: the fleet schema migrated, none of the seed systems' tables."""
    url = fresh_database()
    upgrade(url)
    return url
