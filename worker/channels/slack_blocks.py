"""A Slack message's Block Kit blocks and fallback text, for one alert or a group, within Slack's
documented limits and with mrkdwn escaped. The Slack channel (slack.py) posts what this builds;
nothing here talks to Slack."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from worker.channels.base import Message, safe_url

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


def build_blocks(message: Message, interactive: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, Block Kit blocks) for one message, within Slack's limits; with `interactive`
    (SLACK_SIGNING_SECRET: serve takes the clicks) the buttons: approve a proposed action, acknowledge,
    silence 1h / 4h."""
    emoji = emoji_for(message)
    tag = {"resolved": "RESOLVED", "test": "TEST"}.get(message.status, message.severity.upper())
    title = message.title or message.check or "alert"

    blocks: list[dict[str, Any]] = [{"type": "header", "text": {
        "type": "plain_text", "text": fit(f"{emoji} {title}", HEADER_MAX, mrkdwn=False), "emoji": True}}]

    details = message.details  # the summary and the description, each once, and not the header again
    if details:
        body_parts = [f"*{_escape(details[0])}*"] + [_escape(d) for d in details[1:]] if len(details) > 1 \
            else [_escape(details[0])]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut("\n\n".join(body_parts),
                                                                                  SECTION_TEXT_MAX)}})

    rows = message.rows
    for row in rows[:MAX_ROWS]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(alert_row(row, len(rows) > 1),
                                                                                  SECTION_TEXT_MAX)}})
    if len(rows) > MAX_ROWS:  # the message stands for every row; the status page lists them all
        page = link(message.public_url, "the status page") if message.public_url else None
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"and {len(rows) - MAX_ROWS} "
                                                        f"more alerts (see {page or 'the status page'})"}]})
    buttons = [] if not interactive else [{"type": "button", "action_id": f"approve:{a['id']}", "value": str(a["id"]), "style": "primary",
                "text": {"type": "plain_text", "text": fit(f"Approve: {a.get('dry_run', a.get('kind'))}", 75, mrkdwn=False)}}
               for row in rows[:MAX_ROWS] for a in row.actions
               if isinstance(a, dict) and a.get("id") and not a.get("confirm")][:5]
    for row in (rows[:3] if interactive and message.status == "firing" else []):  # ack / silence where it arrives
        if row.fingerprint and row.status == "firing":
            name = fit(row.check, 30, mrkdwn=False) if len(rows) > 1 else ""
            buttons += [{"type": "button", "action_id": f"ack:{row.fingerprint}", "value": row.fingerprint,
                         "text": {"type": "plain_text", "text": fit(f"Acknowledge {name}".strip(), 75, mrkdwn=False)}},
                        *({"type": "button", "action_id": f"silence:{d}:{row.fingerprint}", "value": row.fingerprint,
                           "text": {"type": "plain_text", "text": label}}
                          for d, label in (("1h", "Silence 1h"), ("4h", "Silence 4h"), ("resolved", "Silence until resolved")))]
    buttons = buttons[:25]
    if buttons:  # Slack's interactivity (SLACK_SIGNING_SECRET) approves it; drop_slot asks its name on the page
        blocks.append({"type": "actions", "block_id": "opsfleet_actions", "elements": buttons})
    if message.status == "test":
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "Status: test"}]})

    fallback = f"{emoji} [{tag}] {title}"
    if details:
        fallback += f": {details[0]}"
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
    for title, lines in m.evidence_lines(width=200):
        text += f"\n_{fit(title, 100, mrkdwn=True)}_" + "".join(f"\n> {fit(line, 200, mrkdwn=True)}" for line in lines)
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
