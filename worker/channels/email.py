"""Email through Resend, with the official `resend` SDK.

How the SDK behaves (resend 2.52, read from its source):

* Configuration is module-global: `resend.api_key` and `resend.api_url` are read when a request is
  made (`Request.perform` builds f"{resend.api_url}{path}"; the Authorization header uses
  `resend.api_key`), and the HTTP client is `resend.default_http_client`. We set all three under a
  process-wide lock for the duration of one call, then restore them, so two channels with different
  keys in one process cannot cross.
* The default `RequestsClient` has a fixed 30 s timeout and turns every `requests` exception into
  a `RuntimeError`; `Request.make_request` then wraps *any* client exception in
  `ResendError(code=500, error_type="HttpClientError")`. So a timeout looks like a 500 unless you
  look at the exception chain. We plug in our own `HTTPClient` (timeout per channel) and walk
  `__context__`/`__cause__` to find the `requests.Timeout` / `requests.ConnectionError`.
* HTTP errors: any status >= 400 (or a JSON body with `statusCode` != 200) raises a ResendError
  subclass chosen by (code, name) — RateLimitError, ValidationError, MissingApiKeyError,
  InvalidApiKeyError, ... — with `.code` (int from the HTTP status), `.error_type` (the body's
  `name`), `.message` and `.headers` (response headers, server casing, so `Retry-After` is looked
  up case-insensitively). A non-JSON body (a CDN's HTML 502) raises with the HTTP status as code.
* `options={"idempotency_key": ...}` becomes the `Idempotency-Key` header (POST only).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import requests
import resend
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape
from resend.exceptions import NoContentError, ResendError

from worker.channels.base import (
    Channel,
    DeliveryError,
    DeliveryResult,
    Message,
    classify_status,
    header,
    parse_retry_after,
)

DEFAULT_API_URL = "https://api.resend.com"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
MAX_BATCH = 100
MAX_SUBJECT = 250

# Fixed tables: the only values that reach a style attribute.
ACCENTS = {
    "critical": "#ef4444",
    "high": "#f97316",
    "warning": "#f59e0b",
    "medium": "#3b82f6",
    "info": "#6b7280",
}
RESOLVED_ACCENT = "#22c55e"

# One lock for the SDK's module globals (api_key, api_url, default_http_client).
_SDK_LOCK = threading.Lock()


def _autoescape(template_name: str | None) -> bool:
    # Escape everything except templates that are explicitly plain text.
    return not (template_name or "").endswith(".txt.j2")


def _nl2br(value: Any) -> Markup:
    return Markup("<br>\n").join(escape(line) for line in str(value).splitlines())


def _value(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def safe_url(url: str | None) -> str | None:
    """The URL if it is http(s) with a host (safe for an href), else None."""
    if not url:
        return None
    parts = urlsplit(url.strip())
    if parts.scheme in ("http", "https") and parts.netloc:
        return url.strip()
    return None


_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES_DIR)),
    autoescape=_autoescape,
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)
_env.filters["nl2br"] = _nl2br
_env.filters["value"] = _value


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


def subject_for(message: Message) -> str:
    if message.status == "resolved":
        tag = "RESOLVED"
    elif message.status == "test":
        tag = "TEST"
    else:
        tag = message.severity.upper() or "ALERT"
    subject = re.sub(r"[\r\n\t]+", " ", f"[{tag}] {message.title}").strip()
    return subject if len(subject) <= MAX_SUBJECT else subject[: MAX_SUBJECT - 1] + "…"


def render(message: Message) -> RenderedEmail:
    """Subject, HTML part and text part for one message."""
    subject = subject_for(message)
    if message.status == "resolved":
        accent, status_label = RESOLVED_ACCENT, "RESOLVED"
    elif message.status == "test":
        accent, status_label = ACCENTS["info"], "TEST"
    else:
        accent, status_label = ACCENTS.get(message.severity, ACCENTS["info"]), "FIRING"
    context = {
        "m": message,
        "subject": subject,
        "accent": accent,
        "status_label": status_label,
        "rows": [alert_row(r) for r in message.rows],
    }
    return RenderedEmail(
        subject=subject,
        html=_env.get_template("alert.html.j2").render(context),
        text=_env.get_template("alert.txt.j2").render(context),
    )


def alert_row(m: Message) -> dict[str, Any]:
    """One alert of a message as the templates show it (already checked URLs; no internal field)."""
    links = m.links()
    if m.status == "resolved":
        tag, accent = "RESOLVED", RESOLVED_ACCENT
    else:
        tag, accent = m.severity.upper(), ACCENTS.get(m.severity, ACCENTS["info"])
    return {
        "tag": tag, "accent": accent, "check": m.check, "title": m.title, "value": m.value_text,
        "labels": ", ".join(f"{k}={v}" for k, v in sorted(m.labels.items())),
        "since": m.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if m.started_at else None,
        "fired_for": m.fired_for, "runbook": m.runbook, "runbook_url": safe_url(m.runbook_link()),
        "alert_url": safe_url(links.get("alert")), "silence_url": safe_url(links.get("silence")),
    }


class TimeoutHTTPClient(resend.HTTPClient):
    """resend's HTTPClient interface over a requests.Session with our timeout.

    Exceptions are left to propagate: the SDK wraps them in ResendError, and `_transport_error`
    finds them again in the exception chain.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session: requests.Session | None = None
        self._pid = 0

    def _get_session(self) -> requests.Session:
        # A pooled connection must not be shared across a fork (Celery prefork).
        if self._session is None or self._pid != os.getpid():
            self._session = requests.Session()
            self._pid = os.getpid()
        return self._session

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        json: dict[str, object] | list[object] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        resp = self._get_session().request(
            method=method,
            url=url,
            headers=dict(headers),
            json=json if data is None and files is None else None,
            data=data,
            files=files,
            timeout=(min(self.timeout, 5.0), self.timeout),
            allow_redirects=False,
        )
        return resp.content, resp.status_code, resp.headers


def _transport_error(exc: BaseException) -> DeliveryError | None:
    """The timeout/connection failure hidden under the SDK's ResendError(500, HttpClientError)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, requests.Timeout):  # ConnectTimeout is also a ConnectionError: check first
            return DeliveryError("timeout", f"Resend request timed out: {cur}", permanent=False)
        if isinstance(cur, requests.ConnectionError):
            return DeliveryError("connection", f"Resend connection failed: {cur}", permanent=False)
        if isinstance(cur, requests.RequestException):
            return DeliveryError("connection", f"Resend request failed: {cur}", permanent=False)
        cur = cur.__cause__ or cur.__context__
    return None


def map_resend_error(exc: ResendError) -> DeliveryError:
    transport = _transport_error(exc)
    if transport is not None:
        return transport
    try:
        status = int(exc.code)
    except (TypeError, ValueError):
        status = 500
    name = exc.error_type or ""
    text = f"{name}: {exc.message}" if name else str(exc.message)
    retry_after = parse_retry_after(header(exc.headers, "retry-after"))
    if name == "concurrent_idempotent_requests":
        # 409, but the original request is still being processed: try again shortly.
        return DeliveryError("server_error", text, permanent=False, retry_after=retry_after, status=status)
    err = classify_status(status, retry_after, text)
    if err is None:  # a 2xx whose body still said statusCode != 200
        return DeliveryError("server_error", text, permanent=False, status=status)
    return err


class EmailChannel(Channel):
    kind = "email"

    def __init__(
        self,
        api_key: str | None,
        from_email: str,
        from_name: str | None,
        recipients: list[str],
        api_url: str | None = None,
        timeout: float = 10,
    ) -> None:
        self.api_key = api_key
        self.from_email = from_email
        self.from_name = from_name
        self.recipients = [r.strip() for r in recipients if r and r.strip()]
        self.api_url = (api_url or os.environ.get("RESEND_API_URL") or DEFAULT_API_URL).rstrip("/")
        self.timeout = float(timeout)
        self._http = TimeoutHTTPClient(self.timeout)

    @property
    def sender(self) -> str:
        """`Name <address>`; the name is quoted when it holds RFC 5322 specials, and kept in UTF-8
        (email.utils.formataddr would RFC 2047-encode it, which a JSON API does not need)."""
        name = re.sub(r"[\r\n\t]+", " ", self.from_name or "").strip()
        if not name:
            return self.from_email
        if re.search(r'[()<>\[\]:;@\\,."]', name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self.from_email}>"

    def _check_config(self) -> None:
        if not self.api_key:
            raise DeliveryError("auth", "RESEND_API_KEY is not set", permanent=True)
        if not self.from_email:
            raise DeliveryError("invalid", "FROM_EMAIL is not set", permanent=True)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one SDK call with this channel's key, URL and HTTP client, mapping its errors."""
        with _SDK_LOCK:
            saved = (resend.api_key, resend.api_url, resend.default_http_client)
            resend.api_key, resend.api_url, resend.default_http_client = (
                self.api_key,
                self.api_url,
                self._http,
            )
            try:
                return fn(*args, **kwargs)
            except ResendError as exc:
                raise map_resend_error(exc) from exc
            except NoContentError as exc:
                raise DeliveryError("server_error", "Resend returned an empty body", permanent=False) from exc
            except (ValueError, TypeError) as exc:  # the SDK's client-side argument checks
                raise DeliveryError("invalid", f"invalid email parameters: {exc}", permanent=True) from exc
            finally:
                resend.api_key, resend.api_url, resend.default_http_client = saved

    def params(self, message: Message) -> dict[str, Any]:
        # A message rendered elsewhere (the daily digest) carries its own parts; still escaped at the source.
        pre = dict(message.extra.get("rendered") or {}) if message.extra else {}
        attachments = pre.pop("attachments", None)  # a report's charts: Resend attachments with content_id
        rendered = RenderedEmail(**pre) if pre else render(message)
        params: dict[str, Any] = {
            "from": self.sender,
            "to": list(self.recipients),
            "subject": rendered.subject,
            "html": rendered.html,
            "text": rendered.text,
            "tags": [
                {"name": "check", "value": _tag_value(message.check)},
                {"name": "severity", "value": _tag_value(message.severity)},
                {"name": "status", "value": _tag_value(message.status)},
            ],
        }
        if attachments:
            params["attachments"] = attachments
        # Let mail clients thread the firing and resolved mails of one alert together.
        if message.fingerprint:
            ref = f"<{_tag_value(message.fingerprint)}@opsfleet>"
            params["headers"] = {"References": ref}
        return params

    def send(self, message: Message) -> DeliveryResult:
        self._check_config()
        if not self.recipients:
            raise DeliveryError("invalid", "no email recipients configured", permanent=True)
        params = self.params(message)
        resp = self._call(
            resend.Emails.send,
            params,
            options={"idempotency_key": message.notification_id},
        )
        provider_id = resp.get("id") if isinstance(resp, Mapping) else None
        if not provider_id:
            raise DeliveryError("server_error", f"Resend answered without an id: {resp!r}", permanent=False)
        return DeliveryResult(
            provider_id=str(provider_id),
            detail={"provider": "resend", "to": params["to"], "subject": params["subject"]},
        )

    def send_batch(self, messages: list[dict[str, Any]], idempotency_key: str) -> list[str]:
        """Send up to 100 ready-made emails (Resend params; `from` defaults to the sender) in one call.

        Returns the provider ids in order. The idempotency key covers the whole batch, so a retry of
        the same batch with the same key sends nothing twice.
        """
        resp = self._batch_call(messages, {"idempotency_key": idempotency_key})
        data = resp.get("data") if isinstance(resp, Mapping) else None
        if not isinstance(data, list) or len(data) != len(messages):
            raise DeliveryError("server_error", f"unexpected Resend batch answer: {resp!r}", permanent=False)
        return [str(item["id"]) for item in data]

    def send_batch_each(self, messages: list[dict[str, Any]], idempotency_key: str) -> list[BatchItem]:
        """send_batch with Resend's permissive validation: an email it rejects fails alone (its error
        by index) and the others are sent. One BatchItem per message, in order."""
        resp = self._batch_call(messages, {"idempotency_key": idempotency_key, "batch_validation": "permissive"})
        data = resp.get("data") if isinstance(resp, Mapping) else None
        errors = resp.get("errors") if isinstance(resp, Mapping) else None
        rejected = {int(e["index"]): str(e.get("message", "rejected")) for e in errors or []}
        if not isinstance(data, list) or len(data) + len(rejected) != len(messages):
            raise DeliveryError("server_error", f"unexpected Resend batch answer: {str(resp)[:300]}", permanent=False)
        ids = iter(data)
        return [BatchItem(None, rejected[i]) if i in rejected else BatchItem(str(next(ids)["id"]), None)
                for i in range(len(messages))]

    def _batch_call(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> Any:
        self._check_config()
        if len(messages) > MAX_BATCH:
            raise DeliveryError("invalid", f"a Resend batch holds at most {MAX_BATCH} emails, got {len(messages)}",
                                permanent=True)
        if not messages:
            return {"data": []}
        return self._call(resend.Batch.send, [{"from": self.sender, **m} for m in messages], options=options)


class BatchItem(NamedTuple):
    provider_id: str | None  # accepted
    error: str | None  # rejected by the provider's validation


def _tag_value(value: str) -> str:
    # Resend tags and our Message-ID-ish header accept ASCII letters, digits, _ and - only.
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)[:256] or "_"
