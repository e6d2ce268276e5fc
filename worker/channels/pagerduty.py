"""PagerDuty through the Events API v2, with PagerDuty's own client (PyPI `pagerduty`).

The alert's fingerprint is the event's `dedup_key`: firing is a `trigger`, resolved a `resolve` of the
same key, and a repeat is another `trigger` that PagerDuty deduplicates into the open incident (so a
retry after a timeout never opens a second one). The client's own retries (429 without limit, 5xx,
network errors, each with sleeps) are turned off: a channel tries once, and notify.deliver retries
with the outbox's backoff, honouring Retry-After.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx2
from pagerduty import EventsApiV2Client
from pagerduty.errors import Error as PagerDutyError
from pagerduty.errors import HttpError

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
from worker.fleet.settings import is_loopback_http

DEFAULT_API_URL = "https://events.pagerduty.com"
# opsfleet's severities onto the Events API's four (critical, error, warning, info)
SEVERITY = {"critical": "critical", "high": "error", "warning": "warning", "medium": "warning", "info": "info"}
SUMMARY_LIMIT = 1024  # the Events API truncates payload.summary there

_quiet = logging.getLogger("opsfleet.channels.pagerduty.client")
_quiet.disabled = True  # the client logs its own retry decisions, which are turned off here


def routing_key(settings: Any, spec: Any = None) -> tuple[str | None, str]:
    """The routing key a channel sends with, and the variable it comes from: the one its routing.yaml
    entry names (routing_key_env), and only that one (a second service's channel never falls back to
    the first's key), else PAGERDUTY_ROUTING_KEY."""
    var = getattr(spec, "routing_key_env", None) if spec is not None else None
    return (os.environ.get(var) or None, var) if var else (settings.pagerduty_routing_key, "PAGERDUTY_ROUTING_KEY")


class PagerDutyChannel(Channel):
    kind = "pagerduty"

    @classmethod
    def from_settings(cls, settings: Any, spec: Any = None, *, monitored: Any = None,
                      timeout: float = 10.0) -> PagerDutyChannel:
        """PAGERDUTY_ROUTING_KEY (or the variable routing_key_env names), PAGERDUTY_API_URL."""
        key, var = routing_key(settings, spec)
        register_secrets([key])
        return cls(key, api_url=settings.pagerduty_api_url, timeout=timeout, key_setting=var)

    @classmethod
    def problems(cls, settings: Any, spec: Any = None) -> list[str]:
        key, var = routing_key(settings, spec)
        return [] if key else [f"{var} not set"]

    def __init__(self, routing_key: str | None, *, api_url: str | None = None, timeout: float = 10.0,
                 source: str = "opsfleet", key_setting: str = "PAGERDUTY_ROUTING_KEY") -> None:
        self.routing_key = routing_key
        self.key_setting = key_setting
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.timeout = timeout
        self.source = source

    def _client(self) -> EventsApiV2Client:
        if self.api_url.startswith("https://"):
            client = EventsApiV2Client(self.routing_key or "", base_url=self.api_url)
        elif is_loopback_http(self.api_url):
            # the client insists on https://; a fake of the Events API on this machine speaks http
            client = EventsApiV2Client(self.routing_key or "")
            client._url = self.api_url  # noqa: SLF001 - the property's setter refuses http://
        else:
            raise DeliveryError("invalid", f"PAGERDUTY_API_URL must be https:// (got {self.api_url!r})", permanent=True)
        client.timeout = self.timeout
        # one attempt: every retried status answers at once (a limit below zero is always exceeded),
        # and a network error is raised on the first try
        client.retry = {429: 1, 500: 1, 502: 1, 503: 1, 504: 1}
        client.max_http_attempts = -1
        client.max_network_attempts = 0
        client.log = _quiet
        return client

    def event(self, message: Message) -> dict[str, Any]:
        """The Events API v2 event for `message` (what `send` posts, less the routing key)."""
        key = message.fingerprint or f"opsfleet-{message.notification_id}"
        if message.status == "resolved":
            return {"event_action": "resolve", "dedup_key": key}
        details: dict[str, Any] = {"check": message.check, "severity": message.severity, "labels": message.labels}
        if message.value is not None:
            details["value"] = message.value
        if message.details:  # below the title (the event's summary): said once
            details["description"] = "\n\n".join(message.details)
        if message.evidence:  # what was gathered when it fired, a few lines per section
            details["evidence"] = {title: lines for title, lines in message.evidence_lines()}
        if message.started_at is not None:
            details["firing_since"] = message.started_at.isoformat()
        if message.runbook:
            details["runbook"] = message.runbook
        title = message.title if message.status != "test" else f"[TEST] {message.title}"
        return {"event_action": "trigger", "dedup_key": key, "payload": {
            "summary": title[:SUMMARY_LIMIT], "source": message.labels.get("instance") or self.source,
            "severity": SEVERITY.get(message.severity, "critical"), "component": message.check,
            "group": message.labels.get("system") or None, "class": message.check,
            "custom_details": details}}

    def send(self, message: Message, previous: dict[str, Any] | None = None) -> DeliveryResult:
        """One Events API v2 event; the alert's fingerprint is its dedup_key, so `previous` is not needed."""
        if not self.routing_key:
            raise DeliveryError("auth", f"{self.key_setting} is not set", permanent=True)
        event = self.event(message)
        payload = event.get("payload")
        if payload is not None:
            payload = {k: v for k, v in payload.items() if v is not None}
        properties = {"payload": payload} if payload is not None else {}
        try:
            key = self._client().send_event(event["event_action"], dedup_key=event["dedup_key"], **properties)
        except HttpError as exc:
            raise map_http_error(exc) from exc
        except PagerDutyError as exc:
            raise _transport_error(exc) from exc
        except httpx2.TransportError as exc:
            raise _transport_error(exc) from exc
        return DeliveryResult(provider_id=key, detail={"provider": "pagerduty", "action": event["event_action"]})


def map_http_error(exc: HttpError) -> DeliveryError:
    """An Events API answer that is not 202, as the retry table says (429 and 5xx retried)."""
    response = exc.response
    status = response.status_code if response is not None else 500
    headers = dict(response.headers) if response is not None else {}
    text = _error_text(response) or f"HTTP {status}"
    err = classify_status(status, parse_retry_after(header(headers, "Retry-After")), f"PagerDuty {status}: {text}")
    return err or DeliveryError("server_error", f"PagerDuty {status}: {text}", permanent=False, status=status)


def _error_text(response: Any) -> str:
    """The Events API's error body: {"status": "invalid event", "message": ..., "errors": [...]}."""
    if response is None:
        return ""
    try:
        body = response.json()
    except ValueError:
        return (response.text or "")[:200]
    if not isinstance(body, dict):
        return str(body)[:200]
    parts = [str(body.get("message") or body.get("status") or "")]
    parts += [str(e) for e in body.get("errors") or []][:3]
    return "; ".join(p for p in parts if p)[:300]


def _transport_error(exc: BaseException) -> DeliveryError:
    """A timeout or a refused connection, found under the client's own Error."""
    cur: BaseException | None = exc
    seen: set[int] = set()
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, httpx2.TimeoutException):
            return DeliveryError("timeout", f"PagerDuty request timed out: {cur}", permanent=False)
        if isinstance(cur, httpx2.TransportError):
            return DeliveryError("connection", f"PagerDuty connection failed: {cur}", permanent=False)
        cur = cur.__cause__ or cur.__context__
    return DeliveryError("server_error", f"PagerDuty: {exc}", permanent=False)
