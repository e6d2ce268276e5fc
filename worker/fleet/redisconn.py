"""Redis itself (not the broker): the rate-limit buckets, follow-up keys, RedBeat and the redis checks."""

from __future__ import annotations

import redis


def answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING at `url`."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def is_redis_url(url: str | None) -> bool:
    return bool(url) and url.startswith(("redis://", "rediss://", "redis+socket://", "unix://"))
