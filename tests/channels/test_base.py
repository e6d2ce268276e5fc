"""What every channel shares (worker/channels/base.py): the retry table over HTTP statuses, Retry-After,
the bounded failure reasons, the message's payload, and a channel without its settings failing
permanently instead of crashing."""

from __future__ import annotations

import json

import pytest

from tests.support.channels import API_KEY, BOT_TOKEN, make_message, send_error
from worker.channels.base import REASONS, DeliveryError, Message, classify_status, parse_retry_after
from worker.channels.email import EmailChannel
from worker.channels.slack import SlackChannel


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
    if expected is None:  # 2xx: no error
        assert err is None
    else:
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


def test_message_payload_round_trips():
    message = make_message()
    assert Message.from_payload(json.loads(json.dumps(message.to_payload()))) == message


def test_unconfigured_channels_fail_permanently_instead_of_crashing():
    for channel in (
        SlackChannel(),
        SlackChannel(bot_token=BOT_TOKEN),
        EmailChannel(None, "alerts@example.com", None, ["ops@example.com"]),
        EmailChannel(API_KEY, "alerts@example.com", None, []),
    ):
        err = send_error(channel, make_message())
        assert err.permanent and err.reason in ("invalid", "auth")
