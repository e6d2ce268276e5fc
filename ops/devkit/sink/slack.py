"""Slack on the sink: incoming webhooks (POST /services/T/B/X) and the Web API (chat.postMessage,
chat.update, auth.test), with tokens, channels and Block Kit's limits checked as Slack checks them."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from ops.devkit.sink.base import RecordedRequest, Response, header, now_iso

DEFAULT_WEBHOOK_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
SLACK_TEXT_MAX = 40000
CHANNEL_ID_RE = re.compile(r"^[CGD][A-Z0-9]{8,}$")


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


def slack_channel_id(name: str) -> str:
    name = name.lstrip("#")
    if CHANNEL_ID_RE.match(name):
        return name
    return "C" + hashlib.sha1(name.encode()).hexdigest()[:10].upper()  # noqa: S324 - an id, not security


def slack_channel_of(headers: Mapping[str, str], raw: bytes) -> str:
    """The `channel` argument of a Web API call (JSON or form-encoded), for its per-channel limit."""
    try:
        if "application/json" in (header(headers, "content-type") or "").lower():
            data = json.loads(raw or b"{}")
        else:
            data = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
    except (ValueError, UnicodeDecodeError):
        return ""
    return str(data.get("channel") or "").lstrip("#") if isinstance(data, dict) else ""





class SlackRoutes:
    """ProviderSink's Slack routes (a mixin: the state lives on the sink)."""

    def _slack_webhook(self, rec: RecordedRequest, raw: bytes) -> Response:
        path = rec.path
        if self.slack_webhook_paths is not None:
            if path not in self.slack_webhook_paths:
                return Response(404, "no_service")
        elif len([p for p in path[len("/services/") :].split("/") if p]) != 3:
            return Response(404, "no_service")
        ctype = (header(rec.headers, "content-type") or "").lower()
        try:
            if "application/x-www-form-urlencoded" in ctype:
                data = json.loads(parse_qs(raw.decode())["payload"][0])
            else:
                data = json.loads(raw or b"null")
        except (ValueError, KeyError, UnicodeDecodeError):
            return Response(400, "invalid_payload")
        rec.body = data
        if not isinstance(data, dict) or not (
            data.get("text") or data.get("blocks") or data.get("attachments")
        ):
            return Response(400, "invalid_payload")
        if "blocks" in data and not _check_blocks(data["blocks"]):
            return Response(400, "invalid_blocks")
        if len(str(data.get("text") or "")) > SLACK_TEXT_MAX:
            return Response(400, "msg_too_long")
        self._record_slack(rec, "webhook", data, channel=None, ts=self._next_ts(), webhook=path)
        return Response(200, "ok")

    def _slack_api(self, rec: RecordedRequest, raw: bytes, route: str, bearer: str | None) -> Response:
        ctype = (header(rec.headers, "content-type") or "").lower()
        try:
            if "application/json" in ctype:
                data = json.loads(raw or b"{}")
            else:
                data = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        except (ValueError, UnicodeDecodeError):
            return Response(200, {"ok": False, "error": "invalid_json"})
        if not isinstance(data, dict):
            return Response(200, {"ok": False, "error": "json_not_object"})
        token = bearer or data.pop("token", None)
        rec.body = data
        if not token:
            return Response(200, {"ok": False, "error": "not_authed"})
        if (self.slack_tokens is not None and token not in self.slack_tokens) or (
            self.slack_tokens is None and not token.startswith("xox")
        ):
            return Response(200, {"ok": False, "error": "invalid_auth"})
        if route == "slack.auth.test":
            return Response(
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
                return Response(200, {"ok": False, "error": "invalid_blocks_format"})
        text = data.get("text") or ""
        if not text and not blocks and not data.get("attachments"):
            return Response(200, {"ok": False, "error": "no_text"})
        if blocks is not None and not _check_blocks(blocks):
            return Response(200, {"ok": False, "error": "invalid_blocks"})
        if len(str(text)) > SLACK_TEXT_MAX:
            return Response(200, {"ok": False, "error": "msg_too_long"})
        channel = str(data.get("channel") or "")
        if not channel:
            return Response(200, {"ok": False, "error": "channel_not_found"})
        if self.slack_channels is not None and channel.lstrip("#") not in self.slack_channels:
            return Response(200, {"ok": False, "error": "channel_not_found"})

        if route == "slack.chat.update":
            # chat.update takes the channel id (from the chat.postMessage answer), not a name.
            if not CHANNEL_ID_RE.match(channel):
                return Response(200, {"ok": False, "error": "channel_not_found"})
            ts = str(data.get("ts") or "")
            original = self._slack_by_ts.get((channel, ts))
            if original is None:
                return Response(200, {"ok": False, "error": "message_not_found"})
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
            return Response(
                200, {"ok": True, "channel": channel, "ts": ts, "text": text, "message": message}
            )

        channel_id = slack_channel_id(channel)
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
        return Response(200, {"ok": True, "channel": channel_id, "ts": ts, "message": message})

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
            "created_at": now_iso(),
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


def signed_interaction(signing_secret: str, *, value: str, action_id: str, user: str = "ana",
                       team: str = "T00000000", response_url: str | None = None,
                       timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """What Slack POSTs to an app's interactivity URL when someone clicks a button: a block_actions
    payload, form-encoded as `payload=<json>`, signed as Slack signs (X-Slack-Signature: v0= HMAC-SHA256
    of `v0:<timestamp>:<body>` with the app's signing secret; X-Slack-Request-Timestamp)."""
    import hmac
    from urllib.parse import urlencode

    ts = int(time.time()) if timestamp is None else timestamp
    payload = {
        "type": "block_actions", "team": {"id": team, "domain": "example"},
        "user": {"id": "U0000000001", "username": user, "name": user, "team_id": team},
        "api_app_id": "A0000000001", "token": "legacy-verification-token", "trigger_id": f"{ts}.1.abc",
        "container": {"type": "message", "message_ts": f"{ts}.000100", "channel_id": "C0000000001"},
        "channel": {"id": "C0000000001", "name": "alerts"},
        "response_url": response_url or "https://hooks.slack.com/actions/T00000000/1/x",
        "actions": [{"action_id": action_id, "block_id": "opsfleet_actions", "value": value, "type": "button",
                     "action_ts": f"{ts}.000200", "text": {"type": "plain_text", "text": "Approve"}}],
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    digest = hmac.new(signing_secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": str(ts),
                  "X-Slack-Signature": f"v0={digest}"}
