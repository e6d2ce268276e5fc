"""`opsfleet health` and `opsfleet serve`: every dependency probed on its own (one failing never hides
the next), exit 0 when nothing fails and 1 when something does; each target reported (answers or
not, its last check run's age), a target down a line of its own but not the fleet's failure; /health
in seed 003's shape over a real HTTP connection, 503 when something is down."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from ops.devkit.process import start_beat, start_worker
from ops.devkit.servers import RedisServer, free_port
from ops.devkit.sink import ProviderSink
from tests.support.cli import run_cli
from tests.support.targets_web import UNREACHABLE, evaluate, jobs_database, write_config
from worker.fleet.names import QUEUES


@pytest.fixture
def sink():
    with ProviderSink(resend_api_keys=["re_full_key_0123456789", "re_send_only_0123456789"],
                      restricted_keys=["re_send_only_0123456789"], slack_tokens=["xoxb-test-token"]) as s:
        yield s


@pytest.fixture
def henv(env, app_db_url, sink):
    """A fleet whose channels are all configured, against the sink."""
    return {**env, "DATABASE_URL": app_db_url, "RESEND_API_KEY": "re_full_key_0123456789",
            "RESEND_API_URL": sink.resend_api_url, "ALERT_EMAIL_RECIPIENTS": "ops@example.com",
            "FROM_EMAIL": "alerts@example.com", "ALERT_SLACK_WEBHOOK_URL": sink.slack_webhook_url}


def health(env: dict[str, str], *args: str) -> tuple[int, dict]:
    proc = run_cli(["health", "--json", "--timeout", "2", *args], env, timeout=90)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def states(doc: dict) -> dict[str, str]:
    return {p["name"]: p["state"] for p in doc["probes"]}


def test_every_dependency_is_probed_and_a_stopped_redis_is_red_and_named(henv, tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    env = {**henv, "REDIS_URL": server.url}
    server.stop()
    rc, doc = health(env)
    got = states(doc)
    assert rc == 1 and doc["status"] == "unhealthy"
    assert got["redis"] == "fail" and "cannot reach Redis" in next(p["detail"] for p in doc["probes"]
                                                                   if p["name"] == "redis")
    # the probes after it still ran
    assert got["database"] == "ok" and got["fleet database"] == "ok" and got["broker"] == "ok"
    assert got["beat"] == "fail" and got["channel email"] == "ok" and "outbox" in got
    assert {f"queue {q}" for q in QUEUES} <= set(got)


def test_a_queue_without_its_worker_is_red_and_named_and_a_running_beat_is_green(henv, tmp_path, redis_client):
    redis_client.delete("opsfleet:beat:tick", "opsfleet:redbeat::lock")
    others = ",".join(q for q in QUEUES if q != "checks")
    worker = start_worker(henv, tmp_path, queues=others, name="nochecks")
    beat = start_beat(henv, tmp_path, "beat")
    try:
        assert beat.wait_for("beat: Acquired lock", 60), beat.output()[-2000:]
        deadline = time.monotonic() + 30  # its first tick, recorded for `opsfleet health`
        while redis_client.get("opsfleet:beat:tick") is None and time.monotonic() < deadline:
            time.sleep(0.2)
        rc, doc = health(henv)
    finally:
        beat.kill()
        worker.stop()
    got = {p["name"]: p for p in doc["probes"]}
    assert rc == 1
    assert got["queue checks"]["state"] == "fail" and "no worker consumes the checks queue" in got["queue checks"]["detail"]
    for q in QUEUES:
        if q != "checks":
            assert got[f"queue {q}"]["state"] == "ok" and got[f"queue {q}"]["data"]["workers"][0].startswith("nochecks@")
    assert got["beat"]["state"] == "ok" and got["beat"]["data"]["lock_held"], got["beat"]


def test_a_missing_resend_key_makes_the_email_channel_red_and_named(henv):
    env = {k: v for k, v in henv.items() if k != "RESEND_API_KEY"}
    rc, doc = health(env)
    email = next(p for p in doc["probes"] if p["name"] == "channel email")
    assert rc == 1 and email["state"] == "fail" and "RESEND_API_KEY" in email["detail"]
    assert next(p for p in doc["probes"] if p["name"] == "channel slack")["state"] == "ok"


def test_probe_makes_each_providers_harmless_call(henv, sink):
    env = {**henv, "SLACK_BOT_TOKEN": "xoxb-test-token", "SLACK_CHANNEL": "#alerts", "SLACK_API_URL": sink.slack_api_url}
    _, doc = health(env, "--probe")
    got = {p["name"]: p for p in doc["probes"]}
    assert got["channel email"]["state"] == "ok" and "Resend accepts the API key" in got["channel email"]["detail"]
    assert got["channel slack"]["state"] == "ok" and "auth.test ok" in got["channel slack"]["detail"]
    assert [r.route for r in sink.requests] == ["resend.domains", "slack.auth.test"]
    assert sink.emails == [] and sink.slack_messages == []  # nothing was sent
    _, doc = health({**env, "RESEND_API_KEY": "re_send_only_0123456789"}, "--probe")
    assert "sending only" in next(p["detail"] for p in doc["probes"] if p["name"] == "channel email")
    _, doc = health({**env, "RESEND_API_KEY": "re_wrong_key_0123456789", "SLACK_BOT_TOKEN": "xoxb-wrong"}, "--probe")
    got = {p["name"]: p for p in doc["probes"]}
    assert got["channel email"]["state"] == "fail" and "403" in got["channel email"]["detail"]
    assert got["channel slack"]["state"] == "fail" and "invalid_auth" in got["channel slack"]["detail"]


def test_bad_settings_are_exit_2_not_a_health_report(henv):
    proc = run_cli(["health"], {**henv, "LOG_LEVEL": "LOUD"})
    assert proc.returncode == 2 and "LOG_LEVEL" in proc.stderr and "Traceback" not in proc.stderr


def _get(url: str) -> tuple[int, dict | str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - loopback
            body, status, ctype = resp.read().decode(), resp.status, resp.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        body, status, ctype = exc.read().decode(), exc.code, exc.headers["Content-Type"]
    return status, (json.loads(body) if ctype.startswith("application/json") else body), ctype


def test_serve_answers_health_in_seed_003s_shape_and_metrics_over_http(henv, monkeypatch, tmp_path):
    from prometheus_client import CollectorRegistry

    from worker.config import load_config
    from worker.fleet.db import create
    from worker.fleet.settings import reload_settings
    from worker.watch.metrics import FleetCollector
    from worker.web.server import Fleet, make_server

    for k, v in henv.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # Redis is down
    settings = reload_settings()
    cfg = load_config()
    engine = create(henv["DATABASE_URL"])
    registry = CollectorRegistry()
    registry.register(FleetCollector(engine, cfg))
    server = make_server(Fleet(settings, cfg, registry, cache_s=0), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, doc, _ = _get(base + "/health")
        assert status == 503 and doc["status"] == "unhealthy"
        assert set(doc) == {"status", "timestamp", "services", "environment"}
        assert doc["services"]["redis"]["status"] == "down" and doc["services"]["database"]["status"] == "operational"
        assert doc["environment"]["hasResendKey"] is True
        assert not [n for n in doc["services"] if n.startswith("target ")]  # targets: the page's, not the LB's
        status, doc, _ = _get(base + "/health/database")
        assert status == 200 and set(doc["services"]) == {"database", "fleet database"} and doc["status"] == "healthy"
        status, doc, _ = _get(base + "/health/redis")
        assert status == 503 and set(doc["services"]) == {"redis"}
        status, doc, _ = _get(base + "/health/email")
        assert status == 200 and set(doc["services"]) == {"channel email"}
        status, doc, _ = _get(base + "/health/nope")
        assert status == 404 and "/health/database" in doc["known"]
        status, text, ctype = _get(base + "/metrics")
        assert status == 200 and ctype.startswith("text/plain") and "opsfleet_alerts{" in text
        assert "RESEND" not in text and "re_full_key" not in text
    finally:
        server.shutdown()
        server.server_close()
        engine.dispose()
        monkeypatch.undo()
        reload_settings()


def test_a_sub_endpoint_runs_only_its_own_probes():
    """/health/database must answer a load balancer without waiting on the workers' inspection."""
    from worker.watch import health as fleet_health
    from worker.web.server import Fleet

    asked = []

    def probe(groups):
        asked.append(groups)
        return [fleet_health.Probe("database", "ok")]

    fleet = Fleet(settings=None, cfg=None, probe=probe, cache_s=60)
    fleet.probes("database")
    fleet.probes("database")  # cached
    fleet.probes(None)
    assert asked == [{"database"}, None]


def test_paging_channels_show_once_configured_and_are_never_probed_with_a_call_that_delivers(henv, sink):
    _, doc = health(henv, "--probe")
    assert not {"channel pagerduty", "channel webhook"} & set(states(doc))  # when_set: not configured, not there
    env = {**henv, "PAGERDUTY_ROUTING_KEY": "R0UT1NGKEY0123456789ABCDEFGHIJKL", "PAGERDUTY_API_URL": sink.pagerduty_api_url,
           "ALERT_WEBHOOK_URL": sink.webhook_url, "SLACK_BOT_TOKEN": "xoxb-test-token", "SLACK_CHANNEL": "#alerts",
           "SLACK_API_URL": sink.slack_api_url}
    _, doc = health(env, "--probe")
    got = {p["name"]: p for p in doc["probes"]}
    for kind in ("pagerduty", "webhook"):
        assert got[f"channel {kind}"]["state"] == "ok", got[f"channel {kind}"]
        assert got[f"channel {kind}"]["detail"].startswith(f"{kind} configured (not probed"), got[f"channel {kind}"]
    assert not sink.requests_for("pagerduty.enqueue") and not sink.requests_for("webhook")
    assert len(sink.requests_for("slack.auth.test")) == 1  # the Slack channel's own probe, not theirs


# `opsfleet health --json`'s `targets` entries: field names a script may rely on
TARGET_FIELDS = ["name", "reachable", "error", "connect_ms", "up", "reason", "last_run", "last_run_age_s", "firing"]


@pytest.fixture
def two_targets(henv, tmp_path, fresh_database):
    """Targets orders (a real database whose check ran just now) and legacy (nothing answers)."""
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    from tests.support.db import clear_alert_state
    from worker.checks import store
    from worker.config import load_config
    from worker.fleet.db import create

    folder = write_config(tmp_path / "config", {"orders": jobs_database(fresh_database, 0), "legacy": UNREACHABLE})
    cfg = load_config(folder, packs=["fleet"])
    fleet = create(henv["DATABASE_URL"])
    now = datetime.now(UTC)
    with fleet.begin() as conn:
        clear_alert_state(conn)
        store.record_schedule(conn, cfg.scheduled_checks(), now - timedelta(hours=1))
    for t in ("orders", "legacy"):
        evaluate(cfg, fleet, "database_up", t, now)
    # targets.yaml names every monitored database: DATABASE_URL unset, the fleet's state in FLEET_DATABASE_URL
    env = {k: v for k, v in henv.items() if k != "DATABASE_URL"}
    yield {**env, "FLEET_DATABASE_URL": henv["DATABASE_URL"], "OPSFLEET_CONFIG_DIR": str(folder),
           "OPSFLEET_PACKS": "fleet"}, cfg, fleet
    with fleet.begin() as conn:
        conn.execute(sa.text("DELETE FROM fleet.check_schedule"))
    fleet.dispose()


def test_each_target_is_reported_with_its_last_run_and_one_down_is_a_line_not_the_fleets_failure(two_targets):
    from datetime import UTC, datetime

    env, cfg, fleet = two_targets
    rc, doc = health(env)
    got = {t["name"]: t for t in doc["targets"]}
    assert list(got) == ["orders", "legacy"] and all(list(t) == TARGET_FIELDS for t in doc["targets"])
    assert got["orders"]["reachable"] is True and got["orders"]["error"] is None
    assert 0 <= got["orders"]["last_run_age_s"] < 90
    assert got["legacy"]["reachable"] is False and "127.0.0.1" in got["legacy"]["error"]
    assert got["legacy"]["up"] is False and got["legacy"]["last_run_age_s"] >= 0  # ran, in error
    probes = {p["name"]: p for p in doc["probes"]}
    assert probes["target orders"]["state"] == "ok" and probes["target legacy"]["state"] == "warn"
    assert "database" not in probes and probes["fleet database"]["state"] == "ok"  # no DATABASE_URL: no failure
    # the exit code is the rest of the fleet's: a target down never fails it
    others_fail = any(p["state"] == "fail" for p in doc["probes"] if not p["name"].startswith("target "))
    assert rc == (1 if others_fail else 0) and doc["status"] == ("unhealthy" if others_fail else "degraded")
    now = datetime.now(UTC)  # orders answered again just now (its own slot): up, whatever the first call took
    assert evaluate(cfg, fleet, "database_up", "orders", now, slot=now).status == "ok"
    proc = run_cli(["health", "--timeout", "2"], env, timeout=90)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("target ")]
    assert len(lines) == 1 and lines[0].startswith("target legacy is down: does not answer (")
    assert lines[0].endswith("(its alert, not the fleet's failure)") and "Traceback" not in proc.stderr


def test_targets_down_alone_leave_the_fleet_degraded_not_unhealthy(two_targets, henv):
    from worker.fleet.settings import Settings
    from worker.watch import health as fleet_health

    _, cfg, _ = two_targets
    probes = fleet_health.run_all(Settings(database_url=henv["DATABASE_URL"]), cfg, groups={"targets"})
    assert [(p.name, p.state) for p in probes] == [("target orders", "ok"), ("target legacy", "warn")]
    assert fleet_health.overall(probes) == "degraded"
