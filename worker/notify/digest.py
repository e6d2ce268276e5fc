"""The daily digest: seed 000's daily summary figures, the day's info alerts, the alert history, and
what the fleet held back in those 24 h (deduplicated, silenced, inhibited, muted, acknowledged, folded,
dead, never notified), and the alerts acknowledged and still firing. Queued through the
outbox like any notification, so it is retried and sent once."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.fleet.logs import get_logger
from worker.notify import outbox

log = get_logger(__name__)

HELD_REASONS = ("deduplicated", "silenced", "inhibited", "muted", "acknowledged", "folded", "dead", "never_notified")

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=True),
    undefined=jinja2.StrictUndefined,
)


def _summary(engine: Engine) -> list[tuple[str, str]]:
    """Seed 000's daily_email_summary() of one database; [] where it has no such function."""
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regproc('daily_email_summary') IS NOT NULL")).scalar():
            try:
                return [(r[0], r[1]) for r in conn.execute(sa.text("SELECT * FROM daily_email_summary()"))]
            except sa.exc.DBAPIError:
                return []
    return []


def collect(fleet: Engine, monitored: Engine | Mapping[str, Engine] | None, now: datetime) -> dict[str, Any]:
    """The digest's figures at `now`. `monitored`: the database whose daily summary it shows, or, with
    targets, each target's (name -> engine: a section per target; one that does not answer is left
    out with a `digest_summary_failed` line, the digest still goes)."""
    start = now - timedelta(hours=24)
    with fleet.connect() as conn:
        history = [dict(r._mapping) for r in conn.execute(sa.text(
            """SELECT to_char(at, 'YYYY-MM-DD HH24:MI') AS at, check_name AS check, severity, from_state, to_state,
                      round(CAST(value AS numeric), 2) AS value
               FROM fleet.alert_events WHERE at > :s AND at <= :e ORDER BY at"""), {"s": start, "e": now})]
        info = [dict(r._mapping) for r in conn.execute(sa.text(
            """SELECT to_char(e.at, 'YYYY-MM-DD HH24:MI') AS at, e.check_name AS check, e.to_state AS state,
                      a.summary FROM fleet.alert_events e JOIN fleet.alerts a USING (fingerprint)
               WHERE e.severity = 'info' AND e.at > :s AND e.at <= :e AND e.to_state IN ('firing', 'resolved')
               ORDER BY e.at"""), {"s": start, "e": now})]
        acked = [dict(r._mapping) for r in conn.execute(sa.text(
            """SELECT check_name AS check, to_char(fired_at, 'YYYY-MM-DD HH24:MI') AS since,
                      to_char(acked_at, 'YYYY-MM-DD HH24:MI') AS acked_at, acked_by, ack_comment, summary
               FROM fleet.alerts WHERE state = 'firing' AND acked_at IS NOT NULL ORDER BY acked_at"""))]
        held = {r.reason: int(r.n) for r in conn.execute(sa.text(
            "SELECT reason, sum(count) AS n FROM fleet.held_back WHERE day >= :d0 AND day <= :d1 GROUP BY reason"),
            {"d0": start.date(), "d1": now.date()})}
    summaries: list[tuple[str | None, list[tuple[str, str]]]] = []
    if isinstance(monitored, Mapping):
        for name, engine in monitored.items():
            try:
                rows = _summary(engine)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("digest_summary_failed", target=name, error=str(getattr(exc, "orig", exc)).strip()[:300])
                continue
            if rows:
                summaries.append((name, rows))
    elif monitored is not None and (rows := _summary(monitored)):
        summaries.append((None, rows))
    return {"start": start.strftime("%Y-%m-%d %H:%M"), "end": now.strftime("%Y-%m-%d %H:%M"),
            "history": history, "info": info, "held": held, "summaries": summaries, "acked": acked,
            "reasons": HELD_REASONS}


def render(data: dict[str, Any]) -> dict[str, str]:
    return {
        "subject": f"[opsfleet] daily digest {data['end'][:10]}: {len(data['info'])} info alerts, "
                   f"{len(data['history'])} transitions",
        "html": _env.get_template("digest.html.j2").render(data),
        "text": _env.get_template("digest.txt.j2").render(data),
    }


def enqueue(fleet: Engine, monitored: Engine | Mapping[str, Engine] | None, channel: str,
            now: datetime) -> str | None:
    """One outbox row per day and channel (the dedup key makes a doubled beat a no-op)."""
    rendered = render(collect(fleet, monitored, now))
    payload = {"kind": "email", "check": "digest", "severity": "info", "status": "firing",
               "title": rendered["subject"], "summary": rendered["subject"], "rendered": rendered}
    with fleet.begin() as conn:
        return outbox.insert(conn, channel=channel, transition="digest", payload=payload,
                             dedup_key=f"digest:{channel}:{now.date()}", due=now)
