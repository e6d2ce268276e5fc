"""The Slack channel (worker/channels/slack.py), by incoming webhook and by the Web API, drives the real
slack_sdk client against the loopback ProviderSink.

No mocks and no database: every assertion is about what crossed the HTTP boundary.
"""

from __future__ import annotations

import json

from slack_sdk.webhook import WebhookClient

from ops.devkit.sink import ProviderSink, Reply
from tests.support.channels import BOT_TOKEN, make_message, send_error
from worker.channels.slack import SlackChannel

# -- webhook ------------------------------------------------------------------------------------


def test_slack_webhook_posts_block_kit(sink):
    result = SlackChannel(webhook_url=sink.slack_webhook_url).send(make_message())

    assert result.provider_id is None
    [msg] = sink.slack_messages
    assert msg["kind"] == "webhook"
    header, section = msg["blocks"][0], msg["blocks"][1]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": ":rotating_light: High Error Rate Detected", "emoji": True},
    }
    assert section["text"]["text"] == "*Detected 12 errors in the last hour*\n\nThreshold is 5."
    row = msg["blocks"][2]["text"]["text"]
    assert row.startswith(":rotating_light: *[CRITICAL] high_error_rate*\n*Value* 12 · `service=api` · *Since* 2025-01-02T03:04:05")
    assert any(
        "<https://runbooks.example.com/errors?x=1&amp;y=2|Runbook>" in json.dumps(b) for b in msg["blocks"]
    )
    assert msg["text"].startswith(":rotating_light: [CRITICAL] High Error Rate Detected")


def test_slack_text_is_mrkdwn_escaped(sink):
    SlackChannel(webhook_url=sink.slack_webhook_url).send(
        make_message(summary="<!channel> ping & <https://evil.example|click>", description="")
    )
    section = sink.slack_messages[0]["blocks"][1]["text"]["text"]
    assert section == "&lt;!channel&gt; ping &amp; &lt;https://evil.example|click&gt;"


def test_slack_webhook_invalid_payload_is_permanent(sink):
    resp = WebhookClient(sink.slack_webhook_url).send_dict({})
    assert (resp.status_code, resp.body) == (400, "invalid_payload")

    sink.script("slack.webhook", [Reply(400)])
    err = send_error(SlackChannel(webhook_url=sink.slack_webhook_url), make_message())
    assert (err.reason, err.permanent, err.status) == ("invalid", True, 400)


def test_slack_webhook_rate_limit_is_transient_and_not_retried_by_the_sdk(sink):
    sink.script("slack.webhook", [Reply(429, headers={"Retry-After": "7"})])
    err = send_error(SlackChannel(webhook_url=sink.slack_webhook_url), make_message())
    assert (err.reason, err.permanent, err.retry_after) == ("rate_limited", False, 7.0)
    assert [r.status for r in sink.requests_for("slack.webhook")] == [429]
    assert sink.requests_for("slack.webhook")[0].scripted


def test_slack_webhook_unknown_service_is_permanent():
    with ProviderSink(slack_webhook_paths={"/services/T1/B1/good"}) as strict:
        err = send_error(SlackChannel(webhook_url=strict.url + "/services/T1/B1/bad"), make_message())
        assert (err.reason, err.permanent, err.status) == ("client_error", True, 404)
        SlackChannel(webhook_url=strict.slack_webhook_url).send(make_message())
        assert len(strict.slack_messages) == 1


def test_slack_webhook_timeout_is_transient(sink):
    sink.script("slack.webhook", [Reply(hang=60.0)])  # without the client's timeout this send would succeed
    err = send_error(SlackChannel(webhook_url=sink.slack_webhook_url, timeout=0.5), make_message())
    assert (err.reason, err.permanent) == ("timeout", False)
    assert len(sink.requests_for("slack.webhook")) == 1  # the SDK's connection retry is off


# -- Web API ------------------------------------------------------------------------------------


def api_channel(sink: ProviderSink, **overrides) -> SlackChannel:
    settings = dict(bot_token=BOT_TOKEN, channel="#alerts", api_url=sink.slack_api_url, timeout=2)
    settings.update(overrides)
    return SlackChannel(**settings)


def test_web_api_post_returns_ts_and_update_rewrites_the_message(sink):
    channel = api_channel(sink)
    posted = channel.send(make_message())
    assert posted.provider_id and posted.provider_id.count(".") == 1
    channel_id = posted.detail["channel"]
    assert channel_id.startswith("C")

    updated = channel.send(make_message(status="resolved"), update_ts=posted.provider_id, channel=channel_id)
    assert updated.provider_id == posted.provider_id
    kinds = [m["kind"] for m in sink.slack_messages]
    assert kinds == ["chat.postMessage", "chat.update"]
    assert sink.slack_messages[1]["message"]["text"].startswith(":white_check_mark: [RESOLVED]")
    assert sink.slack_messages[0]["request_headers"]["Authorization"] == "Bearer xoxb***"


def test_web_api_thread_reply(sink):
    channel = api_channel(sink)
    parent = channel.send(make_message())
    reply = channel.send(make_message(status="resolved"), thread_ts=parent.provider_id)
    assert reply.provider_id != parent.provider_id
    assert sink.slack_messages[1]["thread_ts"] == parent.provider_id
    assert sink.slack_messages[1]["message"]["thread_ts"] == parent.provider_id


def test_web_api_update_of_unknown_message_is_permanent(sink):
    channel = api_channel(sink)
    posted = channel.send(make_message())
    err = send_error(channel, make_message(), update_ts="1.000001", channel=posted.detail["channel"])
    assert (err.reason, err.permanent) == ("client_error", True)
    assert "message_not_found" in err.message


def test_web_api_invalid_auth_is_permanent():
    with ProviderSink(slack_tokens={"xoxb-right"}) as strict:
        err = send_error(api_channel(strict, bot_token="xoxb-wrong"), make_message())
    assert (err.reason, err.permanent) == ("auth", True)
    assert "invalid_auth" in err.message


def test_web_api_unknown_channel_is_permanent():
    with ProviderSink(slack_channels={"#alerts"}) as strict:
        err = send_error(api_channel(strict, channel="#nope"), make_message())
    assert (err.reason, err.permanent) == ("client_error", True)
    assert "channel_not_found" in err.message


def test_web_api_rate_limit_is_transient_with_retry_after(sink):
    sink.script("slack.chat.postMessage", [Reply(429, headers={"Retry-After": "30"})])
    err = send_error(api_channel(sink), make_message())
    assert (err.reason, err.permanent, err.retry_after, err.status) == ("rate_limited", False, 30.0, 429)
    assert len(sink.requests_for("slack.chat.postMessage")) == 1


def test_web_api_server_error_is_transient(sink):
    sink.script("slack.chat.postMessage", [Reply(503)])
    err = send_error(api_channel(sink), make_message())
    assert (err.reason, err.permanent, err.status) == ("server_error", False, 503)


# -- limits -------------------------------------------------------------------------------------


def test_long_text_is_truncated_within_slack_limits(sink):
    huge = make_message(
        title="T" * 500,
        summary="S&" * 3000,
        description="D<" * 60000,
        labels={f"label{i:02d}": "v" * 5000 for i in range(30)},
    )
    SlackChannel(webhook_url=sink.slack_webhook_url).send(huge)
    api_channel(sink).send(huge)  # the sink enforces Block Kit limits: both were accepted

    for msg in sink.slack_messages:
        blocks = msg["blocks"]
        assert len(blocks) <= 50
        assert len(blocks[0]["text"]["text"]) <= 150
        assert blocks[0]["text"]["text"].endswith("…")
        assert len(blocks[1]["text"]["text"]) <= 3000
        assert not blocks[1]["text"]["text"].rstrip("…").endswith(("&", "&a", "&am", "&amp", "&l", "&lt"))
        row = blocks[2]["text"]["text"]
        assert len(row) <= 3000 and row.count("`label") <= 10  # labels capped, the row cut within a section
        assert len(msg["text"]) <= 4000


def test_a_summary_of_100_alerts_shows_40_says_how_many_more_and_links_the_status_page(sink):
    """A folded storm message stands for every alert it carries (its title says how many), within
    Slack's 50 blocks: 40 shown, the rest counted, and a link to the status page, which lists them all."""
    rows = [make_message(title=f"Check {i:03d}", labels={"item": f"i{i:03d}"}, fingerprint=f"fp-{i:03d}")
            for i in range(100)]
    group = make_message(title="Check 000 (+99 more)", alerts=rows, public_url="https://ops.example.com/")
    SlackChannel(webhook_url=sink.slack_webhook_url).send(group)
    [msg] = sink.slack_messages
    assert len(msg["blocks"]) <= 50
    assert msg["blocks"][0]["text"]["text"].endswith("Check 000 (+99 more)")
    shown = [b for b in msg["blocks"] if b["type"] == "section" and "`item=i" in b["text"]["text"]]
    assert len(shown) == 40
    [tail] = [b for b in msg["blocks"] if b["type"] == "context" and "more alerts" in json.dumps(b)]
    assert tail["elements"][0]["text"] == "and 60 more alerts (see <https://ops.example.com/|the status page>)"
