"""Hostile alert text (`<script>`, `<@channel>`, `<!here>`, Slack's `<url|label>`, Markdown links) in
every field a check's labels, summary and description fill, sent through every channel to the
loopback sink, inspected as each provider received it: escaped in the email's HTML and in every Slack
mrkdwn text (plain_text header fields are never parsed by Slack); carried as JSON strings, verbatim
and never as markup or a link, to PagerDuty and the webhook (whose receivers render them as text)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.devkit.sink import ProviderSink
from worker.channels.base import Message
from worker.channels.email import EmailChannel
from worker.channels.pagerduty import PagerDutyChannel
from worker.channels.slack import SlackChannel
from worker.channels.webhook import WebhookChannel

pytestmark = pytest.mark.reliability
FRAGMENTS = ["<script>alert(1)</script>", "<@channel>", "<!here>", "<!channel>", "[x](http://evil)",
             "<http://evil|click>", "&amp;", "*bold*", "`code`", "\"quoted\"", "<img src=x onerror=1>", "plain"]
RAW = ("<script", "<@channel>", "<!here>", "<!channel>", "<http://evil", "<img")
hostile = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=4).map(" ".join)


@pytest.fixture(scope="module")
def provider():
    with ProviderSink() as s:
        yield s


def mrkdwn_texts(node) -> list[str]:
    """Every text Slack parses as mrkdwn: the top-level text and each non plain_text block text."""
    out = []
    if isinstance(node, dict):
        if isinstance(node.get("text"), str) and node.get("type") != "plain_text":
            out.append(node["text"])
        for v in node.values():
            out += mrkdwn_texts(v)
    elif isinstance(node, list):
        for v in node:
            out += mrkdwn_texts(v)
    return out


@settings(derandomize=True, max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=hostile, summary=hostile, description=hostile, label=hostile)
def test_hostile_alert_text_is_escaped_in_every_channel(provider, title, summary, description, label):
    provider.reset()
    m = Message(notification_id="2b0c4f2e-58a4-4c55-9a43-1c3e5f1f0a11", channel="x", check="c", severity="critical",
                status="firing", title=title, summary=summary, description=description, labels={"host": label},
                value=1.0, fingerprint="fp-hostile", started_at=datetime(2026, 1, 1, tzinfo=UTC))
    EmailChannel("re_key", "alerts@example.com", "Alerts", ["ops@example.com"], api_url=provider.resend_api_url,
                 timeout=2).send(m)
    SlackChannel(webhook_url=provider.slack_webhook_url, timeout=2).send(m)
    PagerDutyChannel("R0UT1NGKEY0123456789ABCDEFGHIJKL", api_url=provider.pagerduty_api_url, timeout=2).send(m)
    WebhookChannel(provider.webhook_url, timeout=2).send(m)
    got = {r.route: r.body for r in provider.requests}

    html = got["resend.emails"]["html"]
    assert not any(raw in html for raw in RAW), html
    texts = mrkdwn_texts(got["slack.webhook"])
    assert texts and not any(raw in t for t in texts for raw in RAW), texts

    pd = got["pagerduty.enqueue"]["payload"]
    assert pd["summary"] == title[:1024] and pd["custom_details"]["labels"] == {"host": label}
    assert not any("evil" in str(link) for link in got["pagerduty.enqueue"].get("links", []))
    alert = got["webhook"]["alerts"][0]
    assert alert["labels"]["host"] == label and "evil" not in alert.get("generatorURL", "")
    for body in (got["pagerduty.enqueue"], got["webhook"]):  # data, not markup: the text round-trips as JSON
        assert json.loads(json.dumps(body)) == body
