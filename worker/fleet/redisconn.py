"""Redis itself (not the broker): the rate-limit buckets, follow-up keys, RedBeat and the redis checks."""

from __future__ import annotations

import redis

REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+socket://")


def is_redis_url(url: str | None) -> bool:
    return bool(url) and url.startswith(REDIS_SCHEMES)


def client_url(url: str) -> str:
    """The URL redis-py takes (kombu's redis+socket:///path is redis-py's unix:///path)."""
    return "unix://" + url[len("redis+socket://"):] if url.startswith("redis+socket://") else url


def client(url: str, **options) -> redis.Redis:
    return redis.Redis.from_url(client_url(url), **options)


def answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING at `url`."""
    try:
        return bool(client(url, socket_connect_timeout=timeout).ping())
    except (redis.RedisError, OSError, ValueError):
        return False
