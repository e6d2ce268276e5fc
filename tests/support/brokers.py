"""The brokers of the Celery-behaviour tests: the local RabbitMQ, and emptying the fleet's queues."""

from __future__ import annotations

RABBITMQ_LOCAL = "amqp://guest:guest@127.0.0.1:5672"
RABBITMQ_SKIP = ("RabbitMQ does not answer on 127.0.0.1:5672 (guest/guest): install rabbitmq-server (or set "
                 "OPSFLEET_TEST_RABBITMQ_URL) to run the Celery tests against it too")


def purge_fleet_queues(broker: str) -> None:
    """Empty the fleet's queues on `broker` (a test starts with nothing queued; a lost message is one
    purged before any worker took it)."""
    from kombu import Connection

    from worker.fleet.names import QUEUES

    with Connection(broker, connect_timeout=5) as conn:
        for name in QUEUES:
            channel = conn.channel()
            try:
                channel.queue_purge(name)
            except Exception:  # noqa: S110 - not declared yet: nothing to purge (the channel closes)
                pass
            finally:
                try:
                    channel.close()
                except Exception:  # noqa: S110
                    pass
