"""Resend's API on the sink: POST /emails, POST /emails/batch (strict or permissive validation, at most
100), GET /emails/{id}; API keys, Idempotency-Key replay (409 for another body under the same key).

`sink.resend_concurrent_mode = True` answers as real Resend does while the first request under a key
is still in flight (its handler has not answered yet, e.g. a `Reply(hang=...)`): 409
`concurrent_idempotent_requests` instead of replaying. Off by default: the key is recorded before the
answer, so a retry while the first is in flight replays it."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import time
import uuid
from email.utils import parseaddr
from typing import Any

from ops.devkit.sink.base import RecordedRequest, Response, header, now_iso
from ops.devkit.sink.replies import resend_default, resend_error

IDEMPOTENCY_TTL = 24 * 3600.0  # Resend keeps idempotency keys for 24 hours
RESEND_MAX_BATCH = 100
RESEND_MAX_RECIPIENTS = 50
RESEND_MAX_ATTACHMENT_BYTES = 40 * 1024 * 1024
_EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def _valid_address(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    _, addr = parseaddr(value)
    return bool(_EMAIL_RE.match(addr))


def _check_email(data: Any) -> Response | None:
    """Resend's checks on one email: missing field -> 422 missing_required_field, bad -> 422 validation_error."""
    if not isinstance(data, dict):
        return resend_error(422, "validation_error", "The email must be a JSON object.")
    for name in ("from", "to", "subject"):
        if data.get(name) in (None, "", []):
            return resend_error(422, "missing_required_field", f"Missing `{name}` field.")
    if not _valid_address(data["from"]):
        return resend_error(
            422,
            "validation_error",
            "Invalid `from` field. The email address needs to follow the `email@example.com` or "
            "`Name <email@example.com>` format.",
        )
    to = data["to"] if isinstance(data["to"], list) else [data["to"]]
    if len(to) > RESEND_MAX_RECIPIENTS:
        return resend_error(
            422, "validation_error", f"Too many recipients in `to` (max {RESEND_MAX_RECIPIENTS})."
        )
    for field_name in ("to", "cc", "bcc", "reply_to"):
        values = data.get(field_name)
        values = values if isinstance(values, list) else [] if values is None else [values]
        if not all(_valid_address(v) for v in values):
            return resend_error(
                422,
                "validation_error",
                f"Invalid `{field_name}` field. The email address needs to follow the `email@example.com` or "
                "`Name <email@example.com>` format.",
            )
    if not isinstance(data["subject"], str):
        return resend_error(422, "validation_error", "The `subject` field must be a `string`.")
    if not any(data.get(k) for k in ("html", "text", "react", "template")):
        return resend_error(422, "validation_error", "Missing `html` or `text` field.")
    return _check_attachments(data.get("attachments"))


def _check_attachments(items: Any) -> Response | None:
    """Resend's attachments: a list of objects, each with a `filename` and either `content` (base64, or
    the SDK's list of byte values) or a remote `path`; `content_id` (or `inline_content_id`) makes one
    inline for `cid:` references; 40 MB per email at most."""
    if items is None:
        return None
    if not isinstance(items, list):
        return resend_error(422, "validation_error", "The `attachments` field must be an `array`.")
    total = 0
    for i, item in enumerate(items):
        where = f"`attachments[{i}]`"
        if not isinstance(item, dict):
            return resend_error(422, "validation_error", f"{where} must be an `object`.")
        if not isinstance(item.get("filename"), str) or not item["filename"].strip():
            return resend_error(422, "missing_required_field", f"Missing `filename` field in {where}.")
        content, path = item.get("content"), item.get("path")
        if content is None and not path:
            return resend_error(422, "missing_required_field", f"{where} needs `content` or `path`.")
        if isinstance(content, list):
            if not all(isinstance(b, int) and 0 <= b <= 255 for b in content):
                return resend_error(422, "validation_error", f"{where}.content must be bytes.")
            total += len(content)
        elif content is not None:
            try:
                total += len(base64.b64decode(content, validate=True)) if isinstance(content, str) else -1
            except (binascii.Error, ValueError):
                return resend_error(422, "validation_error", f"{where}.content is not valid base64.")
            if total < 0:
                return resend_error(422, "validation_error", f"{where}.content must be a base64 `string`.")
        for key in ("content_type", "content_id", "inline_content_id", "path"):
            if item.get(key) is not None and not isinstance(item[key], str):
                return resend_error(422, "validation_error", f"{where}.{key} must be a `string`.")
    if total > RESEND_MAX_ATTACHMENT_BYTES:
        return resend_error(422, "validation_error", "Attachments exceed the 40 MB limit per email.")
    return None



class ResendRoutes:
    """ProviderSink's Resend routes (a mixin: the state lives on the sink)."""

    #: answer 409 concurrent_idempotent_requests to a retry whose original is still in flight
    resend_concurrent_mode: bool = False

    def _resend_handlers(self) -> dict[tuple[str, str], threading.Thread]:
        """(route, Idempotency-Key) -> the thread answering the request that recorded it (HTTP/1.0: one
        request per handler thread, alive until its answer is written)."""
        return self.__dict__.setdefault("_resend_handler_threads", {})

    def resend_in_flight(self) -> int:
        """How many accepted Resend requests with an Idempotency-Key have not been answered yet."""
        with self._lock:
            return sum(t.is_alive() for t in self._resend_handlers().values())

    def _resend(
        self, rec: RecordedRequest, raw: bytes, route: str, arg: str | None, key: str | None
    ) -> Response:
        if key is None:
            return resend_default(401)
        if (self.resend_api_keys is not None and key not in self.resend_api_keys) or (
            self.resend_api_keys is None and not key.startswith("re_")
        ):
            return resend_default(403)
        if route == "resend.domains":  # what `opsfleet health --probe` asks: nothing is sent
            if key in getattr(self, "restricted_keys", set()):
                return resend_error(401, "restricted_api_key", "This API key is restricted to only send emails.")
            return Response(200, {"object": "list", "data": []})
        if route == "resend.emails.get":
            email = self._emails_by_id.get(arg or "")
            if email is None:
                return resend_error(404, "not_found", "Email not found")
            return Response(
                200, {"object": "email", **{k: v for k, v in email.items() if k != "request_headers"}}
            )
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            return resend_error(400, "validation_error", "Invalid JSON body.")
        rec.body = data

        idem_key = header(rec.headers, "idempotency-key")
        digest = hashlib.sha256(raw).hexdigest()
        if idem_key is not None:
            if not 1 <= len(idem_key) <= 256:
                return resend_error(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")
            stored = self._idempotency.get((route, idem_key))
            if stored is not None and time.time() - stored[1] < self.idempotency_ttl:
                if stored[0] != digest:
                    return resend_default(409)
                first = self._resend_handlers().get((route, idem_key))
                if self.resend_concurrent_mode and first is not None and first.is_alive():
                    return resend_error(409, "concurrent_idempotent_requests",
                                        "Same idempotency key used while original request is still in progress.")
                rec.replayed = True
                return Response(stored[2].status, stored[2].body, dict(stored[2].headers))

        if route == "resend.emails":
            error = _check_email(data)
            if error is not None:
                return error
            resp = Response(200, {"id": self._record_email(rec, data, idem_key, batch=False)})
        else:
            resp = self._resend_batch(rec, data, idem_key)
        if idem_key is not None and resp.status == 200:
            self._idempotency[(route, idem_key)] = (digest, time.time(), resp)
            self._resend_handlers()[(route, idem_key)] = threading.current_thread()
        return resp

    def _resend_batch(self, rec: RecordedRequest, data: Any, idem_key: str | None) -> Response:
        if not isinstance(data, list) or not data:
            return resend_error(422, "validation_error", "The batch must be a non-empty array of emails.")
        if len(data) > RESEND_MAX_BATCH:
            return resend_error(
                422,
                "validation_error",
                f"Too many emails in the batch: {len(data)} (max {RESEND_MAX_BATCH}).",
            )
        permissive = (header(rec.headers, "x-batch-validation") or "strict").lower() == "permissive"
        errors = []
        for i, item in enumerate(data):
            error = _check_email(item)
            if error is not None:
                if not permissive:
                    return resend_error(422, error.body["name"], f"emails[{i}]: {error.body['message']}")
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
        return Response(200, body)

    def _record_email(
        self, rec: RecordedRequest, data: dict[str, Any], idem_key: str | None, *, batch: bool
    ) -> str:
        email_id = str(uuid.uuid4())
        to = data["to"] if isinstance(data["to"], list) else [data["to"]]
        record = {
            "id": email_id,
            "created_at": now_iso(),
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
            "attachments": data.get("attachments") or [],  # as sent (validated: base64 content, a filename)
            "last_event": "delivered",
            "idempotency_key": idem_key,
            "batch": batch,
            "request_headers": rec.headers,
        }
        self._emails.append(record)
        self._emails_by_id[email_id] = record
        self._capture("email", record)
        return email_id

