"""Each target's state, read from the fleet's state (never from its database): up or down and why, its
alerts firing by severity, its last check run. The status page, /api/ and `opsfleet health` share it,
so "down" means one thing wherever it is shown.

A target is **down** when its `database_down` alert fires (the fleet pack's check: its `database_up`
sentinel failed twice in a row), or when no check of it succeeded (ok or no data: its database answered)
within twice the longest gap of its most frequent check's schedule (`window`): its checks run, if at
all, in error. Its state is **unknown** (`up` null) while no enabled check runs on it, or while the
running beat started less than one window ago and nothing has succeeded yet. An alert is **about** a
target when its state is that target's (the `target` column, the key: "" for the implicit `default`),
or when a fleet check names it in its `target` label (database_down, check_errors_in_a_row); the
implicit target's database_down has no label and is its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.config import FleetConfig
from worker.fleet.fields import SEVERITIES
from worker.fleet.timeutil import human_duration
from worker.targets import FLEET, Target

DOWN_CHECK = "database_down"


def about(cfg: FleetConfig, check: str, key: str, label_target: str | None) -> str | None:
    """The target (its name) an alert of `check` with state key `key` is about; None for the fleet's own."""
    if key:
        return next((t.name for t in cfg.targets.values() if t.key == key), key)
    if label_target:
        return label_target
    implicit = next((t.name for t in cfg.targets.values() if t.key == FLEET), None)
    if implicit is None:
        return None
    if check == DOWN_CHECK or (check in cfg.checks and cfg.targets_of(check) != [FLEET]):
        return implicit
    return None


def _runs_on(cfg: FleetConfig) -> list[tuple[str, Target]]:
    """Every (enabled check, target) of the targets: the fleet's own checks left out."""
    return [(name, cfg.targets[t]) for name, check in cfg.checks.items() if check.enabled
            for t in cfg.targets_of(name) if t in cfg.targets]


def windows(cfg: FleetConfig) -> dict[str, timedelta]:
    """Per target: twice the longest gap of its most frequent enabled check (absent: none runs on it)."""
    out: dict[str, timedelta] = {}
    for name, target in _runs_on(cfg):
        w = 2 * cfg.checks[name].schedule.longest_gap()
        out[target.name] = min(out.get(target.name, w), w)
    return out


_FIRING = sa.text("""SELECT check_name, target, labels ->> 'target' AS label_target, severity
                     FROM fleet.alerts WHERE state = 'firing'""")
_RUNS = sa.text("""
    SELECT p.target, max(r.started_at) AS last_run, max(o.started_at) AS last_ok
    FROM unnest(CAST(:checks AS text[]), CAST(:keys AS text[]), CAST(:since AS timestamptz[]))
         AS p(check_name, target, since)
    LEFT JOIN LATERAL (SELECT started_at FROM fleet.check_runs c
                       WHERE c.check_name = p.check_name AND c.target = p.target
                       ORDER BY c.slot DESC LIMIT 1) r ON true
    LEFT JOIN LATERAL (SELECT started_at FROM fleet.check_runs c
                       WHERE c.check_name = p.check_name AND c.target = p.target
                         AND c.started_at >= p.since AND c.slot >= p.since - (CAST(:now AS timestamptz) - p.since)
                         AND c.status IN ('ok', 'no_data')  -- the slot bounds the scan: a run starts within a window
                       ORDER BY c.slot DESC LIMIT 1) o ON true
    GROUP BY p.target""")


def firing(conn: Connection, cfg: FleetConfig) -> tuple[dict[str | None, dict[str, int]], set[str | None]]:
    """Firing alerts per target they are about (None: the fleet's own), by severity; and the targets
    whose database_down fires."""
    out: dict[str | None, dict[str, int]] = {}
    down: set[str | None] = set()
    for r in conn.execute(_FIRING):
        name = about(cfg, r.check_name, r.target, r.label_target)
        counts = out.setdefault(name, dict.fromkeys(SEVERITIES, 0))
        counts[r.severity] = counts.get(r.severity, 0) + 1
        if r.check_name == DOWN_CHECK:
            down.add(name)
    return out, down


def overview(conn: Connection, cfg: FleetConfig, now: datetime) -> list[dict[str, Any]]:
    """Every target of config/targets.yaml (or the implicit `default`), in order: name, up (true,
    false, null: unknown), reason (why not up), firing (a count per severity), last_run and
    last_run_age_s (its latest check run, any outcome), last_ok (its latest success within the window),
    window_s. /api/targets answers these field names."""
    win = windows(cfg)
    pairs = _runs_on(cfg)
    runs = {r.target: r for r in conn.execute(_RUNS, {
        "checks": [name for name, _ in pairs], "keys": [t.key for _, t in pairs],
        "since": [now - win[t.name] for _, t in pairs], "now": now})}
    fire, down = firing(conn, cfg)
    beat_started = conn.execute(sa.text("SELECT max(recorded_at) FROM fleet.check_schedule")).scalar()
    out = []
    for t in cfg.targets.values():
        r, w = runs.get(t.key), win.get(t.name)
        last_ok = r.last_ok if r is not None else None
        if t.name in down:
            up, reason = False, f"{DOWN_CHECK} is firing: its database does not answer"
        elif w is None:
            up, reason = None, "no enabled check runs on it"
        elif last_ok is not None:
            up, reason = True, None
        elif beat_started is not None and now - beat_started < w:
            up, reason = None, f"not judged yet: the beat started {human_duration((now - beat_started).total_seconds())} ago"
        else:
            up, reason = False, f"no check of it succeeded in the last {human_duration(w.total_seconds())}"
        out.append({"name": t.name, "up": up, "reason": reason,
                    "firing": fire.get(t.name, dict.fromkeys(SEVERITIES, 0)),
                    "last_run": r.last_run.isoformat() if r is not None and r.last_run else None,
                    "last_run_age_s": round((now - r.last_run).total_seconds(), 1)
                    if r is not None and r.last_run else None,
                    "last_ok": last_ok.isoformat() if last_ok else None,
                    "window_s": int(w.total_seconds()) if w is not None else None})
    return out
