"""`opsfleet backlog status`: the backlog, the confirmation emails waiting or failed, the runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.backlog.claims import BACKLOG
from worker.backlog.runs import KIND, STALE_AFTER
from worker.fleet import runs


def backlog_status(engine: Engine, fleet: Engine | None = None, stale_after: timedelta = STALE_AFTER,
                   target: str = "") -> dict[str, Any]:
    """What `opsfleet backlog status` shows: the backlog in `engine`'s database, the confirmation emails
    waiting or failed, and the backlog runs of `target` (its key) in progress (with whether their worker
    is still alive) and last finished."""
    fleet = fleet or engine
    with engine.connect() as conn:
        backlog = conn.execute(sa.text(
            f"""SELECT count(*) AS pending_confirmations, min(r.updated_at) AS oldest_pending,
                       EXTRACT(EPOCH FROM now() - min(r.updated_at)) AS oldest_pending_age_s
                FROM registrations r WHERE {BACKLOG}""")).mappings().one()  # noqa: S608
        emails = conn.execute(sa.text(
            """SELECT count(*) FILTER (WHERE status = 'pending') AS emails_pending,
                      count(*) FILTER (WHERE status = 'pending'
                                       AND created_at <= now() - make_interval(secs => :s)) AS emails_pending_stale,
                      count(*) FILTER (WHERE status = 'failed') AS emails_failed,
                      count(*) FILTER (WHERE status = 'bounced') AS emails_bounced
               FROM confirmation_emails WHERE status IN ('pending', 'failed', 'bounced')"""),
            {"s": stale_after.total_seconds()}).mappings().one()
    running, last = runs.running(fleet, KIND, target), runs.last_finished(fleet, KIND, target)
    age = backlog["oldest_pending_age_s"]
    return {
        "pending_confirmations": backlog["pending_confirmations"],
        "oldest_pending": backlog["oldest_pending"],
        "oldest_pending_age_s": float(age) if age is not None else None,
        **{k: int(v) for k, v in emails.items()},
        "running_jobs": running,
        "last_runs": last,
    }
