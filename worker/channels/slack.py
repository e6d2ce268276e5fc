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
    http_json,
    parse_retry_after,
)
from worker.channels.slack_blocks import build_blocks

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
    rate_limit = (0.95, 1)  # Slack: about 1 message per second per incoming webhook / channel
    folds = True
    probing = "on_request"

    @classmethod
    def from_settings(cls, settings: Any, spec: Any = None, *, monitored: Any = None,
                      timeout: float = 10.0) -> SlackChannel:
        """ALERT_SLACK_WEBHOOK_URL, or SLACK_BOT_TOKEN + SLACK_CHANNEL (the routing.yaml channel's
        `slack_channel` first); SLACK_API_URL for a fake of the Web API."""
        made = cls(webhook_url=settings.alert_slack_webhook_url, bot_token=settings.slack_bot_token,
                   channel=(spec.slack_channel if spec is not None else None) or settings.slack_channel,
                   api_url=settings.slack_api_url, timeout=timeout)
        # buttons (approve an action, acknowledge, silence) only where `opsfleet serve` can take Slack's clicks
        made.interactive = bool(getattr(settings, "slack_signing_secret", None))
        return made

    @classmethod
    def problems(cls, settings: Any, spec: Any = None) -> list[str]:
        if settings.slack_bot_token:
            return [] if (spec and spec.slack_channel) or settings.slack_channel else ["SLACK_CHANNEL not set"]
        return [] if settings.alert_slack_webhook_url else ["ALERT_SLACK_WEBHOOK_URL (or SLACK_BOT_TOKEN) not set"]

    @classmethod
    def probe(cls, settings: Any, spec: Any, timeout: float, monitored: Any = None) -> tuple[str, str]:
        """auth.test with the bot token: sends nothing. An incoming webhook has no such call."""
        if not settings.slack_bot_token:
            return "ok", "configured (an incoming webhook has no call that sends nothing: not probed)"
        base = (settings.slack_api_url or "https://slack.com/api/").rstrip("/") + "/"
        status, body = http_json(base + "auth.test", {"Authorization": f"Bearer {settings.slack_bot_token}",
                                                      "Content-Type": "application/x-www-form-urlencoded"},
                                 timeout, method="POST", data=b"")
        if status == 200 and body.get("ok"):
            return "ok", f"Slack auth.test ok ({body.get('team', '')})"
        return "fail", f"Slack auth.test: {body.get('error') or status}"

    @classmethod
    def bucket_target(cls, settings: Any, name: str) -> str:
        # one bucket per bot-token channel or incoming webhook
        return f"slack:{settings.slack_bot_token and settings.slack_channel or settings.alert_slack_webhook_url}"

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
        previous: dict[str, Any] | None = None,
        *,
        thread_ts: str | None = None,
        update_ts: str | None = None,
        channel: str | None = None,
    ) -> DeliveryResult:
        """Post a message. With the Web API, `thread_ts` replies in a thread and `update_ts`
        rewrites an earlier message (pass `channel` = the channel id from that message's detail).
        `previous` (the answer to the alert's first message: its ts and channel id) does that for
        the fleet: a repeat threads onto it, the resolved notice updates it.
        Returns provider_id = the message ts (None for webhooks, which return no id)."""
        if previous and previous.get("ts") and previous.get("channel_id") and self.mode == "api" \
                and thread_ts is None and update_ts is None:
            if message.status == "resolved":
                update_ts = previous["ts"]
            else:
                thread_ts = previous["ts"]
            channel = previous["channel_id"]
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
        text, blocks = build_blocks(message, interactive=getattr(self, "interactive", False))
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
