"""The one list of channel kinds. Each kind is one module under worker/channels/ whose class builds
itself from the settings (`from_settings`), says what it lacks (`problems`), probes its provider
(`probe`) and names its rate-limit target (`bucket_target`); routing.yaml's `kind:` is checked against
this list, delivery and `opsfleet health` ask it. Adding a channel is one new module, its template,
its tests and its line here.

The registry lives apart from base.py so that base imports no channel module (each channel module
imports base)."""

from __future__ import annotations

from typing import Any

from worker.channels.base import Channel
from worker.channels.email import EmailChannel
from worker.channels.pagerduty import PagerDutyChannel
from worker.channels.slack import SlackChannel
from worker.channels.table import TableChannel
from worker.channels.webhook import WebhookChannel

CHANNELS: dict[str, type[Channel]] = {c.kind: c for c in (EmailChannel, SlackChannel, TableChannel, PagerDutyChannel,
                                                           WebhookChannel)}
# a routing.yaml channel of kind `digest` is no transport: it names where the daily digest's
# held-back notices are counted, and is delivered through the digest's own email
ROUTING_ONLY = ("digest",)
KINDS: tuple[str, ...] = (*CHANNELS, *ROUTING_ONLY)


def channel_class(kind: str) -> type[Channel]:
    try:
        return CHANNELS[kind]
    except KeyError:
        raise ValueError(f"unknown channel kind {kind!r}; known: {', '.join(sorted(CHANNELS))}") from None


def get_channel(kind: str, **options: Any) -> Channel:
    """The channel of `kind` built from its constructor arguments."""
    return channel_class(kind)(**options)


def from_settings(kind: str, settings: Any, *, spec: Any = None, monitored: Any = None,
                  timeout: float = 10.0) -> Channel:
    """The channel the fleet sends `kind` through, from the environment and the routing.yaml channel
    `spec` (each class says what it reads)."""
    return channel_class(kind).from_settings(settings, spec, monitored=monitored, timeout=timeout)


def problems(kind: str, settings: Any, spec: Any = None) -> list[str]:
    """What a channel of `kind` lacks to deliver (empty: configured)."""
    return channel_class(kind).problems(settings, spec)
