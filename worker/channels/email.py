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
from typing import Any, NamedTuple

import requests
import resend
from resend.exceptions import NoContentError, ResendError

from worker.channels.base import (
    Channel,
    DeliveryError,
    DeliveryResult,
    Message,
    classify_status,
    header,
    http_json,
    parse_retry_after,
)
from worker.channels.email_render import RenderedEmail, render

DEFAULT_API_URL = "https://api.resend.com"
MAX_BATCH = 100

# One lock for the SDK's module globals (api_key, api_url, default_http_client).
_SDK_LOCK = threading.Lock()


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
    rate_limit = (1.9, 2)  # Resend: 2 requests per second per team
    folds = True
    probing = "on_request"

    @classmethod
    def from_settings(cls, settings: Any, spec: Any = None, *, monitored: Any = None,
                      timeout: float = 10.0) -> EmailChannel:
        """RESEND_API_KEY, RESEND_API_URL, FROM_EMAIL, FROM_NAME; ALERT_EMAIL_RECIPIENTS unless the
        routing.yaml channel names its own `recipients`."""
        made = cls(settings.resend_api_key, settings.from_email, settings.from_name,
                   (spec.recipients if spec is not None else None) or settings.recipients,
                   api_url=settings.resend_api_url, timeout=timeout)
        made.action_secret = getattr(settings, "opsfleet_action_secret", None)  # signs the approval links
        return made

    @classmethod
    def problems(cls, settings: Any, spec: Any = None) -> list[str]:
        missing = [v for v, ok in (("RESEND_API_KEY", settings.resend_api_key),
                                   ("ALERT_EMAIL_RECIPIENTS", (spec and spec.recipients) or settings.recipients))
                   if not ok]
        return [f"{', '.join(missing)} not set"] if missing else []

    @classmethod
    def probe(cls, settings: Any, spec: Any, timeout: float, monitored: Any = None) -> tuple[str, str]:
        """GET /domains: sends nothing. A sending-only key answers 401 restricted_api_key: the key is valid."""
        status, body = http_json(settings.resend_api_url.rstrip("/") + "/domains",
                                 {"Authorization": f"Bearer {settings.resend_api_key}"}, timeout)
        if status == 200 or (status == 401 and body.get("name") == "restricted_api_key"):
            return "ok", "Resend accepts the API key" + (" (sending only)" if status == 401 else "")
        return "fail", f"Resend answered {status} {body.get('name', '')}: {body.get('message', '')}".strip()

    @classmethod
    def bucket_target(cls, settings: Any, name: str) -> str:
        return f"email:{settings.resend_api_url}:{settings.from_email}"  # one Resend account and sender

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
        rendered = RenderedEmail(**pre) if pre else render(message, action_secret=getattr(self, "action_secret", None))
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

    def send(self, message: Message, previous: dict[str, Any] | None = None) -> DeliveryResult:
        """One email; mail clients thread an alert's mails by their References header, not `previous`."""
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
