"""Who may approve an action, and how they prove it: the status page (its basic auth and form token),
a Slack button (Slack's signed interaction payload: the signing secret, within 5 minutes, from the
configured workspace), an email link (a token signed with OPSFLEET_ACTION_SECRET, expiring, good for
one approval, confirmed on a page: a GET never approves)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

LINK_TTL = timedelta(hours=24)
ACK = "ack-"  # a link whose subject is `ack-<fingerprint>` acknowledges that alert (else: an action's id)
SILENCE = "silence-"  # `silence-1h-<fingerprint>`: silences that alert for 1h (once)


class Refused(Exception):
    """An approval that does not prove itself: `status` is the HTTP answer (401, 403, 400)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _sig(secret: str, text: str) -> str:
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def link_token(secret: str, action_id: str, now: datetime, ttl: timedelta = LINK_TTL) -> str:
    """`<action id>.<expiry, epoch s>.<signature>`: what an email's approval link carries."""
    expires = int((now + ttl).timestamp())
    return f"{action_id}.{expires}.{_sig(secret, f'{action_id}.{expires}')}"


def action_of_link(secret: str | None, token: str, now: datetime) -> str:
    """The action a link's token names, once its signature and expiry hold; Refused otherwise."""
    if not secret:
        raise Refused(403, "approval links are off: OPSFLEET_ACTION_SECRET is not set")
    parts = token.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        raise Refused(401, "the link is not an approval link")
    action_id, expires, sig = parts
    if not hmac.compare_digest(sig, _sig(secret, f"{action_id}.{expires}")):
        raise Refused(401, "the link's signature does not hold")
    if now.timestamp() > int(expires):
        raise Refused(401, "the link has expired")
    return action_id


SILENCES = {"1h": timedelta(hours=1), "4h": timedelta(hours=4), "resolved": timedelta(days=7)}  # buttons and links:
# "resolved" lasts until the alert resolves (worker.notify.silences.end_with), 7 days at the most


@dataclass(frozen=True)
class SlackClick:
    action_id: str  # ours: the value of the button (an action's id; the alert's fingerprint for ack/silence)
    verb: str  # approve | ack | silence
    duration: timedelta | None  # a silence's length
    user: str
    team: str
    response_url: str | None


def slack_click(secret: str | None, team: str | None, body: bytes, headers: dict[str, str],
                clock: Any = time.time) -> SlackClick:
    """A Slack block_actions payload, verified as Slack asks (v0 HMAC-SHA256 over `v0:<timestamp>:<body>`
    with the signing secret, a timestamp within 5 minutes), from `team` when one is configured."""
    from slack_sdk.signature import SignatureVerifier

    if not secret:
        raise Refused(403, "Slack interactions are off: SLACK_SIGNING_SECRET is not set")
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp, signature = lower.get("x-slack-request-timestamp", ""), lower.get("x-slack-signature", "")

    class _Clock:
        def now(self) -> float:
            return clock()

    try:
        valid = bool(timestamp and signature and SignatureVerifier(secret, clock=_Clock()).is_valid(body, timestamp,
                                                                                                 signature))
    except ValueError:  # a timestamp that is not a number
        valid = False
    if not valid:
        raise Refused(401, "the Slack payload is unsigned, wrongly signed or older than 5 minutes")
    try:
        payload = json.loads(parse_qs(body.decode())["payload"][0])
        click = payload["actions"][0]
        parts, value = click["action_id"].split(":"), click["value"]
        verb = parts[0]
        user = payload["user"].get("username") or payload["user"].get("name") or payload["user"]["id"]
        who_team = (payload.get("team") or {}).get("id", "")
    except (KeyError, IndexError, ValueError, TypeError, AttributeError):
        raise Refused(400, "not a Slack block_actions payload with an opsfleet button") from None
    if team and who_team != team:
        raise Refused(403, f"the payload comes from workspace {who_team!r}, not SLACK_TEAM_ID")
    duration = SILENCES.get(parts[1]) if verb == "silence" and len(parts) > 2 else None
    if verb not in ("approve", "ack", "silence") or (verb == "silence" and duration is None):
        raise Refused(400, f"unknown button {click['action_id'][:60]!r}")
    return SlackClick(value, verb, duration, f"{user} (slack)", who_team, payload.get("response_url"))
