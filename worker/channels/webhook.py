"""A generic webhook: POST of Alertmanager's webhook body (version 4), so any receiver built for
Alertmanager (SMS gateways, incident tools, chat bridges) works unchanged.

    {"version": "4", "groupKey": ..., "truncatedAlerts": 0, "status": "firing" | "resolved",
     "receiver": <channel name>, "groupLabels": {...}, "commonLabels": {...},
     "commonAnnotations": {...}, "externalURL": ..., "alerts": [{"status", "labels", "annotations",
     "startsAt", "endsAt", "generatorURL", "fingerprint"}]}

Headers come from the environment (a channel names the variables, never the secrets), and every
request carries the notification id as `Idempotency-Key`, so a receiver can drop a retried delivery.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from typing import Any

import requests

from worker.channels.base import (
    Channel,
    DeliveryError,
    DeliveryResult,
    Message,
    classify_status,
    header,
    parse_retry_after,
)
from worker.fleet.logs import register_secrets

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing


def url_of(settings: Any, spec: Any = None) -> tuple[str | None, str]:
    """The URL a channel posts to, and the variable it comes from: the one its routing.yaml entry names
    (url_env), and only that one, else ALERT_WEBHOOK_URL."""
    var = getattr(spec, "url_env", None) if spec is not None else None
    return (os.environ.get(var) or None, var) if var else (settings.alert_webhook_url, "ALERT_WEBHOOK_URL")


def headers_of(spec: Any) -> dict[str, str]:
    """A webhook channel's headers, each from the variable headers_env names ("" where it is unset)."""
    return {h: os.environ.get(var, "") for h, var in (spec.headers_env if spec is not None else {}).items()}


class WebhookChannel(Channel):
    kind = "webhook"

    @classmethod
    def from_settings(cls, settings: Any, spec: Any = None, *, monitored: Any = None,
                      timeout: float = 10.0) -> WebhookChannel:
        """ALERT_WEBHOOK_URL (or the variable url_env names), headers from headers_env's variables."""
        url, var = url_of(settings, spec)
        headers = headers_of(spec)
        register_secrets([url, *headers.values()])  # a header from the environment is a credential
        return cls(url, headers={h: v for h, v in headers.items() if v}, timeout=timeout, url_setting=var,
                   unset=[f"{spec.headers_env[h]} (header {h})" for h, v in headers.items() if not v])

    @classmethod
    def problems(cls, settings: Any, spec: Any = None) -> list[str]:
        url, var = url_of(settings, spec)
        return ([] if url else [f"{var} not set"]) + [
            f"{spec.headers_env[h]} not set (header {h})" for h, v in headers_of(spec).items() if not v]

    def __init__(self, url: str | None, *, headers: dict[str, str] | None = None, timeout: float = 10.0,
                 external_url: str = "", url_setting: str = "ALERT_WEBHOOK_URL",
                 unset: list[str] | None = None) -> None:
        self.url = url
        self.unset = list(unset or [])  # "VAR (header H)": a header whose variable is empty
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.external_url = external_url
        self.url_setting = url_setting

    def body(self, message: Message, *, now: datetime | None = None) -> dict[str, Any]:
        """The Alertmanager v4 body for `message`: one alert, its group the check."""
        now = now or datetime.now(UTC)
        status = "resolved" if message.status == "resolved" else "firing"
        labels = {**{k: str(v) for k, v in message.labels.items()}, "alertname": message.check,
                  "severity": message.severity}
        annotations = {"summary": message.title}
        if message.details:  # what the summary and the description say beyond the title, once
            annotations["description"] = "\n\n".join(message.details)
        if message.evidence:  # Alertmanager's annotations are strings: one text, a block per section
            annotations["evidence"] = "\n\n".join(title + ":\n" + "\n".join(lines)
                                                   for title, lines in message.evidence_lines())
        if message.runbook:
            annotations["runbook_url"] = message.runbook
        if message.value is not None:
            annotations["value"] = f"{message.value:g}"
        if message.status == "test":
            labels["test"] = "true"
        fingerprint = message.fingerprint or hashlib.sha256(message.notification_id.encode()).hexdigest()[:16]
        alert = {"status": status, "labels": labels, "annotations": annotations,
                 "startsAt": _time(message.started_at or now),
                 "endsAt": _time(now) if status == "resolved" else ZERO_TIME,
                 "generatorURL": "", "fingerprint": fingerprint}
        group = {"alertname": message.check}
        return {"version": "4", "groupKey": f'{{}}:{{alertname="{message.check}"}}', "truncatedAlerts": 0,
                "status": status, "receiver": message.channel, "groupLabels": group, "commonLabels": labels,
                "commonAnnotations": annotations, "externalURL": self.external_url, "alerts": [alert]}

    def send(self, message: Message, previous: dict[str, Any] | None = None) -> DeliveryResult:
        """One POST of Alertmanager's webhook body; the receiver keys an alert by its fingerprint."""
        if not self.url:
            raise DeliveryError("invalid", f"{self.url_setting} is not set: the webhook channel has no URL", permanent=True)
        if self.unset:  # sent without it, the receiver would answer 401 and hide why
            raise DeliveryError("invalid", f"{', '.join(self.unset)} not set: the webhook channel's headers_env",
                                permanent=True)
        headers = {"Content-Type": "application/json", "User-Agent": "opsfleet",
                   **self.headers, "Idempotency-Key": message.notification_id}
        try:
            resp = requests.post(self.url, json=self.body(message), headers=headers, timeout=self.timeout,
                                 allow_redirects=False)
        except requests.Timeout as exc:
            raise DeliveryError("timeout", f"webhook request timed out: {exc}", permanent=False) from exc
        except requests.RequestException as exc:
            raise DeliveryError("connection", f"webhook connection failed: {exc}", permanent=False) from exc
        err = classify_status(resp.status_code, parse_retry_after(header(dict(resp.headers), "Retry-After")),
                              f"webhook {resp.status_code}: {(resp.text or '').strip()[:200]}")
        if err is not None:
            raise err
        return DeliveryResult(provider_id=None, detail={"provider": "webhook", "status": resp.status_code})


def _time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
