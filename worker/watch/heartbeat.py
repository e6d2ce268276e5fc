"""The dead-man's switch: who tells you when opsfleet itself is dead? An outside receiver
(healthchecks.io, Cronitor, a Prometheus blackbox...) that expects a ping every HEARTBEAT_INTERVAL
and pages when none comes. `notify.heartbeat` pings HEARTBEAT_URL only while the fleet is well:

- it runs at all: beat scheduled it and a worker of the notify queue took it (it expires after one
  interval, so a backlog of stale pings never arrives late);
- the checks run in their slots, on every target: no enabled check's last run on a target it runs on
  is older than its schedule's longest gap plus a grace of two intervals (at least 30 s). Each
  (check, target) is judged on its own runs, so one target's runs never cover for another's; with
  targets.yaml each reason names its target (`target=b: no check run for 7m 05s (...)`, `fleet` for
  what runs once). A (check, target) that never ran counts from the fleet's first run, or from when
  beat recorded it in fleet.check_schedule if that is later (a target just added is not late at once);
- the outbox drains: no notification due for more than OUTBOX_STUCK;
- the channels deliver: no channel whose notifications keep failing (two attempts failed: retrying, or
  a later attempt in flight, which a hanging provider holds for the channel's timeout; or dead) has
  sent nothing in the last WINDOW.

When unwell it stays silent (the receiver's own grace then pages), or with HEARTBEAT_FAIL POSTs the
reasons to HEARTBEAT_URL/fail, healthchecks.io's signal, so the page comes at once and says why."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.config import FleetConfig
from worker.fleet.logs import get_logger, mask_text
from worker.fleet.names import beat_entry
from worker.fleet.settings import Settings
from worker.fleet.timeutil import human_duration
from worker.watch.metrics import target_label

log = get_logger(__name__)

OUTBOX_STUCK = timedelta(minutes=5)
WINDOW = timedelta(minutes=15)
MIN_GRACE = timedelta(seconds=30)
SHOWN = 8  # late checks named in a line, targets given a line of their own


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
        last = {(r.check_name, r.target): r.last for r in conn.execute(sa.text(
            "SELECT check_name, target, max(started_at) AS last FROM fleet.check_runs GROUP BY 1, 2"))}
        first = conn.execute(sa.text("SELECT min(started_at) FROM fleet.check_runs")).scalar()
        recorded = {(r.check_name, r.target): r.recorded_at for r in conn.execute(sa.text(
            "SELECT check_name, target, recorded_at FROM fleet.check_schedule"))}
        stuck = conn.execute(sa.text(
            """SELECT count(*) FROM fleet.notifications WHERE status IN ('pending', 'retrying', 'sending')
               AND next_attempt_at <= :t"""), {"t": now - OUTBOX_STUCK}).scalar()
        broken = conn.execute(sa.text(
            """SELECT channel, min(left(last_error, 120)) AS error FROM fleet.notifications
               WHERE ((status IN ('retrying', 'sending') AND NOT throttled
                       AND attempts >= CASE status WHEN 'sending' THEN 3 ELSE 2 END)  -- two failed before
                      OR (status = 'dead' AND dead_at > :w))
                 AND channel NOT IN (SELECT channel FROM fleet.notifications WHERE sent_at > :w)
               GROUP BY channel ORDER BY channel"""), {"w": now - WINDOW}).all()
    out.reasons += _late(cfg, last, first, recorded, now, grace)
    if stuck:
        out.reasons.append(f"{stuck} notification(s) due for over {int(OUTBOX_STUCK.total_seconds() // 60)} min "
                           "(is a worker consuming the notify queue?)")
    for r in broken:
        out.reasons.append(f"channel {r.channel} keeps failing and sent nothing in "
                           f"{int(WINDOW.total_seconds() // 60)} min: {r.error}")
    return out


def _late(cfg: FleetConfig, last: dict[tuple[str, str], datetime], first: datetime | None,
          recorded: dict[tuple[str, str], datetime], now: datetime, grace: timedelta) -> list[str]:
    """The checks that missed their slots, each (check, target) judged on its own runs: one line, as
    before targets, for a fleet of one database; with targets.yaml one line per target (module docstring)."""
    late: dict[str, list[tuple[str, str]]] = {}  # target label -> (check, queue) of each late check
    enabled: Counter[str] = Counter()
    newest: dict[str, datetime] = {}
    for run in sorted(cfg.scheduled_checks(), key=lambda r: (r.check.name, r.key)):
        if not run.check.enabled:
            continue
        key, label = (run.check.name, run.key), target_label(cfg, run.check.name, run.key)
        enabled[label] += 1
        ran = last.get(key)
        if ran is not None:
            newest[label] = max(newest.get(label, ran), ran)
        since = ran or (max(first, recorded[key]) if first is not None and key in recorded else first)
        if since is not None and now - since > run.check.schedule.longest_gap() + grace:
            late.setdefault(label, []).append((run.check.name, run.queue_name))
    if not cfg.targets_declared:
        names = sorted({name for checks in late.values() for name, _ in checks})
        return [f"{len(names)} check(s) missed their slots: {', '.join(names[:SHOWN])}"
                f"{' ...' if len(names) > SHOWN else ''} (is a worker consuming the checks queue? is beat up?)"
                ] if names else []
    out = []
    for label in sorted(late)[:SHOWN]:
        checks = late[label]
        why = f"(is a worker consuming the {', '.join(sorted({q for _, q in checks}))} queue? is beat up?)"
        if len(checks) < enabled[label]:
            names = ", ".join(n for n, _ in checks[:SHOWN]) + (" ..." if len(checks) > SHOWN else "")
            out.append(f"target={label}: {len(checks)} of its {enabled[label]} check(s) missed their slots: {names} "
                       f"{why}")
        elif label in newest:
            out.append(f"target={label}: no check run for {human_duration((now - newest[label]).total_seconds())} "
                       f"({len(checks)} check(s) late) {why}")
        else:
            out.append(f"target={label}: none of its {len(checks)} check(s) has ever run {why}")
    if len(late) > SHOWN:
        out.append(f"and {len(late) - SHOWN} more target(s) with late checks: {', '.join(sorted(late)[SHOWN:])}")
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
