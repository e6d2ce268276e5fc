"""The one interface every notification channel implements.

A channel turns a `Message` into one provider call. It returns a `DeliveryResult` or raises a
`DeliveryError` whose `reason` comes from a fixed set (safe as a metric label) and whose
`permanent` flag tells the caller whether a retry can help. Retrying is the caller's job
(notify.deliver, with backoff that honours `retry_after`); channels never retry.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from worker.fleet.timeutil import human_duration

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
    # what was gathered when the alert fired (worker.checks.evidence.compact): per section its title,
    # its first lines, how many more the alert's page shows, or why it could not be gathered
    evidence: list[dict[str, Any]] = field(default_factory=list)
    # the fixes it proposes (worker.actions): id, kind, dry_run, confirm: approved by a button or a link
    actions: list[dict[str, Any]] = field(default_factory=list)

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

    def evidence_lines(self, width: int = 300) -> list[tuple[str, list[str]]]:
        """The evidence as channels print it: (section title, its lines), each line at most `width`
        characters; a section's last line says how many more rows its page shows, or why it failed."""
        out = []
        for section in self.evidence:
            if not isinstance(section, dict):
                continue
            lines = [str(line) if len(str(line)) <= width else str(line)[:width - 1] + "…"
                     for line in section.get("lines") or []]
            if section.get("error"):
                lines = [f"could not be gathered: {str(section['error'])[:width]}"]
            elif not lines:
                lines = ["nothing found"]
            more = int(section.get("more") or 0)
            if more or section.get("truncated"):
                lines.append(f"… {more} more on the alert's page" if more else "… more on the alert's page")
            out.append((str(section.get("title") or section.get("name") or "evidence"), lines))
        return out

    @property
    def details(self) -> list[str]:
        """The summary and the description, each only when it says more than the title and than the
        other: what a channel shows below the title. The engine makes the title from the summary, and a
        check's description may say the same, so printing all three repeats the same words."""
        out: list[str] = []
        for text in (self.summary, self.description):
            if (t := (text or "").strip()) and t != self.title.strip() and t not in out:
                out.append(t)
        return out

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


def safe_url(url: str | None) -> str | None:
    """The URL if it is http(s) with a host (safe for an href), else None."""
    if not url:
        return None
    parts = urlsplit(url.strip())
    if parts.scheme in ("http", "https") and parts.netloc:
        return url.strip()
    return None


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
    """One channel kind. Instances are cheap; build one per delivery or cache per settings.

    A channel owns everything about its kind: how it is built from the settings and its routing.yaml
    entry (`from_settings`), what it lacks to deliver (`problems`) and how `opsfleet health --probe`
    checks it without sending (`probe`), which provider target its rate-limit bucket stands for
    (`bucket_target`, at `rate_limit` by default), and what it does with the provider's answer to the
    alert's earlier message (`send(message, previous)`: Slack threads and updates). The registry lists
    the kinds; nothing else spells one out."""

    kind: ClassVar[str]
    # the provider's limit, just under it: (messages per second, burst) of the bucket every worker
    # shares for one provider target; None: not rate limited
    rate_limit: ClassVar[tuple[float, int] | None] = None
    # folds what waits behind its bucket into one summary message (email and Slack)
    folds: ClassVar[bool] = False
    # when `opsfleet health` calls `probe`: always (it sends nothing), on_request (--probe: a call
    # of the provider's that sends nothing), never (every call delivers something: the default
    # probe only says so)
    probing: ClassVar[str] = "never"

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Any, spec: Any = None, *, monitored: Any = None,
                      timeout: float = 10.0) -> Channel:
        """The channel the fleet sends through: the environment's settings, overridden by the
        routing.yaml channel `spec` (recipients, slack_channel, the variables it names)."""

    @classmethod
    def problems(cls, settings: Any, spec: Any = None) -> list[str]:
        """What this channel lacks to deliver (empty: configured)."""
        return []

    @classmethod
    def probe(cls, settings: Any, spec: Any, timeout: float, monitored: Any = None) -> tuple[str, str]:
        """`opsfleet health`: (ok | fail, detail) once `problems` is empty; --probe asks this only of
        the channels whose provider has a call that sends nothing."""
        return "ok", f"{cls.kind} configured (not probed: every call of its API delivers something)"

    @classmethod
    def bucket_target(cls, settings: Any, name: str) -> str:
        """The provider target one rate-limit bucket stands for (shared by every channel of the
        routing that sends through the same account or webhook)."""
        return f"{cls.kind}:{name}"

    @abstractmethod
    def send(self, message: Message, previous: dict[str, Any] | None = None) -> DeliveryResult:
        """Deliver once. Raise DeliveryError on failure; never retry internally. `previous` is what
        the provider answered to this alert's first message on this channel (fleet.alerts.last_notified)."""


def http_json(url: str, headers: dict[str, str], timeout: float, method: str = "GET",
              data: bytes | None = None) -> tuple[int, dict]:
    """One plain HTTP call for a health probe: (status, JSON body or {})."""
    req = urllib.request.Request(url, headers={"User-Agent": "opsfleet-health", **headers}, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - configured provider URLs
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
