"""A worker outlives its Redis restarting: a guard on kombu's Redis transport (found by bench/soak.py,
kombu 5.7.0, the newest release).

What kombu does: the consumer's connection dies while its channel waits in BRPOP and holds delivered,
unacked messages (a task running, a pool slot free). Celery collects the connection: closing the
channel fails on the dead socket (a connection error, ignored: the channel stays open), and the
transport is dropped (its `client` set to None). Celery then closes the connection again; the channel
now restores its unacked messages, builds a new Redis pool from the dropped transport's client and
raises AttributeError ('NoneType' object has no attribute 'hostname'). `ignore_errors` lets only
connection errors through, so the worker exits: "Unrecoverable error".

The guard: a channel whose transport was dropped raises the transport's own ConnectionError instead,
which Celery ignores, and the worker reconnects. Nothing is lost by it: the messages stay in Redis's
unacked hash and come back after the visibility timeout (or are gone with a Redis that restarted
empty, which notify.sweep and a job's next run cover). Re-check on a kombu upgrade:
tests/reliability/test_broker_guard.py reproduces the crash with the guard off."""

from __future__ import annotations

from typing import Any

_APPLIED = "_opsfleet_guarded"


def guard_redis_transport() -> bool:
    """Install the guard once (a no-op without kombu's Redis transport); True when it is in place."""
    try:
        import redis
        from kombu.transport import redis as kombu_redis
    except ImportError:
        return False
    channel = kombu_redis.Channel
    if getattr(channel._connparams, _APPLIED, False):
        return True
    original = channel._connparams

    def _connparams(self: Any, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection was closed (its transport is gone)")
        return original(self, asynchronous=asynchronous)

    setattr(_connparams, _APPLIED, True)
    channel._connparams = _connparams
    return True
