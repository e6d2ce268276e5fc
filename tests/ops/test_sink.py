"""The devkit's ProviderSink (ops/devkit/sink/), the Resend and Slack fake every delivery test sends to:
what it stores and serves back, the limits it enforces as the real APIs do, its capture file, and
`python -m ops.devkit.sink` standalone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests
from slack_sdk.webhook import WebhookClient

from ops.devkit.sink import ProviderSink, Reply
from tests.support.channels import API_KEY, BOT_TOKEN, email_channel, make_message
from worker.channels.base import DeliveryError
from worker.channels.email import EmailChannel
from worker.channels.slack import SlackChannel


@pytest.fixture
def sink(tmp_path):
    """The sink with its capture file (what `opsfleet demo` reads back): the root conftest's has none."""
    with ProviderSink(capture_path=tmp_path / "capture.jsonl") as s:
        yield s


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


def test_web_api_auth_test(sink):
    from slack_sdk import WebClient

    resp = WebClient(token=BOT_TOKEN, base_url=sink.slack_api_url, retry_handlers=[]).auth_test()
    assert resp["ok"] is True and resp["team_id"] == "T00000000"


def test_oversized_blocks_are_rejected_by_the_sink(sink):
    resp = WebhookClient(sink.slack_webhook_url).send(
        text="x", blocks=[{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]
    )
    assert (resp.status_code, resp.body) == (400, "invalid_blocks")


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
