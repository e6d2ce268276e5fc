"""The channels drive the real resend and slack_sdk clients against the loopback ProviderSink.

No mocks and no database: every assertion is about what crossed the HTTP boundary.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import requests
from slack_sdk.webhook import WebhookClient

from ops.devkit.sink import ProviderSink, Reply
from worker.channels.base import REASONS, DeliveryError, Message, classify_status, parse_retry_after
from worker.channels.email import EmailChannel
from worker.channels.registry import CHANNELS, get_channel
from worker.channels.slack import SlackChannel

API_KEY = "re_test_key"
BOT_TOKEN = "xoxb-test-token"


@pytest.fixture
def sink(tmp_path):
    with ProviderSink(capture_path=tmp_path / "capture.jsonl") as s:
        yield s


def make_message(**overrides) -> Message:
    values = dict(
        notification_id="notif-1",
        channel="email",
        check="high_error_rate",
        severity="critical",
        status="firing",
        title="High Error Rate Detected",
        summary="Detected 12 errors in the last hour",
        description="Threshold is 5.",
        labels={"service": "api"},
        value=12.0,
        fingerprint="fp-123",
        runbook="https://runbooks.example.com/errors?x=1&y=2",
        started_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        extra={"threshold": 5},
    )
    values.update(overrides)
    return Message(**values)


def email_channel(sink: ProviderSink, **overrides) -> EmailChannel:
    settings = dict(
        api_key=API_KEY,
        from_email="alerts@example.com",
        from_name="ACE Engage Alerts",
        recipients=["ops@company.com", "admin@company.com"],
        api_url=sink.resend_api_url,
        timeout=2,
    )
    settings.update(overrides)
    return EmailChannel(**settings)


def send_error(target, message, **kwargs) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        target.send(message, **kwargs)
    return info.value


# -- email ----------------------------------------------------------------------------------------


def test_email_is_sent_with_html_and_text_parts(sink):
    result = email_channel(sink).send(make_message())

    [email] = sink.emails
    assert result.provider_id == email["id"]
    assert email["subject"] == "[CRITICAL] High Error Rate Detected"
    assert email["from"] == "ACE Engage Alerts <alerts@example.com>"
    assert email["to"] == ["ops@company.com", "admin@company.com"]
    assert ">High Error Rate Detected</h1>" in email["html"]
    assert "Detected 12 errors in the last hour" in email["text"]
    assert "<h1" not in email["text"] and "[CRITICAL] high_error_rate" in email["text"]
    assert email["idempotency_key"] == "notif-1"
    assert email["request_headers"]["Authorization"].startswith("Bearer re_t")
    assert API_KEY not in json.dumps(email["request_headers"])  # the sink redacts the key


def test_resolved_email_subject_says_resolved(sink):
    email_channel(sink).send(make_message(status="resolved"))
    assert sink.emails[0]["subject"] == "[RESOLVED] High Error Rate Detected"


def test_email_html_escapes_alert_text(sink):
    title = 'Disk <script>alert("x")</script> & more'
    email_channel(sink).send(
        make_message(title=title, summary="<img src=x onerror=alert(1)>", runbook="javascript:alert(1)")
    )
    html = sink.emails[0]["html"]
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; more" in html
    assert "<img" not in html
    assert 'href="javascript:' not in html  # a non-http runbook is shown as text, never linked
    assert title in sink.emails[0]["text"]  # the text part is not HTML: no entities


def test_runbook_link_keeps_its_query_string(sink):
    email_channel(sink).send(make_message())
    assert 'href="https://runbooks.example.com/errors?x=1&amp;y=2"' in sink.emails[0]["html"]


def test_idempotency_key_dedups_a_retried_send(sink):
    channel = email_channel(sink)
    first = channel.send(make_message())
    second = channel.send(make_message())  # same notification id -> same Idempotency-Key

    assert first.provider_id == second.provider_id
    assert len(sink.emails) == 1
    attempts = sink.requests_for("resend.emails")
    assert [r.replayed for r in attempts] == [False, True]


def test_same_idempotency_key_with_another_body_is_a_permanent_conflict(sink):
    channel = email_channel(sink)
    channel.send(make_message())
    err = send_error(channel, make_message(title="Something else"))
    assert (err.reason, err.permanent, err.status) == ("client_error", True, 409)
    assert len(sink.emails) == 1


def test_hung_request_times_out_and_the_retry_records_one_email(sink):
    channel = email_channel(sink, timeout=0.5)
    sink.script("resend.emails", [Reply(hang=60.0)])  # answers when the sink stops (teardown)

    err = send_error(channel, make_message())
    assert (err.reason, err.permanent) == ("timeout", False)
    assert sink.resend_in_flight() == 1  # cut by the client's timeout: the provider has not answered yet

    retried = channel.send(make_message())  # the provider had accepted it: the key replays the answer
    assert len(sink.emails) == 1
    assert retried.provider_id == sink.emails[0]["id"]
    assert len(sink.requests_for("resend.emails")) == 2


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(sink, status):
    sink.script("resend.emails", [Reply(status)])
    err = send_error(email_channel(sink), make_message())
    assert (err.reason, err.permanent, err.status) == ("server_error", False, status)
    assert sink.emails == []


def test_server_errors_then_success_sends_once(sink):
    channel = email_channel(sink)
    sink.script("resend.emails", [Reply(500), Reply(500), Reply(200)])
    outcomes = []
    for _ in range(3):
        try:
            channel.send(make_message())
            outcomes.append("sent")
        except DeliveryError as exc:
            outcomes.append(exc.reason)
    assert outcomes == ["server_error", "server_error", "sent"]
    assert len(sink.emails) == 1
    assert len(sink.requests_for("resend.emails")) == 3


def test_rate_limit_is_transient_with_retry_after(sink):
    sink.script("resend.emails", [Reply(429, headers={"Retry-After": "2"})])
    err = send_error(email_channel(sink), make_message())
    assert (err.reason, err.permanent, err.retry_after, err.status) == ("rate_limited", False, 2.0, 429)


def test_validation_error_is_permanent(sink):
    sink.script("resend.emails", [Reply(422)])
    err = send_error(email_channel(sink), make_message())
    assert (err.reason, err.permanent, err.status) == ("invalid", True, 422)


def test_invalid_sender_is_rejected_by_the_provider_as_permanent(sink):
    err = send_error(email_channel(sink, from_email="not-an-address", from_name=None), make_message())
    assert (err.reason, err.permanent, err.status) == ("invalid", True, 422)
    assert "from" in err.message
    assert sink.emails == []


def test_unauthorized_is_a_permanent_auth_error(sink):
    sink.script("resend.emails", [Reply(401)])
    err = send_error(email_channel(sink), make_message())
    assert (err.reason, err.permanent, err.status) == ("auth", True, 401)


def test_wrong_api_key_is_a_permanent_auth_error():
    with ProviderSink(resend_api_keys={"re_right"}) as strict:
        err = send_error(email_channel(strict, api_key="re_wrong"), make_message())
    assert (err.reason, err.permanent, err.status) == ("auth", True, 403)


def test_refused_connection_is_a_transient_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    channel = EmailChannel(
        API_KEY, "alerts@example.com", None, ["ops@company.com"], api_url=f"http://127.0.0.1:{port}"
    )
    err = send_error(channel, make_message())
    assert (err.reason, err.permanent) == ("connection", False)


def test_channels_with_different_keys_do_not_cross_in_threads():
    with ProviderSink(resend_api_keys={"re_one", "re_two"}) as strict:
        one = email_channel(strict, api_key="re_one")
        two = email_channel(strict, api_key="re_two")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [
                pool.submit((one if i % 2 else two).send, make_message(notification_id=f"n-{i}"))
                for i in range(16)
            ]
            results = [f.result() for f in futures]
        assert len({r.provider_id for r in results}) == 16
        assert len(strict.emails) == 16


def test_batch_send_returns_ids_in_order_and_dedups(sink):
    channel = email_channel(sink)
    batch = [
        {"to": [f"user{i}@example.com"], "subject": f"Confirmation {i}", "text": f"Your number is {i}"}
        for i in range(3)
    ]
    ids = channel.send_batch(batch, idempotency_key="backlog-batch-1")
    again = channel.send_batch(batch, idempotency_key="backlog-batch-1")

    assert ids == again
    assert [e["id"] for e in sink.emails] == ids
    assert [e["to"] for e in sink.emails] == [
        ["user0@example.com"],
        ["user1@example.com"],
        ["user2@example.com"],
    ]
    assert all(e["from"] == "ACE Engage Alerts <alerts@example.com>" and e["batch"] for e in sink.emails)


def test_permissive_batch_fails_a_bad_address_alone(sink):
    """send_batch_each: Resend's permissive validation sends the good emails and names the bad one."""
    channel = email_channel(sink)
    batch = [{"to": [addr], "subject": "Confirmation", "text": "Your number"}
             for addr in ("good1@example.com", "not-an-address", "good2@example.com")]
    items = channel.send_batch_each(batch, idempotency_key="permissive-1")
    assert [bool(i.provider_id) for i in items] == [True, False, True]
    assert items[1].error.startswith("Invalid `to` field")
    assert [e["to"] for e in sink.emails] == [["good1@example.com"], ["good2@example.com"]]
    assert [e["id"] for e in sink.emails] == [items[0].provider_id, items[2].provider_id]
    assert channel.send_batch_each([], idempotency_key="empty") == []


def test_batch_over_100_is_refused(sink):
    one = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
    with pytest.raises(DeliveryError) as info:
        email_channel(sink).send_batch([one] * 101, idempotency_key="k")
    assert (info.value.reason, info.value.permanent) == ("invalid", True)

    resp = requests.post(
        sink.resend_api_url + "/emails/batch",
        json=[one] * 101,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=5,
    )
    assert resp.status_code == 422
    assert resp.json()["name"] == "validation_error"
    assert sink.emails == []


def test_stored_email_can_be_fetched_by_id(sink):
    result = email_channel(sink).send(make_message())
    resp = requests.get(
        f"{sink.resend_api_url}/emails/{result.provider_id}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=5,
    )
    assert resp.status_code == 200
    assert resp.json()["subject"] == "[CRITICAL] High Error Rate Detected"
    missing = requests.get(f"{sink.resend_api_url}/emails/nope", timeout=5)
    assert missing.status_code == 401
    assert missing.json() == {
        "statusCode": 401,
        "name": "missing_api_key",
        "message": "Missing API key in the authorization header.",
    }


# -- slack webhook ---------------------------------------------------------------------------------


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


# -- slack web API ---------------------------------------------------------------------------------


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


def test_web_api_auth_test(sink):
    from slack_sdk import WebClient

    resp = WebClient(token=BOT_TOKEN, base_url=sink.slack_api_url, retry_handlers=[]).auth_test()
    assert resp["ok"] is True and resp["team_id"] == "T00000000"


# -- limits ---------------------------------------------------------------------------------------


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


def test_oversized_blocks_are_rejected_by_the_sink(sink):
    resp = WebhookClient(sink.slack_webhook_url).send(
        text="x", blocks=[{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]
    )
    assert (resp.status_code, resp.body) == (400, "invalid_blocks")


def test_long_email_subject_is_bounded(sink):
    email_channel(sink).send(make_message(title="line1\r\nBcc: evil@example.com " + "x" * 1000))
    subject = sink.emails[0]["subject"]
    assert "\n" not in subject and "\r" not in subject
    assert len(subject) <= 250


# -- classification --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (201, None),
        (202, None),
        (204, None),
        (299, None),
        (408, ("timeout", False)),
        (429, ("rate_limited", False)),
        (500, ("server_error", False)),
        (502, ("server_error", False)),
        (503, ("server_error", False)),
        (504, ("server_error", False)),
        (599, ("server_error", False)),
        (401, ("auth", True)),
        (403, ("auth", True)),
        (400, ("invalid", True)),
        (413, ("invalid", True)),
        (422, ("invalid", True)),
        (404, ("client_error", True)),
        (405, ("client_error", True)),
        (409, ("client_error", True)),
        (410, ("client_error", True)),
        (451, ("client_error", True)),
        (301, ("client_error", True)),
        (100, ("client_error", True)),
    ],
)
def test_classify_status_table(status, expected):
    err = classify_status(status, retry_after=3.0)
    if expected is None:
        assert err is None
        return
    assert (err.reason, err.permanent, err.status) == (*expected, status)
    assert err.reason in REASONS
    assert err.retry_after == (3.0 if not err.permanent else None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2.0),
        ("1.5", 1.5),
        (" 0 ", 0.0),
        ("-3", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_parse_retry_after_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0


def test_delivery_error_reasons_are_bounded():
    with pytest.raises(ValueError):
        DeliveryError("weird", "x", permanent=True)


def test_registry_builds_channels_by_kind(sink):
    assert set(CHANNELS) == {"email", "slack", "table", "pagerduty", "webhook"}
    assert isinstance(get_channel("slack", webhook_url=sink.slack_webhook_url), SlackChannel)
    assert isinstance(
        get_channel(
            "email",
            **{
                "api_key": API_KEY,
                "from_email": "a@example.com",
                "from_name": None,
                "recipients": ["b@example.com"],
            },
        ),
        EmailChannel,
    )
    with pytest.raises(ValueError, match="unknown channel kind"):
        get_channel("sms")


def test_message_payload_round_trips():
    message = make_message()
    assert Message.from_payload(json.loads(json.dumps(message.to_payload()))) == message


# -- capture ---------------------------------------------------------------------------------------


def test_capture_file_gets_one_line_per_accepted_message(sink):
    email_channel(sink).send(make_message())
    sink.script("resend.emails", [Reply(500)])
    with pytest.raises(DeliveryError):
        email_channel(sink).send(make_message(notification_id="notif-2"))
    SlackChannel(webhook_url=sink.slack_webhook_url).send(make_message())

    lines = [json.loads(line) for line in sink.capture_path.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["email", "slack"]
    assert "request_headers" not in lines[0]
    assert sink.wait_for(emails=1, slack=1, timeout=0.1)
    assert not sink.wait_for(emails=2, timeout=0.05)


def test_sink_runs_standalone(tmp_path):
    capture = tmp_path / "standalone.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.devkit.sink", "--port", "0", "--capture", str(capture)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        env = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(3))
        channel = SlackChannel(webhook_url=env["ALERT_SLACK_WEBHOOK_URL"], timeout=5)
        channel.send(make_message())
        EmailChannel(
            API_KEY, "alerts@example.com", None, ["ops@example.com"], api_url=env["RESEND_API_URL"]
        ).send(make_message())
        assert env["SLACK_API_URL"].endswith("/api/")
    finally:
        proc.terminate()
        proc.wait(timeout=5)
    assert proc.returncode == 0
    assert [json.loads(line)["type"] for line in capture.read_text().splitlines()] == ["slack", "email"]


@pytest.mark.parametrize("name", ["Ops, Inc.", 'Zoë "Q" Ops', "ACE Engage Alerts"])
def test_sender_names_with_specials_are_accepted(sink, name):
    email_channel(sink, from_name=name).send(make_message())
    assert sink.emails[0]["from"].endswith(" <alerts@example.com>")


def test_unconfigured_channels_fail_permanently_instead_of_crashing():
    for channel in (
        SlackChannel(),
        SlackChannel(bot_token=BOT_TOKEN),
        EmailChannel(None, "alerts@example.com", None, ["ops@example.com"]),
        EmailChannel(API_KEY, "alerts@example.com", None, []),
    ):
        err = send_error(channel, make_message())
        assert err.permanent and err.reason in ("invalid", "auth")
