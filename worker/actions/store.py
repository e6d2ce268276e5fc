"""fleet.alert_actions, its one writer: an action is proposed when its alert fires, approved once
(an approval clicked twice, or by two people, approves it once), started once (a redelivered task
finds it running and does nothing), finished with its output, or refused with the reason; a
proposal whose alert resolved expires. Every step is appended to `events` (who, when, through what,
what). Functions take the caller's connection."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

STATES = ("proposed", "approved", "running", "done", "failed", "refused", "expired")


def _event(at: datetime, what: str, who: str | None = None, via: str | None = None, detail: str | None = None) -> str:
    return json.dumps([{"at": at.isoformat(), "what": what, "who": who, "via": via, "detail": detail}])


_PROPOSE = sa.text("""
    INSERT INTO fleet.alert_actions (id, fingerprint, target, check_name, kind, params, labels, dry_run, state, auto,
                                     proposed_at, events)
    VALUES (:id, :fp, :target, :check, :kind, CAST(:params AS jsonb), CAST(:labels AS jsonb), :dry_run, 'proposed',
            :auto, :at, CAST(:events AS jsonb))""")
_EXPIRE = sa.text("""
    UPDATE fleet.alert_actions SET state = 'expired', finished_at = :at,
           events = events || CAST(:events AS jsonb)
    WHERE fingerprint = :fp AND target = :target AND state = 'proposed' RETURNING id""")


def propose(conn: Connection, *, fingerprint: str, target: str, check: str, kind: str, params: dict[str, Any],
            labels: dict[str, str], dry_run: str, at: datetime, auto: bool = False) -> str:
    nid = str(uuid.uuid4())
    conn.execute(_PROPOSE, {"id": nid, "fp": fingerprint, "target": target, "check": check, "kind": kind,
                            "params": json.dumps(params), "labels": json.dumps(labels), "dry_run": dry_run,
                            "auto": auto, "at": at, "events": _event(at, "proposed", detail=dry_run)})
    return nid


def expire(conn: Connection, *, fingerprint: str, target: str, at: datetime) -> list[str]:
    """The alert resolved: what it proposed and nobody approved can no longer be approved."""
    return [str(r[0]) for r in conn.execute(_EXPIRE, {"fp": fingerprint, "target": target, "at": at,
                                                      "events": _event(at, "expired", detail="the alert resolved")})]


_APPROVE = sa.text("""
    UPDATE fleet.alert_actions SET state = 'approved', approved_by = :who, approved_via = :via, approved_at = :at,
           events = events || CAST(:events AS jsonb)
    WHERE id = :id AND state = 'proposed' RETURNING id""")
_NOTE = sa.text("UPDATE fleet.alert_actions SET events = events || CAST(:events AS jsonb) WHERE id = :id")
_START = sa.text("""
    UPDATE fleet.alert_actions SET state = 'running', started_at = :at, events = events || CAST(:events AS jsonb)
    WHERE id = :id AND state = 'approved' RETURNING id""")
_FINISH = sa.text("""
    UPDATE fleet.alert_actions SET state = :state, finished_at = :at, result = :result,
           events = events || CAST(:events AS jsonb)
    WHERE id = :id AND state IN ('approved', 'running') RETURNING id""")


def approve(conn: Connection, action_id: str, *, who: str, via: str, at: datetime) -> bool:
    """True when this call approved it; False when it was not awaiting approval (already approved,
    run, refused or expired): recorded as a second click, nothing else changes."""
    if conn.execute(_APPROVE, {"id": action_id, "who": who, "via": via, "at": at,
                               "events": _event(at, "approved", who, via)}).first():
        return True
    conn.execute(_NOTE, {"id": action_id, "events": _event(at, "approval ignored", who, via,
                                                           "it was not awaiting approval")})
    return False


def note(conn: Connection, action_id: str, *, what: str, at: datetime, who: str | None = None,
         via: str | None = None, detail: str | None = None) -> None:
    """Record what happened to it without changing its state (a refused click: a bad confirmation)."""
    conn.execute(_NOTE, {"id": action_id, "events": _event(at, what, who, via, detail)})


def start(conn: Connection, action_id: str, at: datetime) -> bool:
    """True for the one run that may act; False for any other (a redelivered or doubled task)."""
    return conn.execute(_START, {"id": action_id, "at": at, "events": _event(at, "started")}).first() is not None


def finish(conn: Connection, action_id: str, *, state: str, result: str, at: datetime) -> None:
    assert state in ("done", "failed", "refused")
    conn.execute(_FINISH, {"id": action_id, "state": state, "at": at, "result": result[:4000],
                           "events": _event(at, state, detail=result[:1000])})


def get(conn: Connection, action_id: str) -> Any:
    try:
        uuid.UUID(action_id)
    except ValueError:
        return None
    return conn.execute(sa.text("SELECT * FROM fleet.alert_actions WHERE id = :id"), {"id": action_id}).first()


def for_alert(conn: Connection, fingerprint: str, target: str = "") -> list[dict[str, Any]]:
    """An alert's actions, newest first, as the page, the API and `alerts show` tell them."""
    rows = conn.execute(sa.text("""SELECT * FROM fleet.alert_actions WHERE fingerprint = :fp AND target = :t
                                   ORDER BY proposed_at DESC, kind"""), {"fp": fingerprint, "t": target})
    return [{"id": str(r.id), "kind": r.kind, "params": r.params, "dry_run": r.dry_run, "state": r.state,
             "auto": r.auto, "proposed_at": r.proposed_at.isoformat(), "approved_by": r.approved_by,
             "approved_via": r.approved_via, "result": r.result, "events": r.events} for r in rows]
