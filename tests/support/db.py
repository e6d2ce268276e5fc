"""The fleet database's state between tests (every test of a process shares fleet_db)."""

from __future__ import annotations

import sqlalchemy as sa


def fresh_gauge(engine, columns: str = "v numeric", *values: float) -> None:
    """Forget the fleet's alert state and make the `gauge` table the test checks read (`columns`),
    with one row per value in `values`."""
    with engine.begin() as conn:
        clear_alert_state(conn)
        conn.execute(sa.text("DROP TABLE IF EXISTS gauge"))
        conn.execute(sa.text(f"CREATE TABLE gauge ({columns})"))
        for v in values:
            conn.execute(sa.text("INSERT INTO gauge (v) VALUES (:v)"), {"v": v})


def clear_alert_state(conn) -> None:
    """Forget every check run, alert, notification, silence, held-back count and evidence (tests share
    fleet_db)."""
    conn.execute(sa.text("TRUNCATE fleet.check_runs, fleet.alerts, fleet.alert_events, fleet.notifications, "
                         "fleet.silences, fleet.held_back, fleet.alert_evidence CASCADE"))
