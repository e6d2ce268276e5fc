"""The Alertmanager-compatible webhook channel (worker/channels/webhook.py) against the loopback sink:
Alertmanager's v4 body, headers from the environment, the retry table over every status, timeouts,
refused connections and a missing URL. Its life end to end beside PagerDuty: test_pagerduty.py."""

from __future__ import annotations

import pytest

from ops.devkit.servers import free_port
from ops.devkit.sink import Reply
from tests.support.channels import paging_message
from worker.channels.base import DeliveryError
from worker.channels.registry import from_settings
from worker.channels.webhook import ZERO_TIME, WebhookChannel
from worker.fleet.logs import mask_text
from worker.fleet.settings import Settings
from worker.notify.routing import Routing

ALERTMANAGER_BODY_KEYS = {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                          "commonLabels", "commonAnnotations", "externalURL", "alerts"}
ALERTMANAGER_ALERT_KEYS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}


def test_the_webhook_posts_alertmanagers_v4_body_with_headers_from_the_environment(sink, monkeypatch):
    monkeypatch.setenv("PAGER_GATEWAY_TOKEN", "Bearer gw-secret-123456")
    spec = Routing.model_validate({"channels": {"sms": {"kind": "webhook", "url_env": "SMS_HOOK",
                                                        "headers_env": {"Authorization": "PAGER_GATEWAY_TOKEN"}}},
                                   "routes": [{"channels": ["sms"]}]}).channels["sms"]
    monkeypatch.setenv("SMS_HOOK", sink.webhook_url)
    channel = from_settings("webhook", Settings(), spec=spec)
    channel.send(paging_message(channel="sms"))
    hook = sink.webhooks[0]
    body = hook["body"]
    assert set(body) == ALERTMANAGER_BODY_KEYS and body["version"] == "4" and body["status"] == "firing"
    assert body["receiver"] == "sms" and body["groupLabels"] == {"alertname": "database_down"}
    (alert,) = body["alerts"]
    assert set(alert) == ALERTMANAGER_ALERT_KEYS
    assert alert["labels"] == {"system": "ace_engage", "alertname": "database_down", "severity": "critical"}
    assert alert["annotations"]["summary"] == "The monitored database does not answer"
    assert alert["annotations"]["runbook_url"] == "ops/runbooks/fleet.md"
    assert alert["startsAt"] == "2026-11-23T10:00:00Z" and alert["endsAt"] == ZERO_TIME
    assert alert["fingerprint"] == "fp-database-down-1"
    assert hook["headers"]["Authorization"].startswith("Bearer gw-s")  # the sink redacts what it records
    assert hook["headers"]["Idempotency-Key"] == "2b0c4f2e-58a4-4c55-9a43-1c3e5f1f0a11"
    assert mask_text("token Bearer gw-secret-123456") == "token ***"  # a header from the environment is a secret
    channel.send(paging_message("resolved", channel="sms"))
    resolved = sink.webhooks[1]["body"]
    assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"] != ZERO_TIME


@pytest.mark.parametrize(("status", "reason", "permanent"), [
    (429, "rate_limited", False), (500, "server_error", False), (503, "server_error", False),
    (400, "invalid", True), (401, "auth", True), (404, "client_error", True), (302, "client_error", True)])
def test_webhook_statuses_follow_the_retry_table(sink, status, reason, permanent):
    sink.script("webhook", [Reply(status, headers={"Retry-After": "3"} if status == 429 else {})])
    with pytest.raises(DeliveryError) as info:
        WebhookChannel(sink.webhook_url).send(paging_message())
    assert (info.value.reason, info.value.permanent) == (reason, permanent)
    if status == 429:
        assert info.value.retry_after == 3


def test_a_header_whose_variable_is_unset_is_named_and_nothing_is_sent(sink, monkeypatch):
    monkeypatch.delenv("GATEWAY_AUTH", raising=False)
    spec = Routing.model_validate({"channels": {"sms": {"kind": "webhook", "headers_env": {"Authorization": "GATEWAY_AUTH"}}},
                                   "routes": [{"channels": ["sms"]}]}).channels["sms"]
    with pytest.raises(DeliveryError) as info:
        from_settings("webhook", Settings(alert_webhook_url=sink.webhook_url), spec=spec).send(paging_message())
    assert info.value.permanent and "GATEWAY_AUTH (header Authorization) not set" in info.value.message
    assert not sink.requests_for("webhook")


def test_webhook_timeout_refused_connection_and_no_url(sink):
    sink.script("webhook", [Reply(hang=5.0)])
    with pytest.raises(DeliveryError) as info:
        WebhookChannel(sink.webhook_url, timeout=0.5).send(paging_message())
    assert info.value.reason == "timeout"
    with pytest.raises(DeliveryError) as info:
        WebhookChannel(f"http://127.0.0.1:{free_port()}/hook").send(paging_message())
    assert info.value.reason == "connection"
    with pytest.raises(DeliveryError) as info:
        WebhookChannel(None).send(paging_message())
    assert info.value.permanent and "ALERT_WEBHOOK_URL" in info.value.message
