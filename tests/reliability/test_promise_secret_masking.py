"""README, Environment: "Secrets (API keys, tokens, webhook URLs, DSN passwords) are masked in every log
line, ours and Celery's" -- in a real `celery -A worker worker` and beat's own stdout and stderr: their
banners, a Slack delivery failing (connection refused) and an email going dead on a 403 whose body
echoes the API key (as some providers do), so the secret reaches the worker's `notification_dead` line."""

from __future__ import annotations

import socket

import pytest
import sqlalchemy as sa
from celery import Celery

from ops.devkit.process import start_beat, start_worker, wait_until
from ops.devkit.sink import Reply
from tests.support.db import fresh_gauge
from worker.fleet.db import create

RESEND_KEY = "re_MaskMeResendKey0123456789"
HOOK_SECRET = "HookSecretMaskMe0123"
DB_PASSWORD = "DbPassMaskMe0123"
REDIS_PASSWORD = "RedisPassMaskMe0123"  # the test Redis has no password: AUTH default <any> is accepted
SECRETS = (RESEND_KEY, HOOK_SECRET, DB_PASSWORD, REDIS_PASSWORD)

CHECK = """\
checks:
  - name: gauge_high
    description: test check
    schedule: 1h
    query: SELECT v AS value FROM gauge
    condition: "> 10"
    severity: critical
    summary: "gauge at {{ value }}"
"""
ROUTING = """\
channels:
  email: {kind: email}
  slack: {kind: slack}
routes:
  - match: {severity: critical}
    channels: [email, slack]
    group_wait: 0s
"""


def statuses(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT channel, status FROM fleet.notifications")).all())


@pytest.mark.slow  # about 6 s: a worker and a beat start, two deliveries fail
def test_no_secret_appears_in_a_real_workers_or_beats_output(env, fleet_db, redis_url, tmp_path, sink):
    cfg = tmp_path / "config"
    (cfg / "checks").mkdir(parents=True)
    (cfg / "checks" / "test.yaml").write_text(CHECK)
    (cfg / "routing.yaml").write_text(ROUTING)
    engine = create(fleet_db)
    fresh_gauge(engine, "v numeric", 50)
    closed = socket.socket()  # bound, never listening: every connection to it is refused
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    db_url = sa.make_url(fleet_db).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    redis_with_pw = redis_url.replace("redis://", f"redis://default:{REDIS_PASSWORD}@", 1)
    wenv = {**env, "OPSFLEET_CONFIG_DIR": str(cfg), "OPSFLEET_PACKS": "", "DATABASE_URL": db_url,
            "CELERY_BROKER_URL": redis_with_pw, "REDIS_URL": redis_with_pw, "CELERY_RESULT_BACKEND": redis_with_pw,
            "RESEND_API_KEY": RESEND_KEY, "RESEND_API_URL": sink.resend_api_url,
            "ALERT_SLACK_WEBHOOK_URL": f"http://127.0.0.1:{port}/services/T0MASK/B0MASK/{HOOK_SECRET}",
            "ALERT_EMAIL_RECIPIENTS": "ops@example.com", "FROM_EMAIL": "alerts@example.com", "LOG_LEVEL": "DEBUG"}
    sink.script("resend.emails", [Reply(403, body={"statusCode": 403, "name": "invalid_api_key",
                                                   "message": f"API key {RESEND_KEY} is invalid"})])
    worker = start_worker(wenv, tmp_path, queues="checks,notify")
    beat = start_beat(wenv, tmp_path, "beat")
    client = Celery(broker=redis_url)
    try:
        client.send_task("checks.run", kwargs={"name": "gauge_high"}, queue="checks")
        assert wait_until(lambda: statuses(engine) == {"email": "dead", "slack": "retrying"}, 60), \
            (statuses(engine), worker.output()[-3000:])
        assert beat.wait_for("beat: Acquired lock", 60), beat.output()[-3000:]
    finally:
        client.close()
        beat.kill()
        worker.stop()
        closed.close()
        engine.dispose()
    out = {"worker": worker.output(), "beat": beat.output()}
    assert "notification_retrying" in out["worker"] and "API key *** is invalid" in out["worker"]
    assert "celery beat" in out["beat"] and ".> transport:" in out["worker"]  # the banners are in what we read
    leaks = [(who, s) for who, text in out.items() for s in SECRETS if s in text]
    assert leaks == [], leaks


pytestmark = pytest.mark.reliability


# -- every configured secret, everywhere the fleet writes ---------------------------------------------
ROUTING_ALL = """\
channels:
  email: {kind: email}
  slack: {kind: slack}
  pagerduty: {kind: pagerduty, when_set: PAGERDUTY_ROUTING_KEY}
  webhook: {kind: webhook, when_set: ALERT_WEBHOOK_URL}
routes:
  - match: {severity: critical}
    channels: [email, slack, pagerduty, webhook]
    group_wait: 0s
"""


def by_status(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT status, count(*) FROM fleet.notifications GROUP BY status")).all())


def _secret_settings(sink, closed_port: int) -> dict[str, str]:
    """Each secret setting of the model (SECRET_FIELDS, derived from the names) -> a value holding a
    marker of its own (`SeCrEt<field>`), in the form the setting takes, pointed at the sink."""
    from worker.fleet.settings import SECRET_FIELDS

    def marker(field: str) -> str:
        return f"SeCrEt{field.replace('_', '')}"

    shaped = {
        "resend_api_key": lambda m: f"re_{m}",
        "slack_bot_token": lambda m: f"xoxb-{m}",
        "pagerduty_routing_key": lambda m: (m + "0" * 32)[:32],
        "alert_slack_webhook_url": lambda m: f"{sink.url}/services/T0MASK/B0MASK/{m}",
        "alert_webhook_url": lambda m: f"{sink.url}/hooks/{m}",
        "heartbeat_url": lambda m: f"http://127.0.0.1:{closed_port}/ping/{m}",  # refused: its failure is logged
    }
    return {f.upper(): shaped.get(f, (lambda m: f"user:{m}") if f.endswith("_auth") else (lambda m: m))(marker(f))
            for f in dict.fromkeys([*SECRET_FIELDS, *shaped])}  # (the channels' own, whatever the name rule says)


def _provider_view(line: dict) -> dict:
    """A captured message less how the provider is addressed (PagerDuty's routing key in the event, a
    webhook's path: the provider knows its own URL and key); what remains is what we wrote in it."""
    if line.get("type") == "pagerduty":
        line = {**line, "event": {k: v for k, v in line["event"].items() if k != "routing_key"}}
    return {k: v for k, v in line.items() if k != "path"}


def _page(url: str, auth: str) -> str:
    import base64
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - the test's own loopback server
        return resp.read().decode()


@pytest.mark.slow  # about 12 s: a worker fails and delivers on four channels, the status page renders every view
def test_every_configured_secret_stays_out_of_logs_captures_the_outbox_alerts_and_the_status_page(
        env, fleet_db, redis_url, tmp_path):
    import json
    import threading

    from ops.devkit.sink import ProviderSink
    from worker.config import load_config
    from worker.fleet.settings import Settings
    from worker.web.server import Fleet, make_server

    cfg = tmp_path / "config"
    (cfg / "checks").mkdir(parents=True)
    (cfg / "checks" / "test.yaml").write_text(CHECK + CHECK.split("checks:\n", 1)[1].replace("gauge_high", "gauge_also"))
    (cfg / "routing.yaml").write_text(ROUTING_ALL)
    engine = create(fleet_db)
    fresh_gauge(engine, "v numeric", 50)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    capture = tmp_path / "captured.jsonl"
    with ProviderSink(capture_path=capture) as sink:
        secrets = _secret_settings(sink, closed.getsockname()[1])
        db_url = sa.make_url(fleet_db).set(password="SeCrEtDsnPassword").render_as_string(hide_password=False)
        redis_with_pw = redis_url.replace("redis://", "redis://default:SeCrEtRedisPassword@", 1)
        wenv = {**env, **secrets, "OPSFLEET_CONFIG_DIR": str(cfg), "OPSFLEET_PACKS": "", "DATABASE_URL": db_url,
                "CELERY_BROKER_URL": redis_with_pw, "REDIS_URL": redis_with_pw, "CELERY_RESULT_BACKEND": redis_with_pw,
                "RESEND_API_URL": sink.resend_api_url, "SLACK_API_URL": sink.slack_api_url, "SLACK_CHANNEL": "#ops",
                "PAGERDUTY_API_URL": sink.pagerduty_api_url, "ALERT_EMAIL_RECIPIENTS": "ops@example.com",
                "FROM_EMAIL": "alerts@example.com", "OPSFLEET_PUBLIC_URL": "http://127.0.0.1:1", "LOG_LEVEL": "DEBUG"}
        markers = [*secrets.values(), "SeCrEtDsnPassword", "SeCrEtRedisPassword"]
        markers = [m[m.index("SeCrEt"):m.index("SeCrEt") + 20] for m in markers]  # the marked part of each value
        # each provider first refuses with a body that echoes the credential it was given (as some do),
        # so the secret reaches the worker's error lines and the outbox's last_error: masked there
        echo = {"resend.emails": Reply(403, body={"statusCode": 403, "name": "invalid_api_key",
                                                  "message": f"API key {wenv['RESEND_API_KEY']} is invalid"}),
                "slack.chat.postMessage": Reply(200, body={"ok": False, "error": f"invalid_auth {wenv['SLACK_BOT_TOKEN']}"}),
                "pagerduty.enqueue": Reply(400, body={"status": "invalid event", "message": "Event object is invalid",
                                                      "errors": [f"routing_key {wenv['PAGERDUTY_ROUTING_KEY']} unknown"]}),
                "webhook": Reply(403, body=f"forbidden: {wenv['ALERT_WEBHOOK_URL']}")}
        for route, reply in echo.items():
            sink.script(route, [reply])
        worker = start_worker(wenv, tmp_path, queues="checks,notify")
        client = Celery(broker=redis_url)
        try:
            client.send_task("checks.run", kwargs={"name": "gauge_high"}, queue="checks")
            assert wait_until(lambda: by_status(engine) == {"dead": 4}, 60), (by_status(engine), worker.output()[-3000:])
            client.send_task("checks.run", kwargs={"name": "gauge_also"}, queue="checks")  # then delivered
            assert wait_until(lambda: by_status(engine) == {"dead": 4, "sent": 4}, 60), \
                (by_status(engine), worker.output()[-3000:])
            client.send_task("notify.heartbeat", queue="notify")
            assert worker.wait_for("heartbeat_", 30), worker.output()[-3000:]
        finally:
            client.close()
            worker.stop()
            closed.close()
        settings = Settings(**{k.lower(): v for k, v in wenv.items() if k.lower() in Settings.model_fields})
        server = make_server(Fleet(settings, load_config(cfg, packs=[]), engine=engine, cache_s=60), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base, ui = f"http://127.0.0.1:{server.server_address[1]}", secrets["OPSFLEET_UI_AUTH"]
        try:
            with engine.connect() as conn:
                fingerprints = conn.execute(sa.text("SELECT fingerprint FROM fleet.alerts")).scalars().all()
                rows = {t: "\n".join(conn.execute(sa.text(f"SELECT row_to_json(r)::text FROM fleet.{t} r")).scalars())  # noqa: S608
                        for t in ("notifications", "alerts", "alert_events", "check_runs")}
            pages = {p: _page(base + p, ui) for p in ("/", "/history", "/api/status", "/silences/new",
                                                      *(f"/alerts/{f}" for f in fingerprints))}
        finally:
            server.shutdown()
            server.server_close()
            engine.dispose()
    captured = [json.dumps(_provider_view(json.loads(line))) for line in capture.read_text().splitlines()]
    assert len(captured) >= 4 and fingerprints, captured
    places = {"worker log": worker.output(), "captures": "\n".join(captured), **rows, **pages}
    assert "heartbeat_not_delivered" in places["worker log"] and "notification_dead" in places["worker log"]
    assert "***" in rows["notifications"]  # the echoed secrets were there, masked
    leaks = [(where, m) for where, text in places.items() for m in markers if m in text]
    assert leaks == [], leaks
