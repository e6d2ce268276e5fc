"""No channel shows the same text twice: an alert's title, summary and description are often the same
words (the engine makes the title from the summary; a check without `details` may have no
description, or one that says what the summary says), and a message that prints each of them reads
"5 orders failed in the last 15 minutes: 5 orders failed in the last 15 minutes". Each channel shows
such a text once, through the real SDKs against the sink (the table channel: the real system_alerts)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from tests.support.channels import email_channel, make_message
from worker.channels.pagerduty import PagerDutyChannel
from worker.channels.slack import SlackChannel
from worker.channels.table import TableChannel
from worker.channels.webhook import WebhookChannel

TEXT = "5 orders failed in the last 15 minutes"
OTHER = "Threshold is 3 per 15 minutes."
# (title, summary, description): the engine's shape first (title = summary), then the other overlaps
SHAPES = [(TEXT, TEXT, ""), (TEXT, TEXT, TEXT), (TEXT, "", TEXT), (TEXT, OTHER, TEXT), (TEXT, TEXT, OTHER)]
IDS = ["title=summary", "all_three", "title=description", "title=description,summary_other",
       "title=summary,description_other"]


def message(shape, **over):
    title, summary, description = shape
    return make_message(title=title, summary=summary, description=description, **over)


def times(text: str) -> int:
    return text.count(TEXT)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_slack_shows_the_text_once_in_the_blocks_and_once_in_the_notification_text(sink, shape):
    SlackChannel(webhook_url=sink.slack_webhook_url, timeout=2).send(message(shape, channel="slack"))
    sent = sink.slack_messages[0]
    assert times(sent["text"]) == 1, sent["text"]
    assert times(json.dumps(sent["blocks"])) == 1, sent["blocks"]
    if OTHER in shape:
        assert OTHER in json.dumps(sent["blocks"])  # what differs is still said


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_an_email_shows_the_text_once_in_each_part(sink, shape):
    email_channel(sink).send(message(shape))
    mail = sink.emails[0]
    body = re.sub(r"(?s)<head>.*</head>", "", mail["html"])  # the <title> repeats the subject, as mail does
    assert times(body) == 1, body
    assert times(mail["text"]) == 1, mail["text"]
    if OTHER in shape:
        assert OTHER in mail["text"]


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_a_pagerduty_event_says_the_text_once(sink, shape):
    PagerDutyChannel(routing_key="R" * 32, api_url=sink.pagerduty_api_url, timeout=2).send(
        message(shape, channel="pager"))
    event = sink.pagerduty_events[0]["event"]
    assert times(json.dumps(event["payload"])) == 1, event["payload"]
    if OTHER in shape:
        assert OTHER in json.dumps(event["payload"])


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_a_webhook_alert_says_the_text_once(sink, shape):
    WebhookChannel(sink.webhook_url, timeout=2).send(message(shape, channel="hook"))
    alert = sink.webhooks[0]["body"]["alerts"][0]
    assert times(json.dumps(alert["annotations"])) == 1, alert["annotations"]
    if OTHER in shape:
        assert OTHER in json.dumps(alert["annotations"])


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_a_system_alerts_row_does_not_repeat_its_title_as_its_message(clean_fleet, shape):
    from ops import sample_app

    sample_app.init(clean_fleet)
    with clean_fleet.begin() as conn:
        conn.execute(sa.text("DELETE FROM system_alerts"))
    TableChannel(clean_fleet).send(message(shape, channel="dashboard"))
    with clean_fleet.connect() as conn:
        row = conn.execute(sa.text("SELECT title, message FROM system_alerts")).one()
    assert row.title == TEXT and times(row.message) == 0, row
    assert row.message == (OTHER if OTHER in shape else "")


def test_the_digest_shows_an_info_alert_once_with_its_summary(clean_fleet):
    from worker.notify import digest

    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    with clean_fleet.begin() as conn:
        conn.execute(sa.text("""INSERT INTO fleet.alerts (fingerprint, check_name, severity, state, since, last_eval_at,
                                summary) VALUES ('fp-orders', 'orders_failed', 'info', 'firing', :t, :t, :s)"""),
                     {"t": now, "s": TEXT})
        conn.execute(sa.text("""INSERT INTO fleet.alert_events (fingerprint, check_name, severity, from_state, to_state,
                                value, at) VALUES ('fp-orders', 'orders_failed', 'info', 'inactive', 'firing', 5, :t)"""),
                     {"t": now})
    rendered = digest.render(digest.collect(clean_fleet, None, now))
    assert times(rendered["text"]) == 1 and times(rendered["html"]) == 1
    assert TEXT not in rendered["subject"]
