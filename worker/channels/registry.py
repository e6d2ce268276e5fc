"""Build a channel of a kind from the settings (the environment) and a route's per-channel overrides.

The registry lives apart from base.py so that base imports no channel module (each channel module
imports base)."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy.engine import Engine

from worker.channels.base import Channel
from worker.channels.email import EmailChannel
from worker.channels.pagerduty import PagerDutyChannel
from worker.channels.slack import SlackChannel
from worker.channels.table import TableChannel
from worker.channels.webhook import WebhookChannel
from worker.fleet.logs import register_secrets
from worker.fleet.settings import Settings

CHANNELS: dict[str, type[Channel]] = {"email": EmailChannel, "slack": SlackChannel, "table": TableChannel,
                                      "pagerduty": PagerDutyChannel, "webhook": WebhookChannel}


def get_channel(kind: str, **options: Any) -> Channel:
    """The channel of `kind` built from its constructor arguments."""
    try:
        cls = CHANNELS[kind]
    except KeyError:
        raise ValueError(f"unknown channel kind {kind!r}; known: {', '.join(sorted(CHANNELS))}") from None
    return cls(**options)


def configured(kind: str, settings: Settings, spec: Any = None) -> tuple[str | None, str]:
    """What a pagerduty (routing key) or webhook (URL) channel sends with, and the variable it comes
    from: the one the routing.yaml channel names (routing_key_env, url_env), and only that one (a
    second service's channel never falls back to the first's key), else PAGERDUTY_ROUTING_KEY /
    ALERT_WEBHOOK_URL."""
    field, default, own = {"pagerduty": ("routing_key_env", "PAGERDUTY_ROUTING_KEY", settings.pagerduty_routing_key),
                           "webhook": ("url_env", "ALERT_WEBHOOK_URL", settings.alert_webhook_url)}[kind]
    var = getattr(spec, field, None) if spec is not None else None
    return (os.environ.get(var) or None, var) if var else (own, default)


def webhook_headers(spec: Any) -> dict[str, str]:
    """A webhook channel's headers, each from the variable headers_env names ("" where it is unset)."""
    return {h: os.environ.get(var, "") for h, var in (spec.headers_env if spec is not None else {}).items()}


def from_settings(kind: str, settings: Settings, *, recipients: list[str] | None = None,
                  slack_channel: str | None = None, monitored: Engine | None = None,
                  timeout: float = 10.0, spec: Any = None) -> Channel:
    """The channel the fleet sends `kind` through: RESEND_* / FROM_* / ALERT_EMAIL_RECIPIENTS for
    email, ALERT_SLACK_WEBHOOK_URL or SLACK_BOT_TOKEN + SLACK_CHANNEL for Slack, the monitored
    database's system_alerts for table, PAGERDUTY_ROUTING_KEY (+ PAGERDUTY_API_URL) for PagerDuty,
    ALERT_WEBHOOK_URL for a webhook; `recipients` and `slack_channel` override the environment, and
    `spec` (the routing.yaml channel) may name other variables (routing_key_env, url_env, headers_env)."""
    if kind == "pagerduty":
        key, var = configured(kind, settings, spec)
        register_secrets([key])
        return PagerDutyChannel(key, api_url=settings.pagerduty_api_url, timeout=timeout, key_setting=var)
    if kind == "webhook":
        url, var = configured(kind, settings, spec)
        headers = webhook_headers(spec)
        register_secrets([url, *headers.values()])  # a header from the environment is a credential
        return WebhookChannel(url, headers={h: v for h, v in headers.items() if v}, timeout=timeout,
                              url_setting=var, unset=[f"{spec.headers_env[h]} (header {h})"
                                                      for h, v in headers.items() if not v])
    if kind == "email":
        return EmailChannel(settings.resend_api_key, settings.from_email, settings.from_name,
                            recipients or settings.recipients, api_url=settings.resend_api_url, timeout=timeout)
    if kind == "slack":
        return SlackChannel(webhook_url=settings.alert_slack_webhook_url, bot_token=settings.slack_bot_token,
                            channel=slack_channel or settings.slack_channel, api_url=settings.slack_api_url,
                            timeout=timeout)
    if kind == "table":
        return TableChannel(monitored)
    raise ValueError(f"unknown channel kind {kind!r}; known: {', '.join(sorted(CHANNELS))}")
