"""Non-SQL checks: an HTTP health endpoint (seeds 002, 003) and a Redis INFO figure (seed 002)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import redis

from worker.config import Check, HttpProbe, RedisProbe


def _dig(doc, path: str):
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def probe_http(check: Check) -> float:
    """The value is the latency in ms when the endpoint is healthy, and -1 when it is not
    (wrong status, unreachable, or the JSON field differs from `expect`)."""
    from worker.checking import CheckError

    probe = check.probe
    assert isinstance(probe, HttpProbe)
    if not probe.url.startswith(("http://", "https://")):
        raise CheckError(f"check {check.name}: probe.url must be http(s)://")
    started = time.monotonic()
    req = urllib.request.Request(probe.url, method=probe.method, headers={"User-Agent": "opsfleet"})
    try:
        with urllib.request.urlopen(req, timeout=check.timeout.total_seconds()) as resp:  # noqa: S310
            status, body = resp.status, resp.read(1_000_000)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(1_000_000) if exc.fp else b""
    except (urllib.error.URLError, TimeoutError, OSError):
        return -1.0
    latency = (time.monotonic() - started) * 1000
    if status != probe.expect_status:
        return -1.0
    if probe.json_field:
        try:
            got = _dig(json.loads(body), probe.json_field)
        except ValueError:
            return -1.0
        if probe.expect is not None and got != probe.expect:
            return -1.0
    return round(latency, 2)


def probe_redis(check: Check, default_url: str | None) -> float | None:
    from worker.checking import CheckError

    probe = check.probe
    assert isinstance(probe, RedisProbe)
    url = probe.url or default_url
    try:
        info = redis.Redis.from_url(url, socket_timeout=check.timeout.total_seconds()).info()
    except (redis.RedisError, OSError) as exc:
        raise CheckError(f"check {check.name}: redis INFO failed: {exc}") from None
    if probe.metric == "keyspace_hit_ratio":
        hits, misses = info.get("keyspace_hits", 0), info.get("keyspace_misses", 0)
        return None if hits + misses == 0 else round(100.0 * hits / (hits + misses), 2)
    if probe.metric == "used_memory_ratio":
        maxmem = info.get("maxmemory", 0)
        return None if not maxmem else round(100.0 * info["used_memory"] / maxmem, 2)
    return float(info.get(probe.metric, 0))
