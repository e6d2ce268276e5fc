"""The one interface every notification channel implements.

A channel turns a `Message` into one provider call. It returns a `DeliveryResult` or raises a
`DeliveryError` whose `reason` comes from a fixed set (safe as a metric label) and whose
`permanent` flag tells the caller whether a retry can help. Retrying is the caller's job
(notify.deliver, with backoff that honours `retry_after`); channels never retry.
"""

from __future__ import annotations

import email.utils
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

Reason = Literal["timeout", "connection", "server_error", "rate_limited", "client_error", "auth", "invalid"]
REASONS: tuple[str, ...] = (
    "timeout",
    "connection",
    "server_error",
    "rate_limited",
    "client_error",
    "auth",
    "invalid",
)
TRANSIENT_REASONS = frozenset({"timeout", "connection", "server_error", "rate_limited"})

Status = Literal["firing", "resolved", "test"]


@dataclass
class Message:
    """What a channel renders: one alert transition (or a test) for one channel."""

    notification_id: str
    channel: str
    check: str
    severity: str
    status: Status
    title: str
    summary: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    value: float | None = None
    fingerprint: str = ""
    runbook: str | None = None
    started_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    condition: str = ""  # the check's condition ("> 5"): what the value is measured against
    ended_at: datetime | None = None  # a resolved notice: when the alert stopped firing
    alerts: list[Message] = field(default_factory=list)  # a grouped message's alerts, worst first; else []
    public_url: str | None = None  # OPSFLEET_PUBLIC_URL: where the status page links point

    def to_payload(self) -> dict[str, Any]:
        """JSON-safe dict (for the outbox row and Celery's JSON serializer)."""
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat() if self.started_at else None
        data["ended_at"] = self.ended_at.isoformat() if self.ended_at else None
        data["alerts"] = [a.to_payload() for a in self.alerts]
        return data

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> Message:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("started_at", "ended_at"):
            if isinstance(values.get(key), str):
                values[key] = datetime.fromisoformat(values[key])
        values["alerts"] = [cls.from_payload(a) for a in values.get("alerts") or []]
        return cls(**values)

    @property
    def rows(self) -> list[Message]:
        """The alerts this message tells of, one row each: a grouped message's, else itself."""
        return self.alerts or [self]

    @property
    def fired_for(self) -> str | None:
        """A resolved notice's firing time, `1h 05m`; None when unknown."""
        if self.status != "resolved" or self.started_at is None or self.ended_at is None:
            return None
        return human_duration((self.ended_at - self.started_at).total_seconds())

    @property
    def value_text(self) -> str | None:
        """`7.5 (> 5)`: the value against its condition; None without a value."""
        if self.value is None:
            return None
        value = f"{self.value:g}" if isinstance(self.value, float) else str(self.value)
        return f"{value} ({self.condition})" if self.condition else value

    def links(self) -> dict[str, str]:
        """The status page's view of this alert and its silence form, when OPSFLEET_PUBLIC_URL is set."""
        if not self.public_url or not self.fingerprint:
            return {}
        base = f"{self.public_url.rstrip('/')}/alerts/{self.fingerprint}"
        return {"alert": base, "silence": f"{base}#silence"}

    def runbook_link(self) -> str | None:
        """The runbook: a URL as it is, a path under ops/runbooks/ served by the status page."""
        if not self.runbook:
            return None
        if self.runbook.startswith(("http://", "https://")):
            return self.runbook
        if self.public_url and self.runbook.startswith("ops/runbooks/"):
            return f"{self.public_url.rstrip('/')}/runbooks/{self.runbook.removeprefix('ops/runbooks/')}"
        return None


def human_duration(seconds: float) -> str:
    """45s, 12m 05s, 3h 07m, 2d 04h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


@dataclass
class DeliveryResult:
    provider_id: str | None
    detail: dict[str, Any] = field(default_factory=dict)


class DeliveryError(Exception):
    """A failed delivery. `permanent` means: do not retry, mark the notification dead."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        permanent: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown delivery error reason {reason!r}; expected one of {REASONS}")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        self.status = status

    @property
    def transient(self) -> bool:
        return not self.permanent

    def __repr__(self) -> str:
        return (
            f"DeliveryError(reason={self.reason!r}, permanent={self.permanent}, status={self.status}, "
            f"retry_after={self.retry_after}, message={self.message!r})"
        )


def classify_status(status: int, retry_after: float | None = None, message: str = "") -> DeliveryError | None:
    """The retry table for HTTP statuses: None for 2xx, otherwise the error to raise.

    408, 429 and 5xx are transient; 401/403 are a permanent auth failure; 400/413/422 mean the
    provider rejected the payload (permanent "invalid"); any other status (other 4xx, and 1xx/3xx,
    which a JSON API never answers to a POST unless the URL is wrong) is a permanent client error.
    """
    text = message or f"HTTP {status}"
    if 200 <= status < 300:
        return None
    if status == 408:
        return DeliveryError("timeout", text, permanent=False, retry_after=retry_after, status=status)
    if status == 429:
        return DeliveryError("rate_limited", text, permanent=False, retry_after=retry_after, status=status)
    if 500 <= status < 600:
        return DeliveryError("server_error", text, permanent=False, retry_after=retry_after, status=status)
    if status in (401, 403):
        return DeliveryError("auth", text, permanent=True, status=status)
    if status in (400, 413, 422):
        return DeliveryError("invalid", text, permanent=True, status=status)
    return DeliveryError("client_error", text, permanent=True, status=status)


def header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    """Case-insensitive header lookup over a plain dict (SDKs hand us dicts with the server's casing)."""
    if not headers:
        return None
    wanted = name.lower()
    for key, value in headers.items():
        if str(key).lower() == wanted:
            if isinstance(value, list | tuple):
                value = value[0] if value else None
            return None if value is None else str(value)
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds ("2", "1.5") or an HTTP-date. None if absent or garbage."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):  # NaN, and "inf" / "1e400": no wait (found by tests/reliability)
        return None
    return max(0.0, seconds)


class Channel(ABC):
    """One channel kind. Instances are cheap; build one per delivery or cache per settings."""

    kind: ClassVar[str]

    @abstractmethod
    def send(self, message: Message) -> DeliveryResult:
        """Deliver once. Raise DeliveryError on failure; never retry internally."""
