"""PagerDuty (Events API v2, through PagerDuty's own client, worker/channels/pagerduty.py) against the
loopback sink speaking its API: the events it sends, the retry table over every status, timeouts and
refused connections, one request per attempt (the client's own retries off), the alert's life end to
end beside the webhook (trigger, deduplicated repeat, resolve) and the route that only exists once
the routing key is set. The webhook channel alone: test_webhook.py."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa

from ops.devkit.servers import free_port
from ops.devkit.sink import ProviderSink, Reply
from tests.support import REPO
from tests.support.channels import T0, paging_message
from tests.support.db import fresh_gauge
from worker.channels.base import DeliveryError
from worker.channels.pagerduty import PagerDutyChannel
from worker.channels.registry import from_settings
from worker.checks.engine import run_check
from worker.checks.spec import Check
from worker.config import load_config
from worker.fleet.logs import mask_text
from worker.fleet.settings import Settings
from worker.notify.delivery import deliver
from worker.notify.routing import Routing

KEY = "R0UT1NGKEY0123456789ABCDEFGHIJKL"  # 32 characters, as PagerDuty's integration keys


@pytest.fixture
def pd(sink):
    return PagerDutyChannel(KEY, api_url=sink.pagerduty_api_url, timeout=2.0)


# -- PagerDuty ------------------------------------------------------------------------------------
def test_firing_triggers_with_the_fingerprint_as_dedup_key_a_repeat_dedups_and_resolved_resolves(sink, pd):
    first = pd.send(paging_message())
    assert first.provider_id == "fp-database-down-1"
    event = sink.pagerduty_events[0]["event"]
    assert event["routing_key"] == KEY and event["event_action"] == "trigger"
    assert event["dedup_key"] == "fp-database-down-1"
    payload = event["payload"]
    assert payload["summary"] == "The monitored database does not answer" and payload["severity"] == "critical"
    assert payload["source"] == "opsfleet" and payload["component"] == "database_down"
    assert payload["custom_details"]["labels"] == {"system": "ace_engage"}
    assert payload["custom_details"]["value"] == 2.0 and payload["custom_details"]["runbook"] == "ops/runbooks/fleet.md"
    pd.send(paging_message())  # a repeat: the same open incident
    assert sink.pagerduty_incidents == {"fp-database-down-1": {
        "status": "triggered", "summary": "The monitored database does not answer", "events": 2}}
    pd.send(paging_message("resolved"))
    assert sink.pagerduty_events[-1]["event"] == {"routing_key": KEY, "event_action": "resolve",
                                                  "dedup_key": "fp-database-down-1"}
    assert sink.pagerduty_incidents["fp-database-down-1"]["status"] == "resolved"


@pytest.mark.parametrize(("ours", "theirs"), [("critical", "critical"), ("high", "error"), ("warning", "warning"),
                                              ("medium", "warning"), ("info", "info")])
def test_severities_map_onto_the_events_apis_four(sink, pd, ours, theirs):
    pd.send(paging_message(severity=ours))
    assert sink.pagerduty_events[0]["event"]["payload"]["severity"] == theirs


def test_a_summary_past_1024_characters_is_cut_and_accepted(sink, pd):
    pd.send(paging_message(title="x" * 3000))
    assert len(sink.pagerduty_events[0]["event"]["payload"]["summary"]) == 1024


@pytest.mark.parametrize(("status", "reason", "permanent"), [
    (429, "rate_limited", False), (500, "server_error", False), (502, "server_error", False),
    (503, "server_error", False), (504, "server_error", False), (408, "timeout", False),
    (400, "invalid", True), (401, "auth", True), (403, "auth", True), (404, "client_error", True),
    (413, "invalid", True)])
def test_every_status_is_classified_by_the_retry_table_in_one_request(sink, pd, status, reason, permanent):
    sink.script("pagerduty.enqueue", [Reply(status, headers={"Retry-After": "7"} if status == 429 else {})])
    with pytest.raises(DeliveryError) as info:
        pd.send(paging_message())
    assert (info.value.reason, info.value.permanent, info.value.status) == (reason, permanent, status)
    if status == 429:
        assert info.value.retry_after == 7
    assert len(sink.requests_for("pagerduty.enqueue")) == 1  # the client's own retries are off


def test_an_invalid_event_says_what_pagerduty_said(sink, pd):
    sink.script("pagerduty.enqueue", [Reply(400, body={"status": "invalid event", "message": "Event object is invalid",
                                                       "errors": ["'payload.source' is required"]})])
    with pytest.raises(DeliveryError) as info:
        pd.send(paging_message())
    assert "'payload.source' is required" in info.value.message and info.value.permanent


def test_an_unknown_routing_key_is_a_permanent_invalid_event():
    with ProviderSink(pagerduty_routing_keys=["K" * 32]) as sink:
        with pytest.raises(DeliveryError) as info:
            PagerDutyChannel(KEY, api_url=sink.pagerduty_api_url).send(paging_message())
    assert info.value.reason == "invalid" and "not a valid integration key" in info.value.message


def test_a_202_without_a_dedup_key_is_a_server_error_to_retry(sink, pd):
    sink.script("pagerduty.enqueue", [Reply(202, body={"status": "success"})])
    with pytest.raises(DeliveryError) as info:
        pd.send(paging_message())
    assert info.value.reason == "server_error" and not info.value.permanent


def test_a_hanging_events_api_is_a_timeout_and_nothing_listening_a_connection_error(sink):
    sink.script("pagerduty.enqueue", [Reply(hang=5.0)])
    with pytest.raises(DeliveryError) as info:
        PagerDutyChannel(KEY, api_url=sink.pagerduty_api_url, timeout=0.5).send(paging_message())
    assert info.value.reason == "timeout" and not info.value.permanent
    assert len(sink.requests_for("pagerduty.enqueue")) == 1
    with pytest.raises(DeliveryError) as info:
        PagerDutyChannel(KEY, api_url=f"http://127.0.0.1:{free_port()}", timeout=1).send(paging_message())
    assert info.value.reason == "connection" and not info.value.permanent


def test_without_a_routing_key_nothing_is_sent_and_it_says_which_variable(sink):
    with pytest.raises(DeliveryError) as info:
        PagerDutyChannel(None, api_url=sink.pagerduty_api_url).send(paging_message())
    assert info.value.permanent and "PAGERDUTY_ROUTING_KEY" in info.value.message
    assert not sink.requests_for("pagerduty.enqueue")


def test_a_channel_naming_its_own_key_never_pages_with_the_default_one(sink, monkeypatch):
    from worker.channels.registry import problems as channel_problems

    spec = Routing.model_validate({"channels": {"payments": {"kind": "pagerduty", "routing_key_env": "PAYMENTS_PD_KEY"}},
                                   "routes": [{"channels": ["payments"]}]}).channels["payments"]
    monkeypatch.delenv("PAYMENTS_PD_KEY", raising=False)
    s = Settings(pagerduty_routing_key=KEY, pagerduty_api_url=sink.pagerduty_api_url)
    with pytest.raises(DeliveryError) as info:
        from_settings("pagerduty", s, spec=spec).send(paging_message())
    assert info.value.permanent and "PAYMENTS_PD_KEY is not set" in info.value.message
    assert not sink.requests_for("pagerduty.enqueue")  # not the default service's key either
    assert channel_problems("pagerduty", s, spec) == ["PAYMENTS_PD_KEY not set"]
    other = "P" * 32
    monkeypatch.setenv("PAYMENTS_PD_KEY", other)
    from_settings("pagerduty", s, spec=spec).send(paging_message())
    assert sink.pagerduty_events[0]["event"]["routing_key"] == other
    assert mask_text(f"key {other}") == "key ***"


def test_the_client_logs_none_of_its_own_retry_decisions(sink, pd, caplog):
    sink.script("pagerduty.enqueue", [Reply(503)])
    with caplog.at_level(logging.DEBUG), pytest.raises(DeliveryError):
        pd.send(paging_message())
    assert not [r for r in caplog.records if "pagerduty" in r.name.lower() or KEY in r.getMessage()]


# -- through the pipeline -------------------------------------------------------------------------
CHECK = Check.model_validate({"name": "gauge_high", "description": "test", "schedule": "1m",
                              "query": "SELECT v AS value FROM gauge", "condition": "> 10", "severity": "critical",
                              "summary": "gauge at {{ value }}"})
ROUTING = Routing.model_validate({
    "channels": {"pager": {"kind": "pagerduty"}, "hook": {"kind": "webhook"}},
    "routes": [{"match": {"severity": "critical"}, "channels": ["pager", "hook"], "repeat_interval": "1h",
                "group_wait": "0s"}]})


@pytest.fixture
def db(clean_fleet):
    """A gauge of one unlabelled value, 50: CHECK fires."""
    fresh_gauge(clean_fleet, "v numeric", 50)
    return clean_fleet


def evaluate_and_deliver(db, settings, at):
    out = run_check(CHECK, monitored=db, fleet=db, now=at, routing=ROUTING)
    return [deliver(nid, fleet=db, settings=settings, routing=ROUTING, now=at) for nid in out.notification_ids]


def test_an_alert_pages_once_repeats_into_the_same_incident_and_resolves_it(db, sink):
    s = Settings(pagerduty_routing_key=KEY, pagerduty_api_url=sink.pagerduty_api_url, alert_webhook_url=sink.webhook_url)
    assert [d.status for d in evaluate_and_deliver(db, s, T0)] == ["sent", "sent"]
    with db.connect() as conn:
        fp = conn.execute(sa.text("SELECT fingerprint FROM fleet.alerts")).scalar()
        payloads = [r[0] for r in conn.execute(sa.text("SELECT payload::text FROM fleet.notifications"))]
    assert list(sink.pagerduty_incidents) == [fp]
    assert all(KEY not in p for p in payloads)  # the routing key is never in the outbox
    evaluate_and_deliver(db, s, T0 + timedelta(minutes=61))  # the hourly repeat
    assert sink.pagerduty_incidents[fp]["events"] == 2 and len(sink.webhooks) == 2
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE gauge SET v = 1"))
    assert [d.status for d in evaluate_and_deliver(db, s, T0 + timedelta(minutes=62))] == ["sent", "sent"]
    assert sink.pagerduty_incidents[fp]["status"] == "resolved"
    assert sink.webhooks[-1]["body"]["status"] == "resolved"


def test_a_5xx_is_retried_by_the_outbox_and_the_retry_dedups_into_one_incident(db, sink):
    s = Settings(pagerduty_routing_key=KEY, pagerduty_api_url=sink.pagerduty_api_url, alert_webhook_url=sink.webhook_url)
    sink.script("pagerduty.enqueue", [Reply(503)])
    out = run_check(CHECK, monitored=db, fleet=db, now=T0, routing=ROUTING)
    with db.connect() as conn:
        pager = conn.execute(sa.text("SELECT CAST(id AS text) FROM fleet.notifications WHERE channel = 'pager'")).scalar()
    first = deliver(pager, fleet=db, settings=s, routing=ROUTING, now=T0)
    assert first.status == "retrying" and pager in out.notification_ids
    second = deliver(pager, fleet=db, settings=s, routing=ROUTING, now=T0 + timedelta(seconds=first.retry_in + 1))
    assert second.status == "sent" and len(sink.pagerduty_incidents) == 1


def test_the_shipped_critical_route_pages_only_once_the_routing_key_is_set(monkeypatch):
    monkeypatch.delenv("PAGERDUTY_ROUTING_KEY", raising=False)
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)
    without = load_config(REPO / "config").routing
    assert "pagerduty" not in without.channels
    assert all("pagerduty" not in r.channels for r in without.routes)
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", KEY)
    with_key = load_config(REPO / "config").routing
    critical = with_key.route_for({"severity": "critical"})
    assert any("pagerduty" in r.channels for r in critical)
    assert not any("pagerduty" in r.channels for r in with_key.route_for({"severity": "high"}))
