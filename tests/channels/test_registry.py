"""The channel registry (worker/channels/registry.py): a channel built by its kind."""

from __future__ import annotations

import pytest

from tests.support.channels import API_KEY
from worker.channels.email import EmailChannel
from worker.channels.registry import CHANNELS, get_channel
from worker.channels.slack import SlackChannel


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


def test_each_kind_names_the_class_that_sends_it():
    """The registry names each kind's module and class without importing them (PLACES): each class
    found there says it is that kind, and routing.yaml's kinds are the registry's and `digest`."""
    from worker.channels.registry import KINDS, PLACES, ROUTING_ONLY

    assert {kind: CHANNELS[kind].kind for kind in PLACES} == {kind: kind for kind in PLACES}
    assert KINDS == (*PLACES, *ROUTING_ONLY)
    assert "sms" not in CHANNELS and CHANNELS.get("sms") is None
