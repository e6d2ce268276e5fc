"""A report as an email through the outbox, like the daily digest: rendered here (HTML with `cid:`
images, text, the PNGs as attachments), one outbox row per period and channel, so a doubled beat or
a re-run of the task is a no-op."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine

from worker.fleet.logs import get_logger
from worker.notify import outbox
from worker.reports import queries, render

log = get_logger(__name__)


def dedup_key(kind: str, channel: str, data: dict) -> str:
    """One per report, channel and period, and per target (`report:weekly@a:...`) for a declared one's."""
    of = f"@{data['target']}" if data.get("target") else ""
    return f"report:{kind}{of}:{channel}:{queries.period(data)}"


def enqueue(fleet: Engine, monitored: Engine, kind: str, channel: str, now: datetime,
            target: str | None = None) -> str | None:
    """Queue the `kind` report at `now` on `channel`, of `monitored`, the database of `target` (a declared
    target's name, which the report names; None: DATABASE_URL's); None when that period's report (of
    that target) is already queued."""
    data = queries.collect(kind, monitored, now, target=target)
    rendered = render.render(data, images="cid")
    payload = {"kind": "email", "check": f"{kind}_report", "severity": "info", "status": "firing",
               "title": rendered["subject"], "summary": rendered["subject"], "rendered": rendered}
    key = dedup_key(kind, channel, data)
    with fleet.begin() as conn:
        nid = outbox.insert(conn, channel=channel, transition="report", payload=payload, dedup_key=key, due=now)
    log.info("report_queued" if nid else "report_already_queued", report=kind, period=queries.period(data),
             channel=channel, notification_id=nid, images=len(rendered["attachments"]),
             **({"target": target} if target else {}))
    return nid
