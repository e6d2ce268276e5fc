"""Notification channels: one module per provider, one interface (see base.py).

The registry lives here rather than in base.py so that base.py imports no channel module
(email.py and slack.py import base; a registry in base would make that a cycle).
"""

from __future__ import annotations

from typing import Any

from worker.channels.base import (
    REASONS,
    Channel,
    DeliveryError,
    DeliveryResult,
    Message,
    classify_status,
    parse_retry_after,
)
from worker.channels.email import EmailChannel
from worker.channels.slack import SlackChannel

CHANNELS: dict[str, type[Channel]] = {"email": EmailChannel, "slack": SlackChannel}


def get_channel(kind: str, **settings: Any) -> Channel:
    """Build the channel for `kind` ("email" or "slack") from its constructor settings."""
    try:
        cls = CHANNELS[kind]
    except KeyError:
        raise ValueError(f"unknown channel kind {kind!r}; known: {', '.join(sorted(CHANNELS))}") from None
    return cls(**settings)


__all__ = [
    "CHANNELS",
    "REASONS",
    "Channel",
    "DeliveryError",
    "DeliveryResult",
    "EmailChannel",
    "Message",
    "SlackChannel",
    "classify_status",
    "get_channel",
    "parse_retry_after",
]
