"""The one list of channel kinds. Each kind is one module under worker/channels/ whose class builds
itself from the settings (`from_settings`), says what it lacks (`problems`), probes its provider
(`probe`) and names its rate-limit target (`bucket_target`); routing.yaml's `kind:` is checked against
this list, delivery and `opsfleet health` ask it. Adding a channel is one new module, its template,
its tests and its line here.

The list names each kind's module and class; a module is imported the first time its class is asked
for (a channel built, probed or its rate read), not when the registry is: every process reads
routing.yaml (its kinds), few send email, and the providers' SDKs (resend, slack_sdk, pagerduty) cost
a quarter of a second of every start (tests/fleet/test_imports.py holds that).

The registry lives apart from base.py so that base imports no channel module (each channel module
imports base)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.channels.base import Channel

# kind -> "module:Class"; each class's `kind` is its key here (tests/channels/test_registry.py)
PLACES: dict[str, str] = {
    "email": "worker.channels.email:EmailChannel",
    "slack": "worker.channels.slack:SlackChannel",
    "table": "worker.channels.table:TableChannel",
    "pagerduty": "worker.channels.pagerduty:PagerDutyChannel",
    "webhook": "worker.channels.webhook:WebhookChannel",
}


class _Classes(Mapping[str, "type[Channel]"]):
    """kind -> class, importing a kind's module when its class is first looked up (`in` and iterating
    import nothing)."""

    def __init__(self, places: dict[str, str]) -> None:
        self._places = places

    def __getitem__(self, kind: str) -> type[Channel]:
        module, name = self._places[kind].split(":")
        return getattr(importlib.import_module(module), name)

    def __contains__(self, kind: object) -> bool:
        return kind in self._places

    def __iter__(self) -> Iterator[str]:
        return iter(self._places)

    def __len__(self) -> int:
        return len(self._places)


CHANNELS: Mapping[str, type[Channel]] = _Classes(PLACES)
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
