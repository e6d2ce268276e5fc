"""Approving an alert's action where the page arrives (worker.actions.approve says who may): the
status page's button (behind its basic auth and form token), Slack's buttons (POST /slack/interactions,
signed by Slack, answered at once, the message told in a thread via response_url), an email's link
(GET /act/<token> shows what it would do and asks to confirm; only the POST approves). An approval
sends maintenance.action once; a second click, a replayed payload or a used link change nothing but
the action's record."""

from __future__ import annotations

import json
import threading
import urllib.request
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from worker.actions import store
from worker.actions.approve import ACK, SILENCE, SILENCES, Refused, action_of_link, slack_click
from worker.actions.catalog import KINDS
from worker.fleet.logs import get_logger

log = get_logger(__name__)


def _send_default(action_id: str) -> None:
    from worker.app import app

    app.send_task("maintenance.action", kwargs={"action_id": action_id}, queue="maintenance")


class Approvals:
    def __init__(self, fleet: Any, send: Any = None) -> None:
        self.fleet = fleet
        self.send = send or getattr(fleet, "send_action", None) or _send_default

    def approve(self, action_id: str, *, who: str, via: str, confirm: str | None = None) -> tuple[int, str]:
        """(HTTP status, what happened, in words)."""
        now = datetime.now(UTC)
        with self.fleet.engine.begin() as conn:
            row = store.get(conn, action_id)
            if row is None:
                return 404, f"no action {action_id[:64]}"
            kind = KINDS[row.kind]
            if kind.confirm and (confirm or "").strip() != str(row.labels.get(kind.confirm)):
                store.note(conn, action_id, what="approval refused", at=now, who=who, via=via,
                           detail=f"the {kind.confirm} typed was not {row.labels.get(kind.confirm)!r}")
                return 400, f"type the {kind.confirm}'s name exactly to approve: {row.dry_run}"
            approved = store.approve(conn, action_id, who=who, via=via, at=now)
        if not approved:
            return 200, f"not approved again: it is {row.state} ({row.dry_run})"
        self.send(action_id)
        log.info("action_approved", action=action_id, kind=row.kind, by=who, via=via)
        return 200, f"approved by {who}: {row.dry_run}; a maintenance worker runs it now"

    def acknowledge(self, fingerprint: str, *, who: str, comment: str = "acknowledged from Slack") -> str:
        """An alert's Acknowledge button: as `opsfleet alerts ack` (no repeats, no escalation step)."""
        from worker.checks import store as alerts

        try:
            with self.fleet.engine.begin() as conn:
                rows = alerts.acknowledge(conn, fingerprint, author=who, comment=comment,
                                          now=datetime.now(UTC))
        except ValueError as exc:
            return f"not acknowledged: {exc}"
        log.info("alert_acknowledged", fingerprint=fingerprint, by=who)
        return f"acknowledged by {who}: " + ", ".join(r.check_name for r in rows)

    def silence(self, fingerprint: str, *, who: str, duration: Any, comment: str = "silenced from Slack") -> str:
        """An alert's Silence button: a silence of its check and labels, for `duration` (until it resolves
        for SILENCES["resolved"]), by whoever clicked."""
        import sqlalchemy as sa

        from worker.fleet.timeutil import human_duration
        from worker.notify import silences

        with self.fleet.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT check_name, labels FROM fleet.alerts WHERE fingerprint = :fp"),
                               {"fp": fingerprint}).first()
        if row is None:
            return f"no alert {fingerprint[:64]}"
        until = duration == SILENCES["resolved"]
        silences.add(self.fleet.engine, check=row.check_name, labels=dict(row.labels or {}), duration=duration,
                     comment=comment, author=who, now=datetime.now(UTC), until_resolved=fingerprint if until else None)
        log.info("alert_silenced", fingerprint=fingerprint, by=who, duration_s=duration.total_seconds())
        length = "until it resolves" if until else f"for {human_duration(duration.total_seconds())}"
        return f"silenced {length} by {who}: {row.check_name}"

    # -- Slack --------------------------------------------------------------------------------------------
    def slack(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        settings = self.fleet.settings
        try:
            click = slack_click(settings.slack_signing_secret, settings.slack_team_id, body, headers)
        except Refused as exc:
            log.warning("slack_interaction_refused", status=exc.status, reason=str(exc))
            return exc.status, {"error": str(exc)}
        if click.verb == "ack":
            text = self.acknowledge(click.action_id, who=click.user)
        elif click.verb == "silence":
            text = self.silence(click.action_id, who=click.user, duration=click.duration)
        else:
            _, text = self.approve(click.action_id, who=click.user, via="slack")
        if click.response_url:  # the message is told in its thread, after Slack has its answer (3 s)
            threading.Thread(target=_respond, args=(click.response_url, text), daemon=True).start()
        return 200, {}

    # -- email links --------------------------------------------------------------------------------------
    def link(self, token: str) -> tuple[int, Any, str | None]:
        """(status, what the link acts on or None, a reason when refused): an action's row, or for an
        acknowledge link (`ack-<fingerprint>`) the alert shown as one."""
        try:
            subject = action_of_link(self.fleet.settings.opsfleet_action_secret, token, datetime.now(UTC))
        except Refused as exc:
            log.warning("action_link_refused", status=exc.status, reason=str(exc))
            return exc.status, None, str(exc)
        with self.fleet.engine.connect() as conn:
            if subject.startswith(SILENCE):
                import sqlalchemy as sa

                length, _, fp = subject[len(SILENCE):].partition("-")
                a = conn.execute(sa.text("SELECT * FROM fleet.alerts WHERE fingerprint = :fp"), {"fp": fp}).first()
                if a is None or length not in SILENCES:
                    return 404, None, "no such alert"
                used = conn.execute(sa.text("SELECT author FROM fleet.silences WHERE comment = :c"),
                                    {"c": _link_comment(token)}).first()
                return 200, SimpleNamespace(
                    id=subject, kind="silence", check_name=a.check_name, proposed_at=a.since,
                    approved_by=used.author if used else None, duration=SILENCES[length],
                    dry_run=f"silence {a.check_name} ({', '.join(f'{k}={v}' for k, v in sorted((a.labels or {}).items()))}) "
                            + ("until it resolves" if length == "resolved" else f"for {length}")
                            + ": its notices are held back",
                    state="used" if used else "proposed"), None
            if subject.startswith(ACK):
                import sqlalchemy as sa

                a = conn.execute(sa.text("SELECT * FROM fleet.alerts WHERE fingerprint = :fp"),
                                 {"fp": subject[len(ACK):]}).first()
                if a is None:
                    return 404, None, "no such alert"
                labels = ", ".join(f"{k}={v}" for k, v in sorted((a.labels or {}).items()))
                return 200, SimpleNamespace(
                    id=subject, kind="ack", check_name=a.check_name, proposed_at=a.since, approved_by=a.acked_by,
                    dry_run=f"acknowledge {a.check_name} ({labels}): no more repeats or escalation steps until it "
                            "resolves",
                    state="proposed" if a.state == "firing" and a.acked_at is None else
                    ("acknowledged" if a.acked_at else a.state)), None
            row = store.get(conn, subject)
        if row is None:
            return 404, None, "no such action"
        return 200, row, None

    def link_post(self, token: str, body: bytes) -> tuple[int, str]:
        status, row, reason = self.link(token)
        if row is None:
            return status, reason or "refused"
        form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        who = (form.get("who") or "").strip()[:100] or "an email link"
        if row.kind == "silence":
            if row.state != "proposed":
                return 200, f"this link was used already (by {row.approved_by}): no second silence"
            return 200, self.silence(row.id[len(SILENCE):].partition("-")[2], who=f"{who} (email link)",
                                     duration=row.duration, comment=_link_comment(token))
        if row.kind == "ack":
            if row.state != "proposed":
                return 200, f"not acknowledged again: it is {row.state}"
            return 200, self.acknowledge(row.id[len(ACK):], who=f"{who} (email link)", comment="acknowledged by an email link")
        return self.approve(str(row.id), who=f"{who} (email link)", via="email", confirm=form.get("confirm"))


def _link_comment(token: str) -> str:
    """A silence made by an email link says so, and which link (its signature): a second use finds it."""
    return f"silenced by an email link ({token.rsplit('.', 1)[-1][:16]})"


def _respond(url: str, text: str) -> None:
    """Slack's response_url: a message in the alert's thread (never replacing the alert)."""
    body = json.dumps({"response_type": "in_channel", "replace_original": False, "text": text}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5):  # noqa: S310 - Slack's response_url (https, or a loopback fake)
            pass
    except OSError as exc:
        log.warning("slack_response_failed", error=str(exc)[:200])
