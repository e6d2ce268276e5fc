"""A loopback HTTP server that speaks the Resend and Slack HTTP APIs.

`opsfleet demo` points RESEND_API_URL / ALERT_SLACK_WEBHOOK_URL / SLACK_API_URL at it to capture
every outgoing message locally; tests use it as the provider fake, driving the real SDKs.

    with ProviderSink(capture_path="out.jsonl") as sink:
        EmailChannel(..., api_url=sink.resend_api_url).send(msg)
        sink.script("resend.emails", [Reply(500), Reply(429, headers={"Retry-After": "2"})])
        assert len(sink.emails) == 1

Routes (names for `script`):

    resend.emails           POST /emails                   {"id": ...}; Idempotency-Key honoured
    resend.emails.batch     POST /emails/batch             {"data": [{"id": ...}, ...]}; max 100
    resend.emails.get       GET  /emails/{id}              the stored email
    slack.webhook           POST /services/T.../B.../...   "ok" | 400 invalid_payload | 404 no_service
    slack.chat.postMessage  POST /api/chat.postMessage     {"ok": true, "channel", "ts", "message"}
    slack.chat.update       POST /api/chat.update          needs the channel id and an existing ts
    slack.auth.test         POST /api/auth.test

A scripted `Reply` replaces the next response of its route. A 2xx Reply without a body means
"process normally" (so `Reply(hang=5)` accepts and records the message, then stalls before
answering: the provider got it but the client never hears back, and a retry with the same
Idempotency-Key replays the original answer instead of recording a second email). A non-2xx Reply
answers with that provider's realistic error body for the status unless `body` is given.

Optional rate limits (off by default): `ProviderSink(rate_limits={"resend": 2.0, "slack": 1.0})` keeps a
token bucket per provider target (Resend: per API key, i.e. per team; Slack: per webhook URL or per
channel of the Web API) and answers a request over the limit the way the provider does: 429 with
Retry-After (Resend's rate_limit_exceeded JSON with its ratelimit-* headers; Slack's "rate_limited"
webhook body or {"ok": false, "error": "ratelimited"}). A value is the rate per second, or
(rate, burst); the burst defaults to max(1, int(rate)). A request refused this way takes no token, is
not recorded as a message, and is marked `rate_limited` in `requests`. Scripted replies bypass it.

Run standalone: `python -m worker.sink --port 8025 --capture /tmp/opsfleet-sink.jsonl`
(add `--rate-limit resend=2 --rate-limit slack=1` to enforce the providers' limits).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROUTES = (
    "resend.emails",
    "resend.emails.batch",
    "resend.emails.get",
    "slack.webhook",
    "slack.chat.postMessage",
    "slack.chat.update",
    "slack.auth.test",
)
DEFAULT_WEBHOOK_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
IDEMPOTENCY_TTL = 24 * 3600.0  # Resend keeps idempotency keys for 24 hours
RESEND_MAX_BATCH = 100
RESEND_MAX_RECIPIENTS = 50
SLACK_TEXT_MAX = 40000
_EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_CHANNEL_ID_RE = re.compile(r"^[CGD][A-Z0-9]{8,}$")
RATE_LIMITED_PROVIDERS = ("resend", "slack")


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
class _Response:
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


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _best_effort_body(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def _redact(headers: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for key, value in headers.items():
        if key.lower() == "authorization":
            scheme, _, token = value.partition(" ")
            value = f"{scheme} {token[:4]}***" if token else scheme
        out[key] = value
    return out


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = _header(headers, "authorization") or ""
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or token == "None":
        return None
    return token


# -- realistic error bodies ---------------------------------------------------------------------


def _resend_error(status: int, name: str, message: str) -> _Response:
    return _Response(status, {"statusCode": status, "name": name, "message": message})


def _resend_default(status: int) -> _Response:
    if status == 429:
        resp = _resend_error(
            429,
            "rate_limit_exceeded",
            "Too many requests. You can only make 2 requests per second. See rate limit response headers "
            "for more information. Or contact support to increase rate limit.",
        )
        resp.headers.update(
            {"Retry-After": "1", "ratelimit-limit": "2", "ratelimit-remaining": "0", "ratelimit-reset": "1"}
        )
        return resp
    if status in (502, 503, 504):  # what a CDN in front of an API sends: HTML
        return _Response(
            status, f"<html><head><title>{status}</title></head><body>upstream error</body></html>"
        )
    named = {
        400: ("validation_error", "We found an error with one or more fields in the request."),
        401: ("missing_api_key", "Missing API key in the authorization header."),
        403: ("invalid_api_key", "API key is invalid."),
        404: ("not_found", "The requested endpoint does not exist."),
        405: ("method_not_allowed", "Method not allowed."),
        409: ("invalid_idempotent_request", "Same idempotency key used with a different request payload."),
        422: ("validation_error", "We found an error with one or more fields in the request."),
        500: ("application_error", "An unexpected error occurred."),
    }
    name, message = named.get(
        status, ("application_error" if status >= 500 else "validation_error", f"HTTP {status}")
    )
    return _resend_error(status, name, message)


def _slack_webhook_default(status: int) -> _Response:
    codes = {
        400: "invalid_payload",
        403: "invalid_token",
        404: "no_service",
        410: "channel_is_archived",
        429: "rate_limited",
    }
    resp = _Response(status, codes.get(status, "internal_error" if status >= 500 else "invalid_payload"))
    if status == 429:
        resp.headers["Retry-After"] = "1"
    return resp


def _slack_api_default(status: int) -> _Response:
    if status == 429:
        return _Response(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
    if status >= 500:
        return _Response(status, {"ok": False, "error": "internal_error"})
    return _Response(status, {"ok": False, "error": "invalid_request"})


def _default_error(route: str, status: int) -> _Response:
    if route.startswith("resend."):
        return _resend_default(status)
    if route == "slack.webhook":
        return _slack_webhook_default(status)
    return _slack_api_default(status)


# -- validation -----------------------------------------------------------------------------------


def _valid_address(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    _, addr = parseaddr(value)
    return bool(_EMAIL_RE.match(addr))


def _check_email(data: Any) -> _Response | None:
    """Resend's checks on one email: missing field -> 422 missing_required_field, bad -> 422 validation_error."""
    if not isinstance(data, dict):
        return _resend_error(422, "validation_error", "The email must be a JSON object.")
    for name in ("from", "to", "subject"):
        if data.get(name) in (None, "", []):
            return _resend_error(422, "missing_required_field", f"Missing `{name}` field.")
    if not _valid_address(data["from"]):
        return _resend_error(
            422,
            "validation_error",
            "Invalid `from` field. The email address needs to follow the `email@example.com` or "
            "`Name <email@example.com>` format.",
        )
    to = data["to"] if isinstance(data["to"], list) else [data["to"]]
    if len(to) > RESEND_MAX_RECIPIENTS:
        return _resend_error(
            422, "validation_error", f"Too many recipients in `to` (max {RESEND_MAX_RECIPIENTS})."
        )
    for field_name in ("to", "cc", "bcc", "reply_to"):
        values = data.get(field_name)
        values = values if isinstance(values, list) else [] if values is None else [values]
        if not all(_valid_address(v) for v in values):
            return _resend_error(
                422,
                "validation_error",
                f"Invalid `{field_name}` field. The email address needs to follow the `email@example.com` or "
                "`Name <email@example.com>` format.",
            )
    if not isinstance(data["subject"], str):
        return _resend_error(422, "validation_error", "The `subject` field must be a `string`.")
    if not any(data.get(k) for k in ("html", "text", "react", "template")):
        return _resend_error(422, "validation_error", "Missing `html` or `text` field.")
    return None


def _text_len_ok(obj: Any, limit: int) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("text"), str) and 0 < len(obj["text"]) <= limit


def _check_blocks(blocks: Any) -> bool:
    """Slack's Block Kit limits for the block types opsfleet sends (others are accepted as-is)."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return False
    for block in blocks:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return False
        if len(str(block.get("block_id", ""))) > 255:
            return False
        kind = block["type"]
        if kind == "header":
            text = block.get("text")
            if not _text_len_ok(text, 150) or text.get("type") != "plain_text":
                return False
        elif kind == "section":
            fields = block.get("fields")
            if "text" not in block and not fields:
                return False
            if "text" in block and not _text_len_ok(block["text"], 3000):
                return False
            if fields is not None and (
                not isinstance(fields, list)
                or len(fields) > 10
                or not all(_text_len_ok(f, 2000) for f in fields)
            ):
                return False
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                return False
            if not all(_text_len_ok(e, 3000) for e in elements if isinstance(e, dict) and "text" in e):
                return False
    return True


def _channel_id(name: str) -> str:
    name = name.lstrip("#")
    if _CHANNEL_ID_RE.match(name):
        return name
    return "C" + hashlib.sha1(name.encode()).hexdigest()[:10].upper()  # noqa: S324 - an id, not security


def _rate_limits(
    limits: Mapping[str, float | tuple[float, int]] | None,
) -> dict[str, tuple[float, int]]:
    out: dict[str, tuple[float, int]] = {}
    for provider, value in (limits or {}).items():
        if provider not in RATE_LIMITED_PROVIDERS:
            raise ValueError(f"rate_limits: unknown provider {provider!r}; known: {', '.join(RATE_LIMITED_PROVIDERS)}")
        rate, burst = (value if isinstance(value, tuple | list) else (value, None))
        rate = float(rate)
        burst = max(1, int(rate)) if burst is None else int(burst)
        if not rate > 0 or burst < 1:
            raise ValueError(f"rate_limits[{provider!r}]: the rate must be > 0 and the burst >= 1")
        out[provider] = (rate, burst)
    return out


def _slack_channel_of(headers: Mapping[str, str], raw: bytes) -> str:
    """The `channel` argument of a Web API call (JSON or form-encoded), for its per-channel limit."""
    try:
        if "application/json" in (_header(headers, "content-type") or "").lower():
            data = json.loads(raw or b"{}")
        else:
            data = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
    except (ValueError, UnicodeDecodeError):
        return ""
    return str(data.get("channel") or "").lstrip("#") if isinstance(data, dict) else ""


# -- the server -----------------------------------------------------------------------------------


class ProviderSink:
    """Resend + Slack on 127.0.0.1. Thread-safe; start() before use, stop() after (or use `with`)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        capture_path: str | Path | None = None,
        resend_api_keys: Iterable[str] | None = None,
        slack_tokens: Iterable[str] | None = None,
        slack_webhook_paths: Iterable[str] | None = None,
        slack_channels: Iterable[str] | None = None,
        idempotency_ttl: float = IDEMPOTENCY_TTL,
        rate_limits: Mapping[str, float | tuple[float, int]] | None = None,
    ) -> None:
        """`resend_api_keys` / `slack_tokens` / `slack_webhook_paths` / `slack_channels`: the valid
        values; None accepts any well-formed one (re_..., xox..., /services/A/B/C, any channel).
        `rate_limits`: {"resend": rate, "slack": (rate, burst)}; None (the default) enforces none."""
        self.host = host
        self.port = port
        self.capture_path = Path(capture_path) if capture_path else None
        self.resend_api_keys = set(resend_api_keys) if resend_api_keys is not None else None
        self.slack_tokens = set(slack_tokens) if slack_tokens is not None else None
        self.slack_webhook_paths = set(slack_webhook_paths) if slack_webhook_paths is not None else None
        channels = list(slack_channels) if slack_channels is not None else None
        self.slack_channels = (
            {c.lstrip("#") for c in channels} | {_channel_id(c) for c in channels}
            if channels is not None
            else None
        )
        self.idempotency_ttl = idempotency_ttl
        self.rate_limits = _rate_limits(rate_limits)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._capture_file: Any = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._emails: list[dict[str, Any]] = []
        self._emails_by_id: dict[str, dict[str, Any]] = {}
        self._slack: list[dict[str, Any]] = []
        self._slack_by_ts: dict[tuple[str, str], dict[str, Any]] = {}
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str, deque[Reply]] = {}
        self._idempotency: dict[tuple[str, str], tuple[str, float, _Response]] = {}
        self._buckets: dict[tuple[str, str], list[float]] = {}  # (provider, target) -> [tokens, at]
        self._ts_seq = 0

    # -- lifecycle --

    def start(self) -> ProviderSink:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.sink = self
        self._server = server
        if self.capture_path is not None:
            self.capture_path.parent.mkdir(parents=True, exist_ok=True)
            self._capture_file = self.capture_path.open("a", encoding="utf-8")
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"provider-sink:{self.port_number}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes hung handlers
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            if self._capture_file is not None:
                self._capture_file.close()
                self._capture_file = None

    def __enter__(self) -> ProviderSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses --

    @property
    def port_number(self) -> int:
        return self._server.server_address[1] if self._server else self.port

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("ProviderSink is not started")
        return f"http://{self.host}:{self.port_number}"

    @property
    def resend_api_url(self) -> str:
        """For RESEND_API_URL / resend.api_url (the SDK appends /emails)."""
        return self.url

    @property
    def slack_webhook_url(self) -> str:
        path = sorted(self.slack_webhook_paths)[0] if self.slack_webhook_paths else DEFAULT_WEBHOOK_PATH
        return self.url + path

    @property
    def slack_api_url(self) -> str:
        """For slack_sdk.WebClient(base_url=...)."""
        return self.url + "/api/"

    # -- scripting and inspection --

    def script(self, route: str, replies: Iterable[Reply]) -> None:
        """Replace the upcoming responses of `route` (one of ROUTES) with `replies`, in order."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; known: {', '.join(ROUTES)}")
        with self._lock:
            self._scripts[route] = deque(replies)

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()

    def reset(self) -> None:
        """Forget everything recorded, scripted and every idempotency key."""
        with self._lock:
            self._reset_state()

    @property
    def emails(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._emails)

    @property
    def slack_messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._slack)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, route: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if r.route == route]

    def wait_for(self, *, emails: int = 0, slack: int = 0, timeout: float = 5.0) -> bool:
        """Block until at least `emails` emails and `slack` Slack messages are recorded."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._emails) < emails or len(self._slack) < slack:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    # -- request handling (called from handler threads) --

    def _route(self, method: str, path: str) -> tuple[str | None, str | None]:
        if method == "POST" and path == "/emails":
            return "resend.emails", None
        if method == "POST" and path == "/emails/batch":
            return "resend.emails.batch", None
        if method == "GET" and path.startswith("/emails/"):
            return "resend.emails.get", path[len("/emails/") :]
        if method == "POST" and path.startswith("/services/"):
            return "slack.webhook", None
        if path.startswith("/api/"):
            name = "slack." + path[len("/api/") :]
            return (name if name in ROUTES else None), path[len("/api/") :]
        return None, None

    def _handle(
        self, rec: RecordedRequest, raw: bytes, arg: str | None, token: str | None
    ) -> tuple[_Response, float]:
        rec.body = _best_effort_body(raw)
        with self._lock:
            self._requests.append(rec)
            reply = None
            if rec.route is not None and self._scripts.get(rec.route):
                reply = self._scripts[rec.route].popleft()
                rec.scripted = True
            if reply is not None and (reply.body is not None or not 200 <= reply.status < 300):
                resp = (
                    _Response(reply.status, reply.body)
                    if reply.body is not None
                    else _default_error(rec.route or "", reply.status)
                )
            else:
                limited = self._rate_limit(rec, raw, token) if reply is None else None
                resp = limited if limited is not None else self._process(rec, raw, arg, token)
            if reply is not None:
                resp.headers.update(reply.headers)
            rec.status = resp.status
            return resp, (reply.hang if reply else 0.0)

    def _rate_limit(self, rec: RecordedRequest, raw: bytes, token: str | None) -> _Response | None:
        """Take a token from the request's provider-target bucket; a 429 when there is none."""
        route = rec.route
        if not self.rate_limits or route is None or route == "slack.auth.test":
            return None
        provider = route.split(".", 1)[0]
        limit = self.rate_limits.get(provider)
        if limit is None:
            return None
        rate, burst = limit
        if provider == "resend":
            target = token or ""
        elif route == "slack.webhook":
            target = rec.path
        else:
            target = "api:" + _slack_channel_of(rec.headers, raw)
        now = time.monotonic()
        tokens, at = self._buckets.get((provider, target), (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate)
        if tokens >= 1.0:
            self._buckets[(provider, target)] = [tokens - 1.0, now]
            return None
        self._buckets[(provider, target)] = [tokens, now]
        rec.rate_limited = True
        retry_after = str(max(1, math.ceil((1.0 - tokens) / rate)))  # whole seconds, as both providers send
        resp = _default_error(route, 429)
        resp.headers["Retry-After"] = retry_after
        if provider == "resend":
            resp.headers.update(
                {"ratelimit-limit": f"{rate:g}", "ratelimit-remaining": "0", "ratelimit-reset": retry_after}
            )
        return resp

    def _process(self, rec: RecordedRequest, raw: bytes, arg: str | None, token: str | None) -> _Response:
        route = rec.route
        if route is None:
            if rec.path.startswith("/api/"):
                return _Response(404, {"ok": False, "error": "unknown_method"})
            return _resend_error(404, "not_found", "The requested endpoint does not exist.")
        if route.startswith("resend."):
            return self._resend(rec, raw, route, arg, token)
        if route == "slack.webhook":
            return self._slack_webhook(rec, raw)
        return self._slack_api(rec, raw, route, token)

    # Resend

    def _resend(
        self, rec: RecordedRequest, raw: bytes, route: str, arg: str | None, key: str | None
    ) -> _Response:
        if key is None:
            return _resend_default(401)
        if (self.resend_api_keys is not None and key not in self.resend_api_keys) or (
            self.resend_api_keys is None and not key.startswith("re_")
        ):
            return _resend_default(403)
        if route == "resend.emails.get":
            email = self._emails_by_id.get(arg or "")
            if email is None:
                return _resend_error(404, "not_found", "Email not found")
            return _Response(
                200, {"object": "email", **{k: v for k, v in email.items() if k != "request_headers"}}
            )
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            return _resend_error(400, "validation_error", "Invalid JSON body.")
        rec.body = data

        idem_key = _header(rec.headers, "idempotency-key")
        digest = hashlib.sha256(raw).hexdigest()
        if idem_key is not None:
            if not 1 <= len(idem_key) <= 256:
                return _resend_error(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")
            stored = self._idempotency.get((route, idem_key))
            if stored is not None and time.time() - stored[1] < self.idempotency_ttl:
                if stored[0] != digest:
                    return _resend_default(409)
                rec.replayed = True
                return _Response(stored[2].status, stored[2].body, dict(stored[2].headers))

        if route == "resend.emails":
            error = _check_email(data)
            if error is not None:
                return error
            resp = _Response(200, {"id": self._record_email(rec, data, idem_key, batch=False)})
        else:
            resp = self._resend_batch(rec, data, idem_key)
        if idem_key is not None and resp.status == 200:
            self._idempotency[(route, idem_key)] = (digest, time.time(), resp)
        return resp

    def _resend_batch(self, rec: RecordedRequest, data: Any, idem_key: str | None) -> _Response:
        if not isinstance(data, list) or not data:
            return _resend_error(422, "validation_error", "The batch must be a non-empty array of emails.")
        if len(data) > RESEND_MAX_BATCH:
            return _resend_error(
                422,
                "validation_error",
                f"Too many emails in the batch: {len(data)} (max {RESEND_MAX_BATCH}).",
            )
        permissive = (_header(rec.headers, "x-batch-validation") or "strict").lower() == "permissive"
        errors = []
        for i, item in enumerate(data):
            error = _check_email(item)
            if error is not None:
                if not permissive:
                    return _resend_error(422, error.body["name"], f"emails[{i}]: {error.body['message']}")
                errors.append({"index": i, "message": error.body["message"]})
        bad = {e["index"] for e in errors}
        ids = [
            {"id": self._record_email(rec, item, idem_key, batch=True)}
            for i, item in enumerate(data)
            if i not in bad
        ]
        body: dict[str, Any] = {"data": ids}
        if permissive:
            body["errors"] = errors
        return _Response(200, body)

    def _record_email(
        self, rec: RecordedRequest, data: dict[str, Any], idem_key: str | None, *, batch: bool
    ) -> str:
        email_id = str(uuid.uuid4())
        to = data["to"] if isinstance(data["to"], list) else [data["to"]]
        record = {
            "id": email_id,
            "created_at": _now_iso(),
            "at": rec.at,
            "from": data["from"],
            "to": to,
            "cc": data.get("cc"),
            "bcc": data.get("bcc"),
            "reply_to": data.get("reply_to"),
            "subject": data["subject"],
            "html": data.get("html"),
            "text": data.get("text"),
            "headers": data.get("headers"),
            "tags": data.get("tags"),
            "last_event": "delivered",
            "idempotency_key": idem_key,
            "batch": batch,
            "request_headers": rec.headers,
        }
        self._emails.append(record)
        self._emails_by_id[email_id] = record
        self._capture("email", record)
        return email_id

    # Slack

    def _slack_webhook(self, rec: RecordedRequest, raw: bytes) -> _Response:
        path = rec.path
        if self.slack_webhook_paths is not None:
            if path not in self.slack_webhook_paths:
                return _Response(404, "no_service")
        elif len([p for p in path[len("/services/") :].split("/") if p]) != 3:
            return _Response(404, "no_service")
        ctype = (_header(rec.headers, "content-type") or "").lower()
        try:
            if "application/x-www-form-urlencoded" in ctype:
                data = json.loads(parse_qs(raw.decode())["payload"][0])
            else:
                data = json.loads(raw or b"null")
        except (ValueError, KeyError, UnicodeDecodeError):
            return _Response(400, "invalid_payload")
        rec.body = data
        if not isinstance(data, dict) or not (
            data.get("text") or data.get("blocks") or data.get("attachments")
        ):
            return _Response(400, "invalid_payload")
        if "blocks" in data and not _check_blocks(data["blocks"]):
            return _Response(400, "invalid_blocks")
        if len(str(data.get("text") or "")) > SLACK_TEXT_MAX:
            return _Response(400, "msg_too_long")
        self._record_slack(rec, "webhook", data, channel=None, ts=self._next_ts(), webhook=path)
        return _Response(200, "ok")

    def _slack_api(self, rec: RecordedRequest, raw: bytes, route: str, bearer: str | None) -> _Response:
        ctype = (_header(rec.headers, "content-type") or "").lower()
        try:
            if "application/json" in ctype:
                data = json.loads(raw or b"{}")
            else:
                data = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        except (ValueError, UnicodeDecodeError):
            return _Response(200, {"ok": False, "error": "invalid_json"})
        if not isinstance(data, dict):
            return _Response(200, {"ok": False, "error": "json_not_object"})
        token = bearer or data.pop("token", None)
        rec.body = data
        if not token:
            return _Response(200, {"ok": False, "error": "not_authed"})
        if (self.slack_tokens is not None and token not in self.slack_tokens) or (
            self.slack_tokens is None and not token.startswith("xox")
        ):
            return _Response(200, {"ok": False, "error": "invalid_auth"})
        if route == "slack.auth.test":
            return _Response(
                200,
                {
                    "ok": True,
                    "url": "https://opsfleet-sink.slack.com/",
                    "team": "opsfleet sink",
                    "user": "opsfleet",
                    "team_id": "T00000000",
                    "user_id": "U00000000",
                    "bot_id": "B00000000",
                    "is_enterprise_install": False,
                },
            )
        blocks = data.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except ValueError:
                return _Response(200, {"ok": False, "error": "invalid_blocks_format"})
        text = data.get("text") or ""
        if not text and not blocks and not data.get("attachments"):
            return _Response(200, {"ok": False, "error": "no_text"})
        if blocks is not None and not _check_blocks(blocks):
            return _Response(200, {"ok": False, "error": "invalid_blocks"})
        if len(str(text)) > SLACK_TEXT_MAX:
            return _Response(200, {"ok": False, "error": "msg_too_long"})
        channel = str(data.get("channel") or "")
        if not channel:
            return _Response(200, {"ok": False, "error": "channel_not_found"})
        if self.slack_channels is not None and channel.lstrip("#") not in self.slack_channels:
            return _Response(200, {"ok": False, "error": "channel_not_found"})

        if route == "slack.chat.update":
            # chat.update takes the channel id (from the chat.postMessage answer), not a name.
            if not _CHANNEL_ID_RE.match(channel):
                return _Response(200, {"ok": False, "error": "channel_not_found"})
            ts = str(data.get("ts") or "")
            original = self._slack_by_ts.get((channel, ts))
            if original is None:
                return _Response(200, {"ok": False, "error": "message_not_found"})
            message = {
                **original["message"],
                "text": text,
                "blocks": blocks or [],
                "edited": {"user": "U00000000", "ts": self._next_ts()},
            }
            original["message"] = message
            self._record_slack(
                rec, "chat.update", data, channel=channel, ts=ts, blocks=blocks, message=message
            )
            return _Response(
                200, {"ok": True, "channel": channel, "ts": ts, "text": text, "message": message}
            )

        channel_id = _channel_id(channel)
        ts = self._next_ts()
        message = {
            "type": "message",
            "subtype": "bot_message",
            "text": text,
            "user": "U00000000",
            "bot_id": "B00000000",
            "ts": ts,
            "blocks": blocks or [],
        }
        if data.get("thread_ts"):
            message["thread_ts"] = str(data["thread_ts"])
        record = self._record_slack(
            rec, "chat.postMessage", data, channel=channel_id, ts=ts, blocks=blocks, message=message
        )
        self._slack_by_ts[(channel_id, ts)] = record
        return _Response(200, {"ok": True, "channel": channel_id, "ts": ts, "message": message})

    def _next_ts(self) -> str:
        self._ts_seq += 1
        return f"{int(time.time())}.{self._ts_seq % 1_000_000:06d}"

    def _record_slack(
        self,
        rec: RecordedRequest,
        kind: str,
        data: dict[str, Any],
        *,
        channel: str | None,
        ts: str,
        webhook: str | None = None,
        blocks: Any = None,
        message: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        record = {
            "kind": kind,
            "created_at": _now_iso(),
            "at": rec.at,
            "webhook": webhook,
            "channel": channel,
            "channel_name": data.get("channel"),
            "ts": ts,
            "thread_ts": data.get("thread_ts"),
            "text": data.get("text"),
            "blocks": blocks if blocks is not None else data.get("blocks"),
            "payload": data,
            "message": message,
            "request_headers": rec.headers,
        }
        self._slack.append(record)
        self._capture("slack", record)
        return record

    def _capture(self, kind: str, record: dict[str, Any]) -> None:
        self._changed.notify_all()
        if self._capture_file is None:
            return
        line = {"type": kind, **{k: v for k, v in record.items() if k not in ("request_headers", "payload")}}
        self._capture_file.write(json.dumps(line, default=str) + "\n")
        self._capture_file.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sink: ProviderSink

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) leaves a broken pipe behind; that is the test, not a bug.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "opsfleet-sink/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        sink = self.server.sink
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        path = urlsplit(self.path).path
        route, arg = sink._route(method, path)
        headers = dict(self.headers.items())
        rec = RecordedRequest(
            route=route, method=method, path=path, headers=_redact(headers), body=None, at=time.time()
        )
        resp, hang = sink._handle(rec, raw, arg, _bearer(headers))
        if hang > 0:
            sink._stopping.wait(hang)
        body, ctype = resp.encode()
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (ConnectionError, TimeoutError):
            self.close_connection = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.sink", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--capture", help="append one JSON line per accepted message to this file")
    parser.add_argument("--rate-limit", action="append", default=[], metavar="PROVIDER=RATE[/BURST]",
                        help="enforce a rate limit per provider target, e.g. resend=2 or slack=1/1 (repeatable)")
    args = parser.parse_args(argv)
    limits: dict[str, tuple[float, int] | float] = {}
    for item in args.rate_limit:
        provider, _, spec = item.partition("=")
        rate, _, burst = spec.partition("/")
        try:
            limits[provider.strip()] = (float(rate), int(burst)) if burst else float(rate)
        except ValueError:
            parser.error(f"--rate-limit {item!r}: use PROVIDER=RATE or PROVIDER=RATE/BURST")
    try:
        sink = ProviderSink(args.host, args.port, capture_path=args.capture, rate_limits=limits).start()
    except ValueError as exc:
        parser.error(str(exc))
    print(f"RESEND_API_URL={sink.resend_api_url}", flush=True)
    print(f"ALERT_SLACK_WEBHOOK_URL={sink.slack_webhook_url}", flush=True)
    print(f"SLACK_API_URL={sink.slack_api_url}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        done.wait()
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
