"""Slack, through an incoming webhook or the Web API (bot token), with the official `slack_sdk`.

How the SDK behaves (slack_sdk 3.47, read from its source):

* Both clients use urllib (`urlopen(req, timeout=...)`). A connect timeout surfaces as
  `URLError(reason=TimeoutError)`; a read timeout as a bare `TimeoutError` (socket.timeout) from
  `getresponse()`/`read()`; a refused connection as `URLError(reason=ConnectionRefusedError)`.
* Both default to `retry_handlers=[ConnectionErrorRetryHandler()]` (one silent retry on URLError,
  ConnectionResetError, RemoteDisconnected). We pass `retry_handlers=[]`: notify.deliver retries.
* WebhookClient never raises for an HTTP status: urllib's HTTPError is caught and returned as a
  `WebhookResponse(status_code, body, headers)`; Slack answers "ok" (200) or a plain-text error
  code ("invalid_payload", "no_service", "rate_limited" with 429 + Retry-After, ...).
* WebClient raises `SlackApiError` for any non-200 status *or* `"ok": false`; `e.response` has
  `.status_code`, `.headers` (dict; for 429 both "Retry-After" and "retry-after" are filled in)
  and `.data` ({"ok": false, "error": "ratelimited" | "invalid_auth" | ...}). A non-JSON body
  becomes data {"ok": false, "error": "Received a response in a non-JSON format: ..."}.
"""

from __future__ import annotations

import http.client
from typing import Any
from urllib.error import URLError
from urllib.parse import quote

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from worker.channels.base import (
    Channel,
    DeliveryError,
    DeliveryResult,
    Message,
    classify_status,
    header,
    parse_retry_after,
)
from worker.channels.email import safe_url

# Slack's documented limits (Block Kit reference, chat.postMessage).
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
MAX_FIELDS = 10
CONTEXT_TEXT_MAX = 3000
MAX_BLOCKS = 50
MAX_ROWS = 40  # alerts shown one section each in a grouped message (header, body and a tail fit)
TEXT_MAX = 40000
FALLBACK_TEXT_MAX = 4000  # Slack's advice for the top-level text; we stay well under TEXT_MAX

EMOJI = {
    "critical": ":rotating_light:",
    "high": ":red_circle:",
    "warning": ":warning:",
    "medium": ":large_orange_diamond:",
    "info": ":information_source:",
}
RESOLVED_EMOJI = ":white_check_mark:"
TEST_EMOJI = ":test_tube:"

_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}

# Web API error codes, by what a retry can do about them.
_AUTH_ERRORS = frozenset(
    {
        "not_authed",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "not_allowed_token_type",
        "ekm_access_denied",
        "org_login_required",
    }
)
_INVALID_ERRORS = frozenset(
    {
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_arguments",
        "invalid_arg_name",
        "invalid_json",
        "json_not_object",
        "too_many_attachments",
        "invalid_attachments",
        "invalid_payload",
        "invalid_form_data",
        "invalid_post_type",
    }
)
_TRANSIENT_ERRORS = {
    "ratelimited": "rate_limited",
    "rate_limited": "rate_limited",
    "internal_error": "server_error",
    "fatal_error": "server_error",
    "service_unavailable": "server_error",
    "request_timeout": "timeout",
}


def _units(text: str) -> int:
    """Length in UTF-16 code units (what a JS-side limit counts; never less than len())."""
    return len(text.encode("utf-16-le")) // 2


def fit(text: str, limit: int, *, mrkdwn: bool) -> str:
    """Escape (for mrkdwn) and truncate to `limit`, ending with an ellipsis; never cuts an entity."""
    pieces = [_ESCAPES.get(ch, ch) for ch in text] if mrkdwn else list(text)
    if sum(_units(p) for p in pieces) <= limit:
        return "".join(pieces)
    out: list[str] = []
    used = 0
    for piece in pieces:
        n = _units(piece)
        if used + n > limit - 1:
            break
        out.append(piece)
        used += n
    return "".join(out) + "…"


def link(url: str, label: str) -> str | None:
    """An mrkdwn link `<url|label>`, or None when the URL is not plain http(s)."""
    safe = safe_url(url)
    if safe is None:
        return None
    # Characters that would end or split the <url|label> token are percent-encoded; & is escaped
    # as &amp; (Slack unescapes it), so query strings keep their meaning.
    target = quote(safe, safe=":/?#[]@!$&'()*+,;=%~-._").replace("&", "&amp;")
    return f"<{target}|{fit(label, 200, mrkdwn=True)}>"


def emoji_for(message: Message) -> str:
    if message.status == "resolved":
        return RESOLVED_EMOJI
    if message.status == "test":
        return TEST_EMOJI
    return EMOJI.get(message.severity, ":bell:")


def build_blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, Block Kit blocks) for one message, within Slack's limits."""
    emoji = emoji_for(message)
    tag = {"resolved": "RESOLVED", "test": "TEST"}.get(message.status, message.severity.upper())
    title = message.title or message.check or "alert"

    blocks: list[dict[str, Any]] = [{"type": "header", "text": {
        "type": "plain_text", "text": fit(f"{emoji} {title}", HEADER_MAX, mrkdwn=False), "emoji": True}}]

    body_parts = []
    if message.summary:
        body_parts.append(
            f"*{_escape(message.summary)}*" if message.description else _escape(message.summary)
        )
    if message.description and message.description != message.summary:
        body_parts.append(_escape(message.description))
    body = "\n\n".join(body_parts) or _escape(title)
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(body, SECTION_TEXT_MAX)}})

    rows = message.rows
    for row in rows[:MAX_ROWS]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(alert_row(row, len(rows) > 1),
                                                                                  SECTION_TEXT_MAX)}})
    if len(rows) > MAX_ROWS:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"and {len(rows) - MAX_ROWS} "
                                                        "more alerts (see the status page)"}]})
    if message.status == "test":
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "Status: test"}]})

    fallback = f"{emoji} [{tag}] {title}"
    if message.summary:
        fallback += f": {message.summary}"
    return fit(fallback, FALLBACK_TEXT_MAX, mrkdwn=True), blocks[:MAX_BLOCKS]


def alert_row(m: Message, grouped: bool) -> str:
    """One alert as mrkdwn: severity and check, value against its condition, labels, since (or how
    long it fired), runbook and the status page's links. Every piece of text is escaped."""
    tag = "RESOLVED" if m.status == "resolved" else m.severity.upper()
    head = f"{emoji_for(m)} *[{tag}] {fit(m.check, 500, mrkdwn=True)}*"
    if grouped and m.title:
        head += f" {fit(m.title, 500, mrkdwn=True)}"
    facts = []
    if m.value_text is not None:
        facts.append(f"*Value* {fit(m.value_text, 200, mrkdwn=True)}")
    labels = [f"`{fit(str(k), 100, mrkdwn=True)}={fit(str(v), 200, mrkdwn=True)}`" for k, v in sorted(m.labels.items())]
    if labels:
        facts.append(" ".join(labels[:MAX_FIELDS]))
    if m.started_at is not None:
        facts.append(f"*Since* {m.started_at.isoformat(timespec='seconds')}")
    if m.fired_for:
        facts.append(f"fired for {m.fired_for}")
    links = []
    if m.runbook:
        links.append(link(m.runbook_link() or "", "Runbook") or f"Runbook: {fit(m.runbook, 500, mrkdwn=True)}")
    for key, label in (("alert", "View alert"), ("silence", "Silence")):
        if (url := m.links().get(key)) and (made := link(url, label)):
            links.append(made)
    text = head + ("\n" + " · ".join(facts) if facts else "")
    return text + ("\n:book: " + " · ".join(links) if links else "")


def _escape(text: str) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def _cut(escaped: str, limit: int) -> str:
    """Truncate already-escaped mrkdwn without splitting an &entity;."""
    if _units(escaped) <= limit:
        return escaped
    out: list[str] = []
    used = 0
    i = 0
    while i < len(escaped):
        piece = escaped[i]
        if piece == "&":
            end = escaped.find(";", i, i + 6)
            if end != -1:
                piece = escaped[i : end + 1]
        n = _units(piece)
        if used + n > limit - 1:
            break
        out.append(piece)
        used += n
        i += len(piece)
    return "".join(out) + "…"


def _transport_error(exc: BaseException) -> DeliveryError | None:
    reason = exc.reason if isinstance(exc, URLError) else exc
    if isinstance(reason, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        return DeliveryError("timeout", f"Slack request timed out: {exc}", permanent=False)
    if isinstance(exc, URLError | OSError | http.client.HTTPException):
        return DeliveryError("connection", f"Slack connection failed: {exc}", permanent=False)
    if isinstance(exc, ValueError):  # an answer the SDK cannot decode (bytes not UTF-8): found by tests/reliability
        return DeliveryError("server_error", f"Slack answered a body that cannot be read: {str(exc)[:200]}",
                             permanent=False)
    return None


def map_webhook_response(status: int, body: str, headers: dict[str, Any] | None) -> DeliveryError | None:
    """None when Slack accepted the message, else the error."""
    code = (body or "").strip()
    if 200 <= status < 300:
        return None
    retry_after = parse_retry_after(header(headers, "retry-after"))
    text = f"Slack webhook HTTP {status}: {code[:200] or 'no body'}"
    return classify_status(status, retry_after, text)


def map_api_error(exc: SlackApiError) -> DeliveryError:
    resp = exc.response
    status = int(getattr(resp, "status_code", 0) or 0)
    data = getattr(resp, "data", None)
    code = str(data.get("error", "")) if isinstance(data, dict) else ""
    retry_after = parse_retry_after(header(getattr(resp, "headers", None), "retry-after"))
    text = f"Slack API error: {code or 'unknown'} (HTTP {status})"
    if code in _TRANSIENT_ERRORS:
        return DeliveryError(
            _TRANSIENT_ERRORS[code], text, permanent=False, retry_after=retry_after, status=status
        )
    if status != 200:
        err = classify_status(status, retry_after, text)
        if err is not None:
            return err
    if code in _AUTH_ERRORS:
        return DeliveryError("auth", text, permanent=True, status=status)
    if code in _INVALID_ERRORS:
        return DeliveryError("invalid", text, permanent=True, status=status)
    # channel_not_found, not_in_channel, is_archived, message_not_found, cant_update_message, and
    # codes we do not know: a retry will not change Slack's mind.
    return DeliveryError("client_error", text, permanent=True, status=status)


class SlackChannel(Channel):
    kind = "slack"

    def __init__(
        self,
        webhook_url: str | None = None,
        bot_token: str | None = None,
        channel: str | None = None,
        api_url: str | None = None,
        timeout: float = 10,
    ) -> None:
        self.webhook_url = webhook_url
        self.bot_token = bot_token
        self.channel = channel
        self.api_url = api_url
        self.timeout = timeout
        # Prefer the Web API when both are given: it can thread and update.
        self.mode = "api" if bot_token else "webhook"

    def _web_client(self) -> WebClient:
        return WebClient(
            token=self.bot_token,
            base_url=self.api_url or WebClient.BASE_URL,
            timeout=self.timeout,  # type: ignore[arg-type]  # urlopen accepts a float
            retry_handlers=[],
        )

    def _webhook_client(self) -> WebhookClient:
        assert self.webhook_url
        return WebhookClient(self.webhook_url, timeout=self.timeout, retry_handlers=[])  # type: ignore[arg-type]

    def send(
        self,
        message: Message,
        thread_ts: str | None = None,
        update_ts: str | None = None,
        channel: str | None = None,
    ) -> DeliveryResult:
        """Post a message. With the Web API, `thread_ts` replies in a thread and `update_ts`
        rewrites an earlier message (pass `channel` = the channel id from that message's detail).
        Returns provider_id = the message ts (None for webhooks, which return no id)."""
        # Missing configuration is a permanent delivery failure (the notification goes dead and
        # says why), not a crash of the worker.
        if not self.webhook_url and not self.bot_token:
            raise DeliveryError(
                "invalid",
                "Slack is not configured: set ALERT_SLACK_WEBHOOK_URL or SLACK_BOT_TOKEN",
                permanent=True,
            )
        if self.mode == "api" and not (channel or self.channel):
            raise DeliveryError("invalid", "SLACK_BOT_TOKEN is set but SLACK_CHANNEL is not", permanent=True)
        text, blocks = build_blocks(message)
        if self.mode == "webhook":
            return self._send_webhook(text, blocks)
        return self._send_api(text, blocks, thread_ts=thread_ts, update_ts=update_ts, channel=channel)

    def _send_webhook(self, text: str, blocks: list[dict[str, Any]]) -> DeliveryResult:
        try:
            resp = self._webhook_client().send(
                text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
            )
        except SlackClientError as exc:
            raise DeliveryError("invalid", f"Slack webhook misconfigured: {exc}", permanent=True) from exc
        except Exception as exc:
            err = _transport_error(exc)
            if err is None:
                raise
            raise err from exc
        err = map_webhook_response(resp.status_code, resp.body, dict(resp.headers or {}))
        if err is not None:
            raise err
        return DeliveryResult(
            provider_id=None, detail={"provider": "slack_webhook", "status": resp.status_code}
        )

    def _send_api(
        self,
        text: str,
        blocks: list[dict[str, Any]],
        *,
        thread_ts: str | None,
        update_ts: str | None,
        channel: str | None,
    ) -> DeliveryResult:
        client = self._web_client()
        target = channel or self.channel
        try:
            if update_ts:
                resp = client.chat_update(channel=target, ts=update_ts, text=text, blocks=blocks)
            else:
                resp = client.chat_postMessage(
                    channel=target,
                    text=text,
                    blocks=blocks,
                    thread_ts=thread_ts,
                    unfurl_links=False,
                    unfurl_media=False,
                )
        except SlackApiError as exc:
            raise map_api_error(exc) from exc
        except SlackClientError as exc:
            raise DeliveryError("invalid", f"Slack request invalid: {exc}", permanent=True) from exc
        except Exception as exc:
            err = _transport_error(exc)
            if err is None:
                raise
            raise err from exc
        if not isinstance(resp.data, dict):  # a 200 whose body is not a JSON object (found by tests/reliability)
            raise DeliveryError("server_error", f"Slack API answered HTTP {resp.status_code} with a body that is not "
                                "a JSON object", permanent=False, status=resp.status_code)
        ts = resp.get("ts")
        return DeliveryResult(
            provider_id=str(ts) if ts else None,
            detail={
                "provider": "slack_api",
                "channel": resp.get("channel"),
                "ts": ts,
                "thread_ts": thread_ts,
                "updated": bool(update_ts),
            },
        )
