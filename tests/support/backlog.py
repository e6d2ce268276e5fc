"""A backlog of the sample application's registrations, the Resend channel that confirms it, and the
promise checked after a run (one number and one email each): tests/backlog/ and tests/reliability/."""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa

from worker.backlog.confirmations import confirmation_number
from worker.channels.email import EmailChannel

KEY = "re_test_key_0123456789"


def channel(sink, timeout: float = 10) -> EmailChannel:
    return EmailChannel(KEY, "confirm@example.com", "Events", [], api_url=sink.resend_api_url, timeout=timeout)


def add_backlog(engine, n: int, *, start: int = 1, age: str = "1 hour") -> None:
    """n paid registrations without a confirmation number (seed 000's backlog), ids start..start+n-1."""
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO registrations (id, customer_id, event_id, email, full_name, amount_in_cents, status,
                                          payment_status, created_at, updated_at)
               SELECT i, i, 1 + i % 7, 'guest' || i || '@example.com', 'Guest <' || i || '> & co', 4500,
                      'completed', 'completed', now() - CAST(:age AS interval) - interval '5 minutes',
                      now() - CAST(:age AS interval) - make_interval(secs => i % 60)
               FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) i"""),
            {"a": start, "b": start + n - 1, "age": age})


def q(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def assert_exactly_once(engine, sink, n: int) -> None:
    """Every backlog registration: one number (its own), one confirmation_emails row, sent; the provider
    holds exactly one email per registration."""
    rows = q(engine, """SELECT r.id, r.confirmation_number, r.email_status, count(ce.id), min(ce.status),
                               max(ce.status), min(ce.provider_id)
                        FROM registrations r LEFT JOIN confirmation_emails ce ON ce.registration_id = r.id
                        WHERE r.id < 900000 GROUP BY r.id ORDER BY r.id""")
    assert len(rows) == n
    bad = [r for r in rows if (r[1], r[2], r[3], r[4], r[5]) != (confirmation_number(r[0]), "sent", 1, "sent", "sent")]
    assert not bad, bad[:5]
    recipients = Counter(e["to"][0] for e in sink.emails if e["to"][0].startswith("guest"))
    assert len(recipients) == n, f"{n - len(recipients)} registrations got no email"
    doubled = {k: v for k, v in recipients.items() if v > 1}
    assert not doubled, f"sent twice: {list(doubled.items())[:5]}"
    assert len(sink.emails) == n
    provider_ids = {e["id"] for e in sink.emails}
    assert {r[6] for r in rows} == provider_ids  # what we recorded is what the provider accepted
