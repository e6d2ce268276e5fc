"""What every route of the sink shares: scripted replies, recorded requests, responses, headers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ROUTES = (
    "resend.emails",
    "resend.emails.batch",
    "resend.emails.get",
    "resend.domains",
    "slack.webhook",
    "slack.response",
    "slack.chat.postMessage",
    "slack.chat.update",
    "slack.auth.test",
    "pagerduty.enqueue",
    "webhook",
)
@dataclass(frozen=True)
class Reply:
    """One scripted response. `body`: dict/list -> JSON, str/bytes -> as is, None -> route default."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: float = 0.0


@dataclass
class RecordedRequest:
    """Every request the sink saw, accepted or not (count attempts with these)."""

    route: str | None
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float
    status: int | None = None
    scripted: bool = False
    replayed: bool = False
    rate_limited: bool = False  # refused with 429 by the sink's own rate limit (see `rate_limits`)


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            ctype = (
                "text/html; charset=utf-8"
                if self.body.lstrip().startswith("<")
                else "text/plain; charset=utf-8"
            )
            return self.body.encode(), ctype
        return json.dumps(self.body).encode(), "application/json; charset=utf-8"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def best_effort_body(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for key, value in headers.items():
        if key.lower() == "authorization":
            scheme, _, token = value.partition(" ")
            value = f"{scheme} {token[:4]}***" if token else scheme
        out[key] = value
    return out


def header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def bearer(headers: Mapping[str, str]) -> str | None:
    value = header(headers, "authorization") or ""
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or token == "None":
        return None
    return token
