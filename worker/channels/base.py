"""The one interface every notification channel implements.

A channel turns a `Message` into one provider call. It returns a `DeliveryResult` or raises a
`DeliveryError` whose `reason` comes from a fixed set (safe as a metric label) and whose
`permanent` flag tells the caller whether a retry can help. Retrying is the caller's job
(notify.deliver, with backoff that honours `retry_after`); channels never retry.
"""

from __future__ import annotations

import email.utils
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

    def to_payload(self) -> dict[str, Any]:
        """JSON-safe dict (for the outbox row and Celery's JSON serializer)."""
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat() if self.started_at else None
        return data

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> Message:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        started = values.get("started_at")
        if isinstance(started, str):
            values["started_at"] = datetime.fromisoformat(started)
        return cls(**values)


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
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class Channel(ABC):
    """One channel kind. Instances are cheap; build one per delivery or cache per settings."""

    kind: ClassVar[str]

    @abstractmethod
    def send(self, message: Message) -> DeliveryResult:
        """Deliver once. Raise DeliveryError on failure; never retry internally."""
