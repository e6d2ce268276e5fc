"""PagerDuty's Events API v2 (POST /v2/enqueue) and a generic Alertmanager-style webhook receiver
(POST /hooks/<name>) on the sink, each validating as the real receiver does.

PagerDuty: 202 {"status": "success", "message": "Event processed", "dedup_key": ...}; an event
without a routing key, a known event_action, or (for a trigger) payload.summary/source/severity is
400 {"status": "invalid event", "message": "Event object is invalid", "errors": [...]}; the open
incidents are kept by dedup_key (a trigger of an open key is deduplicated, a resolve closes it)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from ops.devkit.sink.base import RecordedRequest, Response, best_effort_body

PD_SEVERITIES = ("critical", "error", "warning", "info")
PD_ACTIONS = ("trigger", "acknowledge", "resolve")


def pagerduty_error(status: int) -> Response:
    if status == 429:
        return Response(429, {"status": "throttle event",
                              "message": "Requests for this service are arriving too quickly. Please retry later."})
    if status >= 500:
        return Response(status, {"status": "internal error", "message": "An internal error occurred."})
    if status == 400:
        return Response(400, {"status": "invalid event", "message": "Event object is invalid", "errors": ["invalid"]})
    return Response(status, {"status": "error", "message": f"HTTP {status}"})


class PagingRoutes:
    """Mixin of ProviderSink: state in `_pagerduty_events`, `_pagerduty_incidents`, `_webhooks`."""

    pagerduty_routing_keys: set[str] | None

    def _reset_paging(self) -> None:
        self._pagerduty_events: list[dict[str, Any]] = []
        self._pagerduty_incidents: dict[str, dict[str, Any]] = {}
        self._webhooks: list[dict[str, Any]] = []

    @property
    def pagerduty_api_url(self) -> str:
        return self.url  # type: ignore[attr-defined]

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/hooks/alerts"  # type: ignore[attr-defined]

    @property
    def pagerduty_events(self) -> list[dict[str, Any]]:
        with self._lock:  # type: ignore[attr-defined]
            return list(self._pagerduty_events)

    @property
    def pagerduty_incidents(self) -> dict[str, dict[str, Any]]:
        """dedup_key -> {"status": "triggered" | "acknowledged" | "resolved", "summary", "events"}."""
        with self._lock:  # type: ignore[attr-defined]
            return {k: dict(v) for k, v in self._pagerduty_incidents.items()}

    @property
    def webhooks(self) -> list[dict[str, Any]]:
        """Every accepted webhook POST: {"path", "headers", "body"}."""
        with self._lock:  # type: ignore[attr-defined]
            return list(self._webhooks)

    def _pagerduty(self, rec: RecordedRequest, raw: bytes) -> Response:
        event = best_effort_body(raw)
        errors: list[str] = []
        if not isinstance(event, dict):
            return Response(400, {"status": "invalid event", "message": "Event object is invalid",
                                  "errors": ["Event object must be a JSON object"]})
        key = event.get("routing_key")
        if not isinstance(key, str) or len(key) != 32:
            errors.append("'routing_key' must be a 32 character string")
        elif self.pagerduty_routing_keys is not None and key not in self.pagerduty_routing_keys:
            errors.append("'routing_key' is not a valid integration key")
        action = event.get("event_action")
        if action not in PD_ACTIONS:
            errors.append("'event_action' must be one of trigger, acknowledge, resolve")
        dedup = event.get("dedup_key")
        if action in ("acknowledge", "resolve") and not dedup:
            errors.append("'dedup_key' is required for acknowledge and resolve events")
        if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        if action == "trigger":
            payload = event.get("payload")
            if not isinstance(payload, dict):
                errors.append("'payload' is required for trigger events")
            else:
                summary = payload.get("summary")
                if not isinstance(summary, str) or not summary or len(summary) > 1024:
                    errors.append("'payload.summary' must be a string of 1 to 1024 characters")
                if not isinstance(payload.get("source"), str) or not payload.get("source"):
                    errors.append("'payload.source' is required")
                if payload.get("severity") not in PD_SEVERITIES:
                    errors.append("'payload.severity' must be one of critical, error, warning, info")
                if "custom_details" in payload and not isinstance(payload["custom_details"], dict | str):
                    errors.append("'payload.custom_details' must be an object")
        if errors:
            return Response(400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors})
        dedup = dedup or uuid.uuid4().hex
        record = {"event": event, "dedup_key": dedup, "at": time.time()}
        self._pagerduty_events.append(record)
        incident = self._pagerduty_incidents.get(dedup)
        if action == "trigger":
            if incident is None or incident["status"] == "resolved":
                incident = {"status": "triggered", "summary": event["payload"]["summary"], "events": 0}
                self._pagerduty_incidents[dedup] = incident
            incident["events"] += 1  # a trigger of an open incident is deduplicated into it
        elif incident is not None and incident["status"] != "resolved":
            incident["status"] = "resolved" if action == "resolve" else "acknowledged"
            incident["events"] += 1
        self._capture("pagerduty", record)  # type: ignore[attr-defined]
        return Response(202, {"status": "success", "message": "Event processed", "dedup_key": dedup})

    def _webhook(self, rec: RecordedRequest, raw: bytes) -> Response:
        body = best_effort_body(raw)
        if not isinstance(body, dict):
            return Response(400, "body must be a JSON object")
        record = {"path": rec.path, "headers": dict(rec.headers), "body": body, "at": time.time()}
        self._webhooks.append(record)
        self._capture("webhook", record)  # type: ignore[attr-defined]
        return Response(200, {"status": "ok"})
