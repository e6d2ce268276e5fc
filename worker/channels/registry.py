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


def from_settings(kind: str, settings: Settings, *, recipients: list[str] | None = None,
                  slack_channel: str | None = None, monitored: Engine | None = None,
                  timeout: float = 10.0, spec: Any = None) -> Channel:
    """The channel the fleet sends `kind` through: RESEND_* / FROM_* / ALERT_EMAIL_RECIPIENTS for
    email, ALERT_SLACK_WEBHOOK_URL or SLACK_BOT_TOKEN + SLACK_CHANNEL for Slack, the monitored
    database's system_alerts for table, PAGERDUTY_ROUTING_KEY (+ PAGERDUTY_API_URL) for PagerDuty,
    ALERT_WEBHOOK_URL for a webhook; `recipients` and `slack_channel` override the environment, and
    `spec` (the routing.yaml channel) may name other variables (routing_key_env, url_env, headers_env)."""
    if kind == "pagerduty":
        key = os.environ.get(spec.routing_key_env) if spec is not None and spec.routing_key_env else None
        register_secrets([key])
        return PagerDutyChannel(key or settings.pagerduty_routing_key, api_url=settings.pagerduty_api_url,
                                timeout=timeout)
    if kind == "webhook":
        url_env = spec.url_env if spec is not None and spec.url_env else None
        url = os.environ.get(url_env) if url_env else settings.alert_webhook_url
        headers = {h: os.environ.get(var, "") for h, var in (spec.headers_env if spec is not None else {}).items()}
        register_secrets([url, *headers.values()])  # a header from the environment is a credential
        return WebhookChannel(url, headers={h: v for h, v in headers.items() if v}, timeout=timeout,
                              url_setting=url_env or "ALERT_WEBHOOK_URL")
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
