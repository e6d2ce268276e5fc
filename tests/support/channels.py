"""The channel tests' messages and channels (the real SDKs against the ProviderSink), shared by
tests/channels/, the sink's tests in tests/ops/ and tests/reliability/: make_message() is an alert as
the email and Slack tests send it, paging_message() the database-down page of the PagerDuty and
webhook tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ops.devkit.sink import ProviderSink
from worker.channels.base import DeliveryError, Message
from worker.channels.email import EmailChannel

API_KEY = "re_test_key"
BOT_TOKEN = "xoxb-test-token"


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


# -- the paging channels' (PagerDuty, webhook) ---------------------------------------------------
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def paging_message(status="firing", **over) -> Message:
    """The monitored database down, paged on channel `pager` (make_message: an email's alert)."""
    base = dict(notification_id="2b0c4f2e-58a4-4c55-9a43-1c3e5f1f0a11", channel="pager", check="database_down",
                severity="critical", status=status, title="The monitored database does not answer",
                summary="database down", description="two errors in a row", labels={"system": "ace_engage"},
                value=2.0, fingerprint="fp-database-down-1", runbook="ops/runbooks/fleet.md",
                started_at=T0)
    base.update(over)
    return Message(**base)
