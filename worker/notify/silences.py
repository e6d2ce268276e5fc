"""Silences: matchers (a check and label equalities) active between starts_at and ends_at.

Checked at send time: a silenced notification is recorded as `suppressed`, never dropped silently.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine


def add(fleet: Engine, *, check: str | None, labels: dict[str, str], duration: timedelta, comment: str,
        author: str, now: datetime, until_resolved: str | None = None) -> str:
    """A silence of `check` and `labels` for `duration`; `until_resolved` (an alert's fingerprint): it
    ends when that alert resolves (end_with()), or after `duration` at the latest."""
    if not check and not labels:
        raise ValueError("a silence needs a check or at least one label")
    if not comment.strip():
        raise ValueError("a silence needs a comment saying why")
    matchers = {"check": check, "labels": labels, **({"until_resolved": until_resolved} if until_resolved else {})}
    with fleet.begin() as conn:
        return str(conn.execute(
            sa.text("""INSERT INTO fleet.silences (matchers, starts_at, ends_at, author, comment)
                       VALUES (CAST(:m AS jsonb), :s, :e, :a, :c) RETURNING id"""),
            {"m": json.dumps(matchers), "s": now, "e": now + duration, "a": author, "c": comment},
        ).scalar())


def active(fleet: Engine, now: datetime) -> list[Any]:
    with fleet.connect() as conn:
        return conn.execute(
            sa.text("SELECT * FROM fleet.silences WHERE starts_at <= :now AND ends_at > :now ORDER BY ends_at"),
            {"now": now},
        ).all()


def expire(fleet: Engine, silence_id: str, now: datetime) -> bool:
    with fleet.begin() as conn:
        try:
            n = conn.execute(sa.text("UPDATE fleet.silences SET ends_at = :now WHERE id = CAST(:id AS uuid) AND ends_at > :now"),
                             {"id": silence_id, "now": now}).rowcount
        except sa.exc.DataError:
            raise ValueError(f"{silence_id!r} is not a silence id (see `opsfleet silence list`)") from None
    return n > 0


def end_with(conn: Connection, fingerprint: str, now: datetime) -> int:
    """The alert `fingerprint` resolved: the silences made "until it resolves" end now (the engine calls
    it in the transaction that records the resolve)."""
    return conn.execute(sa.text("UPDATE fleet.silences SET ends_at = :now WHERE matchers->>'until_resolved' = :fp "
                                "AND ends_at > :now"), {"now": now, "fp": fingerprint}).rowcount


def matches(check_sql: str, labels_sql: str) -> str:
    """The one predicate of "silence `s` is active at :now and matches this check and these labels", as
    SQL over two expressions of the caller's (bind parameters, or an alert's columns): matching() below
    and the status page's "silenced by" share it."""
    return (f"s.starts_at <= :now AND s.ends_at > :now "
            f"AND (s.matchers->>'check' IS NULL OR s.matchers->>'check' = {check_sql}) "
            f"AND {labels_sql} @> COALESCE(s.matchers->'labels', '{{}}'::jsonb)")


def matching(conn: Connection, check: str | None, labels: dict[str, str], now: datetime) -> str | None:
    """The id of an active silence matching this check and labels, if any."""
    row = conn.execute(
        sa.text(f"SELECT s.id FROM fleet.silences s WHERE {matches(':check', 'CAST(:labels AS jsonb)')} "  # noqa: S608
                "ORDER BY s.ends_at DESC LIMIT 1"),
        {"now": now, "check": check, "labels": json.dumps(labels)},
    ).first()
    return str(row.id) if row else None


def resolve(fleet: Engine, given: str, now: datetime) -> str:
    """The full id of the active silence whose id is `given` or starts with it (as `silence list`
    shows them); ValueError when none or several match."""
    prefix = given.strip().lower()
    if not prefix or any(c not in "0123456789abcdef-" for c in prefix):
        raise ValueError(f"{given!r} is not a silence id (see `opsfleet silence list`)")
    with fleet.connect() as conn:
        ids = [str(r) for r in conn.execute(sa.text(
            "SELECT id FROM fleet.silences WHERE CAST(id AS text) LIKE :p AND ends_at > :now ORDER BY id"),
            {"p": prefix + "%", "now": now}).scalars()]
    if not ids:
        raise ValueError(f"no active silence {given} (see `opsfleet silence list`)")
    if len(ids) > 1:
        raise ValueError(f"{given!r} matches {len(ids)} active silences ({', '.join(i[:13] for i in ids)}): give more of the id")
    return ids[0]
