"""An alert email's parts: the subject, the HTML (Jinja2 with autoescape, from
worker/channels/templates/alert.html.j2) and the text part, for one alert or a group. The email
channel (email.py) sends what this renders; nothing here talks to Resend."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from worker.channels.base import Message, safe_url

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
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

def _autoescape(template_name: str | None) -> bool:
    # Escape everything except templates that are explicitly plain text.
    return not (template_name or "").endswith(".txt.j2")


def _nl2br(value: Any) -> Markup:
    return Markup("<br>\n").join(escape(line) for line in str(value).splitlines())


def _value(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


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


def render(message: Message, action_secret: str | None = None) -> RenderedEmail:
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
        "rows": [alert_row(r, action_secret) for r in message.rows],
    }
    return RenderedEmail(
        subject=subject,
        html=_env.get_template("alert.html.j2").render(context),
        text=_env.get_template("alert.txt.j2").render(context),
    )


def alert_row(m: Message, action_secret: str | None = None) -> dict[str, Any]:
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
        "evidence": m.evidence_lines(),
        "actions": [{"dry_run": a.get("dry_run", ""), "url": _approval_url(m, a, action_secret)}
                    for a in m.actions if isinstance(a, dict) and a.get("id")],
        "ack_url": _approval_url(m, {"id": f"ack-{m.fingerprint}"}, action_secret)
        if m.status == "firing" and m.fingerprint else None,
        "silence_urls": [(label, _approval_url(m, {"id": f"silence-{d}-{m.fingerprint}"}, action_secret))
                         for d, label in (("1h", "1h"), ("4h", "4h"), ("resolved", "until resolved"))]
        if m.status == "firing" and m.fingerprint and action_secret and m.public_url else [],
    }


def _approval_url(m: Message, action: dict[str, Any], secret: str | None) -> str | None:
    """A signed, single-use, expiring link to the action's confirmation page (OPSFLEET_PUBLIC_URL and
    OPSFLEET_ACTION_SECRET both set); else None: the email says where to approve it instead."""
    if not (secret and m.public_url):
        return None
    from datetime import datetime

    from worker.actions.approve import link_token

    return safe_url(f"{m.public_url.rstrip('/')}/act/{link_token(secret, str(action['id']), datetime.now(UTC))}")
