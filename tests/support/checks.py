"""A check on the `gauge` table, as the engine's tests and the restart tests build it; a shipped
check evaluated through the engine as a worker evaluates it (`through_engine`, `fires`); a client
session held open in its transaction (`held_session`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.checks.engine import run_check
from worker.checks.spec import Check


def make_check(**over) -> Check:
    spec = {
        "name": "gauge_high", "description": "test", "schedule": "1m",
        "query": "SELECT name AS item, v AS value FROM gauge", "condition": "> 10", "for": "10m",
        "severity": "critical", "summary": "{{ labels.item }} at {{ value }}",
    }
    spec.update(over)
    return Check.model_validate(spec)


def through_engine(check: Check, *, monitored: Engine, fleet: Engine,
                   at: Sequence[datetime]) -> list[tuple[dict[str, str], str, float | None]]:
    """Evaluate `check` as a worker does (worker.checks.engine.run_check: its query READ ONLY against
    `monitored`, the state machine, fleet.alerts in `fleet`) once at each instant of `at`, each its own
    slot, from no state of the check; the instances pending or firing afterwards, as (labels less the
    check's own, state, value). An evaluation that ends in error fails the test with the engine's text."""
    with fleet.begin() as conn:
        for table in ("fleet.alerts", "fleet.alert_events", "fleet.check_runs"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE check_name = :c"), {"c": check.name})  # noqa: S608
    for t in at:
        outcome = run_check(check, monitored=monitored, fleet=fleet, now=t, routing=None, slot=t)
        assert outcome.status in ("ok", "no_data"), f"{check.name} at {t}: {outcome.status} {outcome.error}"
    with fleet.connect() as conn:
        rows = conn.execute(sa.text("SELECT labels, state, last_value FROM fleet.alerts WHERE check_name = :c "
                                    "AND state IN ('pending', 'firing') ORDER BY fingerprint"), {"c": check.name}).all()
    return [({k: v for k, v in dict(labels).items() if k not in check.labels}, state, value)
            for labels, state, value in rows]


def fires(check: Check, *, monitored: Engine, fleet: Engine, now: datetime) -> list[dict[str, str]]:
    """The label sets (the check's own labels left out) of the instances firing once `check` has been
    evaluated through the engine at `now` and, when it has a `for`, again `for` later (pending, then
    firing); an instance still pending fails the test."""
    at = [now, now + check.for_] if check.for_ else [now]
    found = through_engine(check, monitored=monitored, fleet=fleet, at=at)
    assert all(state == "firing" for _, state, _ in found), f"{check.name}: {found}"
    return [labels for labels, _, _ in found]


@contextlib.contextmanager
def held_session(url: str, *statements: str, application_name: str = "opsfleet-test") -> Iterator[psycopg.Connection]:
    """A client session on `url` (a SQLAlchemy or libpq URL) that ran `statements` and stays as it is
    (inside its transaction, holding its locks) until the block ends: the sessions the session checks
    and their evidence are about."""
    plain = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = psycopg.connect(plain, autocommit=True, application_name=application_name)
    try:
        for s in statements:
            conn.execute(s)
        yield conn
    finally:
        conn.close()
