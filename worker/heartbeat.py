"""The dead-man's switch: who tells you when opsfleet itself is dead? An outside receiver
(healthchecks.io, Cronitor, a Prometheus blackbox...) that expects a ping every HEARTBEAT_INTERVAL
and pages when none comes. `notify.heartbeat` pings HEARTBEAT_URL only while the fleet is well:

- it runs at all: beat scheduled it and a worker of the notify queue took it (it expires after one
  interval, so a backlog of stale pings never arrives late);
- the checks run in their slots: no enabled check's last run is older than its schedule's longest
  gap plus a grace of two intervals (at least 30 s);
- the outbox drains: no notification due for more than OUTBOX_STUCK;
- the channels deliver: no channel whose notifications keep failing (retrying after two attempts, or
  dead) has sent nothing in the last WINDOW.

When unwell it stays silent (the receiver's own grace then pages), or with HEARTBEAT_FAIL POSTs the
reasons to HEARTBEAT_URL/fail, healthchecks.io's signal, so the page comes at once and says why."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.checks import store
from worker.config import FleetConfig
from worker.fleet.logs import get_logger, mask_text
from worker.fleet.names import beat_entry
from worker.fleet.settings import Settings

log = get_logger(__name__)

OUTBOX_STUCK = timedelta(minutes=5)
WINDOW = timedelta(minutes=15)
MIN_GRACE = timedelta(seconds=30)


@dataclass
class Verdict:
    reasons: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.reasons


def verdict(fleet: Engine, cfg: FleetConfig, now: datetime, interval_s: float) -> Verdict:
    """Is the fleet well enough to say so? The reasons it is not, one line each."""
    grace = max(timedelta(seconds=2 * interval_s), MIN_GRACE)
    out = Verdict()
    with fleet.connect() as conn:
        last = {name: r.started_at for name, r in store.last_runs(conn).items()}
        first = conn.execute(sa.text("SELECT min(started_at) FROM fleet.check_runs")).scalar()
        stuck = conn.execute(sa.text(
            """SELECT count(*) FROM fleet.notifications WHERE status IN ('pending', 'retrying', 'sending')
               AND next_attempt_at <= :t"""), {"t": now - OUTBOX_STUCK}).scalar()
        broken = conn.execute(sa.text(
            """SELECT channel, min(left(last_error, 120)) AS error FROM fleet.notifications
               WHERE ((status = 'retrying' AND NOT throttled AND attempts >= 2)
                      OR (status = 'dead' AND dead_at > :w))
                 AND channel NOT IN (SELECT channel FROM fleet.notifications WHERE sent_at > :w)
               GROUP BY channel ORDER BY channel"""), {"w": now - WINDOW}).all()
    late = []
    for name, check in sorted(cfg.checks.items()):
        since = last.get(name) or first  # a check that never ran counts from the fleet's first run
        if check.enabled and since is not None and now - since > check.schedule.longest_gap() + grace:
            late.append(name)
    if late:
        out.reasons.append(f"{len(late)} check(s) missed their slots: {', '.join(late[:8])}"
                           f"{' ...' if len(late) > 8 else ''} (is a worker consuming the checks queue? is beat up?)")
    if stuck:
        out.reasons.append(f"{stuck} notification(s) due for over {int(OUTBOX_STUCK.total_seconds() // 60)} min "
                           "(is a worker consuming the notify queue?)")
    for r in broken:
        out.reasons.append(f"channel {r.channel} keeps failing and sent nothing in "
                           f"{int(WINDOW.total_seconds() // 60)} min: {r.error}")
    return out


def ping(settings: Settings, v: Verdict, timeout: float = 10.0) -> str:
    """Tell the receiver: a ping when well; when unwell /fail with the reasons, or nothing. What was done."""
    url = settings.heartbeat_url
    if not url:
        return "off"
    if v.healthy:
        target, body = url, b"opsfleet ok"
    elif settings.heartbeat_signals_fail:
        target, body = f"{url}/fail", "\n".join(v.reasons).encode()[:10_000]
    else:
        log.warning("heartbeat_withheld", reasons=v.reasons)
        return "withheld"
    req = urllib.request.Request(target, data=body, method="POST", headers={"Content-Type": "text/plain",
                                                                            "User-Agent": "opsfleet-heartbeat"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - an operator's http(s) URL
            status = resp.status
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("heartbeat_not_delivered", error=mask_text(str(getattr(exc, "reason", exc)))[:200])
        return "not_delivered"
    if v.healthy:
        log.info("heartbeat_sent", status=status)
        return "pinged"
    log.warning("heartbeat_failed_signalled", status=status, reasons=v.reasons)
    return "failed"


def beat_entries(settings: Settings) -> dict[str, dict[str, Any]]:
    """The heartbeat every HEARTBEAT_INTERVAL, only with HEARTBEAT_URL; a run not started within one
    interval expires (the receiver must see the gap, not a late burst)."""
    if not settings.heartbeat_url:
        return {}
    every = settings.heartbeat_seconds
    return {"notify:heartbeat": beat_entry("notify.heartbeat", every, expires=every)}
