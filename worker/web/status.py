"""What the status page and /api/ show, read from the fleet's state (never the monitored database,
so the page stays fast and harmless whatever the application does): the firing and pending alerts
by severity, every check with its state and runs, the targets (worker.watch.targets: up or down,
firing by severity, last run), the silences, the outbox per channel, the job runs and backlogs. The
alerts and checks narrow to one target (`target`: its name, already known to be one). Each function
returns plain JSON-able dicts; the templates and the API share them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.actions import store as action_store
from worker.checks import evidence, store
from worker.config import FleetConfig
from worker.fleet.fields import SEVERITIES, severity_rank
from worker.notify import history, holds, recover
from worker.watch import targets as target_state

OUTBOX_ERRORS = 20  # the latest dead or retrying notifications shown with their errors


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _alert(r: Any, cfg: FleetConfig, now: datetime) -> dict[str, Any]:
    check = cfg.checks.get(r.check_name)
    since = r.fired_at if r.state == "firing" and getattr(r, "fired_at", None) else r.since
    return {
        "fingerprint": r.fingerprint, "check": r.check_name, "severity": r.severity, "state": r.state,
        "labels": r.labels or {}, "value": r.last_value, "condition": str(check.condition) if check else None,
        "summary": r.summary, "since": _iso(since), "for_s": int((now - since).total_seconds()) if since else None,
        "runbook": check.runbook if check else None, "acked_by": r.acked_by, "ack_comment": r.ack_comment,
        "silenced_by": r.silenced_by,
        "target": target_state.about(cfg, r.check_name, r.target, (r.labels or {}).get("target")),
    }


_ACTIVE = sa.text(f"""
    SELECT a.*, {holds.silenced_by_sql("a.check_name", "a.labels")} AS silenced_by
    FROM fleet.alerts a WHERE (CAST(:fp AS text) IS NULL AND a.state IN ('pending', 'firing'))
                           OR a.fingerprint = :fp""")  # noqa: S608 - the predicate is our own constant SQL


def alerts(conn: Connection, cfg: FleetConfig, now: datetime, target: str | None = None) -> list[dict[str, Any]]:
    """Firing, then pending (of the alerts about `target` when given); worst severity first;
    longest-standing first."""
    rows = [_alert(r, cfg, now) for r in conn.execute(_ACTIVE, {"now": now, "fp": None})]
    rows = [a for a in rows if target is None or a["target"] == target]
    rows.sort(key=lambda a: (a["state"] != "firing", severity_rank(a["severity"]), -(a["for_s"] or 0), a["check"]))
    return rows


def by_severity(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [(sev, [a for a in rows if a["severity"] == sev]) for sev in SEVERITIES
            if any(a["severity"] == sev for a in rows)]


def alert(conn: Connection, cfg: FleetConfig, fingerprint: str, now: datetime) -> dict[str, Any] | None:
    """One alert instance (any state) with its history of the last 30 days and the evidence gathered
    when it last fired, or None."""
    r = conn.execute(_ACTIVE, {"now": now, "fp": fingerprint}).first()
    if r is None:
        return None
    doc = _alert(r, cfg, now)
    doc["history"] = [e for e in history.timeline(conn, now - timedelta(days=30), r.check_name, 500)
                      if e["fingerprint"] == fingerprint]
    doc["evidence"] = evidence.latest(conn, fingerprint, r.target)  # {gathered_at, reason, sections} or None
    check = cfg.checks.get(r.check_name)
    doc["gathers"] = bool(check is not None and check.evidence)  # the page may gather it again
    doc["actions"] = action_store.for_alert(conn, fingerprint, r.target)  # proposed fixes and what became of them
    return doc


_LAST_OF_TARGET = sa.text(
    "SELECT DISTINCT ON (check_name) check_name, started_at, status, error, note FROM fleet.check_runs "
    "WHERE target = :t ORDER BY check_name, started_at DESC")
_STATES_OF_TARGET = sa.text(
    "SELECT check_name, string_agg(DISTINCT state, ',') AS states FROM fleet.alerts WHERE target = :t "
    "GROUP BY check_name")


def checks(conn: Connection, cfg: FleetConfig, now: datetime, target: str | None = None) -> list[dict[str, Any]]:
    """Every check (those that run on `target` when given, with that target's runs and states) and the
    targets it runs on."""
    key = cfg.targets[target].key if target is not None else None
    if key is None:
        last, states = store.last_runs(conn), store.states_by_check(conn)
    else:
        last = {r.check_name: r for r in conn.execute(_LAST_OF_TARGET, {"t": key})}
        states = {r.check_name: r.states for r in conn.execute(_STATES_OF_TARGET, {"t": key})}
    errors = {r.check_name: r for r in conn.execute(sa.text(
        """SELECT DISTINCT ON (check_name) check_name, started_at, error FROM fleet.check_runs
           WHERE status = 'error' AND (CAST(:t AS text) IS NULL OR target = :t)
           ORDER BY check_name, started_at DESC"""), {"t": key})}
    out = []
    for name, c in sorted(cfg.checks.items()):
        on = [t for t in cfg.targets_of(name) if t in cfg.targets]
        if target is not None and target not in on:
            continue
        run, err = last.get(name), errors.get(name)
        out.append({
            "name": name, "pack": cfg.check_pack.get(name), "severity": c.severity, "enabled": c.enabled,
            "schedule": c.schedule.text, "condition": str(c.condition), "targets": on,
            "states": sorted((states.get(name) or "").split(",")) if states.get(name) else [],
            "last_run": _iso(run.started_at) if run else None, "last_status": run.status if run else None,
            "next_run": _iso(c.schedule.next_slot(now)) if c.enabled else None,
            "last_error": err.error if err else None, "last_error_at": _iso(err.started_at) if err else None,
            "note": run.note if run else None,
        })
    return out


def silences(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    return [{"id": str(r.id), "check": (r.matchers or {}).get("check"), "labels": (r.matchers or {}).get("labels") or {},
             "starts_at": _iso(r.starts_at), "ends_at": _iso(r.ends_at), "author": r.author, "comment": r.comment}
            for r in conn.execute(sa.text(
                "SELECT * FROM fleet.silences WHERE starts_at <= :now AND ends_at > :now ORDER BY ends_at"),
                {"now": now})]


def outbox(conn: Connection, cfg: FleetConfig, now: datetime) -> dict[str, Any]:
    """Per channel: due now, retrying, dead and sent in 24 h; the latest failures with their errors; and
    the latest dead notifications, each with why a retry would not send it (`refused`, None: it would)."""
    counts = {r.channel: dict(r._mapping) for r in conn.execute(sa.text(
        """SELECT channel,
                  count(*) FILTER (WHERE status IN ('pending', 'retrying') AND next_attempt_at <= :now) AS due,
                  count(*) FILTER (WHERE status = 'retrying') AS retrying,
                  count(*) FILTER (WHERE status = 'dead' AND COALESCE(dead_at, created_at) > :day) AS dead_24h,
                  count(*) FILTER (WHERE status = 'sent' AND sent_at > :day) AS sent_24h,
                  count(*) FILTER (WHERE status = 'suppressed' AND created_at > :day) AS held_24h
           FROM fleet.notifications
           WHERE status IN ('pending', 'retrying', 'sending') OR created_at > :day OR dead_at > :day
           GROUP BY channel"""), {"now": now, "day": now - timedelta(hours=24)})}
    names = sorted(set(cfg.routing.channels if cfg.routing else ()) | set(counts))
    channels = [{"channel": n, **{k: int(counts.get(n, {}).get(k) or 0)
                                  for k in ("due", "retrying", "dead_24h", "sent_24h", "held_24h")}} for n in names]
    failures = [{"id": str(r.id), "channel": r.channel, "check": r.check_name, "status": r.status,
                 "attempts": r.attempts, "error": r.last_error, "at": _iso(r.at), "next_attempt_at":
                 _iso(r.next_attempt_at) if r.status == "retrying" else None}
                for r in conn.execute(sa.text(
                    """SELECT id, channel, check_name, status, attempts, last_error, next_attempt_at,
                              COALESCE(dead_at, created_at) AS at FROM fleet.notifications
                       WHERE status IN ('dead', 'retrying') ORDER BY COALESCE(dead_at, created_at) DESC LIMIT :n"""),
                    {"n": OUTBOX_ERRORS})]
    dead = [{**d.record(), "dead_at": _iso(d.dead_at)}  # `refused`: why a retry would not send it
            for d in recover.dead(conn, now, limit=OUTBOX_ERRORS)]
    return {"channels": channels, "failures": failures, "dead": dead}


def jobs(conn: Connection, cfg: FleetConfig, now: datetime) -> list[dict[str, Any]]:
    """Each maintenance job and backlog on each target it runs on (`target`: None where it has one):
    its last run there (running ones first), and when it runs next."""
    last = {(r.job, r.target): r for r in conn.execute(sa.text(
        """SELECT DISTINCT ON (job, target) job, target, kind, status, started_at, finished_at, rows_affected, batches,
                  error FROM fleet.job_runs WHERE status <> 'dry_run' ORDER BY job, target, started_at DESC"""))}
    out = []
    for kind, pairs in (("maintenance", cfg.scheduled_maintenance()), ("backlog", cfg.scheduled_backlogs())):
        for spec, place in sorted(pairs, key=lambda p: (p[0].name, p[1].key)):
            r = last.get((spec.name, place.key))
            schedule = getattr(spec, "schedule", None)
            enabled = getattr(spec, "enabled", True)
            out.append({
                "job": spec.name, "target": place.target, "kind": kind, "enabled": enabled,
                "schedule": schedule.text if schedule else None,
                "status": r.status if r else None, "started_at": _iso(r.started_at) if r else None,
                "duration_s": round((r.finished_at - r.started_at).total_seconds(), 1) if r and r.finished_at else None,
                "rows": int(r.rows_affected) if r else None, "error": r.error if r else None,
                "next_run": _iso(schedule.next_slot(now)) if schedule and enabled else None,
            })
    out.sort(key=lambda j: (j["status"] != "running", j["status"] != "error", j["kind"], j["job"], j["target"] or ""))
    return out


def targets(conn: Connection, cfg: FleetConfig, now: datetime, target: str | None = None) -> list[dict[str, Any]]:
    """Each target (or `target` alone): up or down and why, firing by severity, last run."""
    return [t for t in target_state.overview(conn, cfg, now) if target is None or t["name"] == target]


def everything(conn: Connection, cfg: FleetConfig, now: datetime, target: str | None = None) -> dict[str, Any]:
    """The page's and /api/status's document: alerts and checks of `target` when given; the targets
    overview lists every target (the page links each row to its filter)."""
    active = alerts(conn, cfg, now, target)
    return {"at": now.isoformat(), "target": target, "targets": targets(conn, cfg, now),
            "alerts": active, "checks": checks(conn, cfg, now, target),
            "silences": silences(conn, now), "outbox": outbox(conn, cfg, now), "jobs": jobs(conn, cfg, now),
            "counts": {"firing": sum(a["state"] == "firing" for a in active),
                       "pending": sum(a["state"] == "pending" for a in active)}}
