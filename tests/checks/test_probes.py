"""The http and redis probes (worker/checks/collect.py) against a loopback HTTP server and a real,
throwaway redis-server: status codes, JSON fields, timeouts, latency, and the INFO figures.

The shipped probe checks are disabled until given a real URL; here they run with the URL pointed at
the loopback server, so what they say about a failing endpoint is what they will say in production.
"""

from __future__ import annotations

import time

import pytest
import redis

from ops.devkit.servers import free_port
from tests.support import REPO
from worker.checks.collect import CheckError, collect
from worker.checks.spec import Check
from worker.config import load_config

CONFIG = load_config(REPO / "config")


def http_check(url: str, **probe) -> Check:
    return Check.model_validate({
        "name": "probe_test", "description": "test", "schedule": "1m", "kind": "http", "condition": "< 0",
        "severity": "critical", "summary": "down", "timeout": probe.pop("timeout", "2s"), "probe": {"url": url, **probe}})


def value(check: Check) -> float | None:
    [sample] = collect(check, None, None)
    return sample.value


def pointed_at(name: str, url: str) -> Check:
    """A shipped probe check with its URL (path kept) on the loopback server."""
    check = CONFIG.checks[name]
    path = "/" + check.probe.url.split("//", 1)[1].split("/", 1)[1]
    return check.model_copy(update={"probe": check.probe.model_copy(update={"url": url + path})})


# -- http ------------------------------------------------------------------------------------------
def test_a_healthy_endpoint_reads_its_latency_in_ms(endpoint):
    endpoint.answer(200, {"status": "ok"}, delay=0.2)
    v = value(http_check(endpoint.url + "/api/health"))
    assert 200 <= v < 2000, v
    method, path, headers = endpoint.requests[-1]
    assert (method, path, headers["User-Agent"]) == ("GET", "/api/health", "opsfleet")


@pytest.mark.parametrize("status", [500, 503, 404, 301])
def test_a_status_other_than_the_expected_one_reads_minus_one(endpoint, status):
    endpoint.answer(status, {"status": "ok"})
    assert value(http_check(endpoint.url)) == -1.0


def test_expect_status_may_be_another_code(endpoint):
    endpoint.answer(204, b"")
    assert value(http_check(endpoint.url, expect_status=204)) >= 0
    assert value(http_check(endpoint.url)) == -1.0


def test_head_sends_a_head_request(endpoint):
    endpoint.answer(200, b"")
    assert value(http_check(endpoint.url, method="HEAD")) >= 0
    assert endpoint.requests[-1][0] == "HEAD"


def test_a_json_field_must_hold_the_expected_value(endpoint):
    check = http_check(endpoint.url, json_field="services.whatsapp.status", expect="connected")
    endpoint.answer(200, {"services": {"whatsapp": {"status": "connected"}}})
    assert value(check) >= 0
    endpoint.answer(200, {"services": {"whatsapp": {"status": "disconnected"}}})
    assert value(check) == -1.0
    endpoint.answer(200, {"services": {}})  # the field is missing
    assert value(check) == -1.0
    endpoint.answer(200, b"<html>maintenance</html>")  # not JSON
    assert value(check) == -1.0
    endpoint.answer(200, {"services": {"whatsapp": {"status": "connected"}}, "db": {"ok": True}})
    assert value(http_check(endpoint.url, json_field="db.ok", expect=True)) >= 0


def test_a_slow_endpoint_times_out_at_the_checks_timeout(endpoint):
    endpoint.answer(200, {"status": "ok"}, delay=3)
    started = time.monotonic()
    assert value(http_check(endpoint.url, timeout="1s")) == -1.0
    assert time.monotonic() - started < 2.5  # the check's 1 s, not the endpoint's 3 s
    endpoint.answer(200, {"status": "ok"})


def test_nothing_listening_reads_minus_one():
    started = time.monotonic()
    assert value(http_check(f"http://127.0.0.1:{free_port()}/api/health")) == -1.0
    assert time.monotonic() - started < 2


def test_a_url_that_is_not_http_is_an_error_that_names_the_check():
    with pytest.raises(CheckError, match=r"check probe_test: probe.url must be http\(s\)://"):
        value(http_check("file:///etc/passwd"))


def test_the_shipped_whatsapp_probe_fires_when_whatsapp_is_disconnected(endpoint):
    check = pointed_at("whatsapp_connection_down", endpoint.url)
    endpoint.answer(200, {"status": "ok", "services": {"whatsapp": {"status": "connected"}}})
    assert not check.condition.holds(value(check))
    endpoint.answer(200, {"status": "degraded", "services": {"whatsapp": {"status": "disconnected"}}})
    assert check.condition.holds(value(check))
    assert endpoint.requests[-1][1] == "/api/health"


@pytest.mark.parametrize("name", sorted(n for n, c in CONFIG.checks.items() if c.kind == "http" and not c.probe.json_field))
def test_each_shipped_health_probe_fires_on_a_5xx_and_is_quiet_on_200(endpoint, name):
    check = pointed_at(name, endpoint.url)
    endpoint.answer(200, {"status": "healthy"})
    assert not check.condition.holds(value(check))
    endpoint.answer(503, {"status": "unhealthy"})
    assert check.condition.holds(value(check))


# -- redis -----------------------------------------------------------------------------------------
def redis_check(url: str | None, metric: str) -> Check:
    return Check.model_validate({
        "name": "redis_test", "description": "test", "schedule": "1m", "kind": "redis", "condition": "< 90",
        "severity": "warning", "summary": "s", "timeout": "2s", "probe": {"url": url, "metric": metric}})


def redis_value(check: Check, default_url: str | None = None) -> float | None:
    [sample] = collect(check, None, None, redis_url=default_url)
    return sample.value


def test_keyspace_hit_ratio_is_hits_over_lookups_and_no_data_before_any(r, redis_server):
    check = redis_check(redis_server.url, "keyspace_hit_ratio")
    assert redis_value(check) is None  # no lookups yet: no data, not 0%
    r.set("k", "v")
    for _ in range(3):
        r.get("k")
    r.get("missing")
    assert redis_value(check) == 75.0
    shipped = CONFIG.checks["redis_cache_hit_ratio_low"]
    shipped = shipped.model_copy(update={"probe": shipped.probe.model_copy(update={"url": redis_server.url})})
    assert shipped.condition.holds(redis_value(shipped))  # 75% < 90%: the shipped check fires
    for _ in range(36):
        r.get("k")
    assert redis_value(shipped) == 97.5 and not shipped.condition.holds(97.5)


def test_used_memory_ratio_needs_a_maxmemory(r, redis_server):
    check = redis_check(redis_server.url, "used_memory_ratio")
    assert redis_value(check) is None  # no maxmemory: no ratio to speak of
    r.config_set("maxmemory", 64 * 1024 * 1024)
    got = redis_value(check)
    used = r.info("memory")["used_memory"]  # moves by a client buffer or two between readings
    assert got == pytest.approx(100.0 * used / (64 * 1024 * 1024), rel=0.1)
    r.config_set("maxmemory", 32 * 1024 * 1024)
    assert redis_value(check) == pytest.approx(2 * got, rel=0.1)  # used / maxmemory: half the room, twice the share


def test_connected_clients_counts_the_open_connections(r, redis_server):
    check = redis_check(redis_server.url, "connected_clients")
    base = redis_value(check)
    extra = [redis.Redis.from_url(redis_server.url) for _ in range(5)]
    for c in extra:
        c.ping()
    assert redis_value(check) == base + 5
    for c in extra:
        c.close()


def test_evicted_keys_counts_evictions(r, redis_server):
    check = redis_check(redis_server.url, "evicted_keys")
    assert redis_value(check) == 0
    used = r.info("memory")["used_memory"]
    r.config_set("maxmemory", used + 512 * 1024)
    r.config_set("maxmemory-policy", "allkeys-lru")
    payload = "x" * 10_000
    for i in range(200):
        r.set(f"k{i}", payload)
    assert redis_value(check) > 0


def test_rejected_connections_counts_refusals_over_maxclients(r, redis_server):
    check = redis_check(redis_server.url, "rejected_connections")
    assert redis_value(check) == 0
    r.config_set("maxclients", 3)
    held = []
    try:
        for _ in range(5):
            c = redis.Redis.from_url(redis_server.url)
            try:
                c.ping()
                held.append(c)
            except redis.ConnectionError:
                pass
        r.config_set("maxclients", 10000)
        assert redis_value(check) >= 1
    finally:
        for c in held:
            c.close()


def test_the_probe_asks_redis_url_when_it_names_no_url(r, redis_server):
    r.set("k", "v")
    r.get("k")
    assert redis_value(redis_check(None, "keyspace_hit_ratio"), default_url=redis_server.url) == 100.0
    with pytest.raises(CheckError, match="no Redis to ask"):
        redis_value(redis_check(None, "keyspace_hit_ratio"))


def test_a_dead_redis_is_a_one_line_error_naming_the_check():
    with pytest.raises(CheckError) as exc:
        redis_value(redis_check(f"redis://127.0.0.1:{free_port()}/0", "connected_clients"))
    assert str(exc.value).startswith("check redis_test: redis INFO failed:") and "\n" not in str(exc.value)


# starts its own servers or processes (no shared-server fixture says so): not the fast lane
pytestmark = pytest.mark.e2e
