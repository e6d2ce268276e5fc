"""The soak's load and its verdict (bench/soak.py): the application's writes (registrations, webhook logs,
a confirmation backlog, problems planted and cleared so checks fire and resolve), and the invariants read
from Postgres and the provider sink at the end."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa

from worker.backlog.confirmations import confirmation_number

BACKLOG = "status = 'completed' AND payment_status = 'completed' AND confirmation_number IS NULL"
FINAL = ("sent", "dead", "suppressed")


@dataclass
class Writer:
    """The sample application receiving writes, once a second: registrations (most confirmed by the app
    itself, a few left in seed 000's backlog), webhook calls (some 100 days old, for the archive job), and
    every ~90 s an incident: a burst of webhook 5xx and 200 backlog registrations, then it clears."""

    engine: sa.Engine
    rng: random.Random
    stop: threading.Event = field(default_factory=threading.Event)
    counts: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)

    def run(self) -> None:
        tick = 0
        while not self.stop.wait(1.0):
            tick += 1
            incident = tick % 90 < 25
            try:
                with self.engine.begin() as conn:
                    self._registrations(conn, normal=5, backlog=1 + (200 if tick % 90 == 1 else 0))
                    self._webhooks(conn, n=10, failing=0.6 if incident else 0.02, old=3)
            except sa.exc.SQLAlchemyError as exc:  # the monitored Postgres is not restarted, but say so
                self.errors[type(exc.orig or exc).__name__] += 1

    def _registrations(self, conn, *, normal: int, backlog: int) -> None:
        rows = [{"cust": self.rng.randint(1, 5000), "ev": self.rng.randint(1, 10), "num": f"APP-{uuid.uuid4().hex[:12]}",
                 "status": "completed", "paid": "completed", "age": 0} for _ in range(normal)]
        rows += [{"cust": self.rng.randint(1, 5000), "ev": self.rng.randint(1, 10), "num": None, "status": "completed",
                  "paid": "completed", "age": 3600} for _ in range(backlog)]
        conn.execute(sa.text(
            """INSERT INTO registrations (customer_id, event_id, email, full_name, amount_in_cents, status,
                                          payment_status, confirmation_number, confirmation_generated_at,
                                          email_status, created_at, updated_at)
               VALUES (:cust, :ev, 'soak' || CAST(:cust AS text) || '@example.com',
                       'Soak Guest ' || CAST(:cust AS text), 4500, :status, :paid, CAST(:num AS text),
                       CASE WHEN CAST(:num AS text) IS NULL THEN NULL ELSE now() END,
                       CASE WHEN CAST(:num AS text) IS NULL THEN NULL ELSE 'sent' END,
                       now() - make_interval(secs => CAST(:age AS integer)),
                       now() - make_interval(secs => CAST(:age AS integer)))"""), rows)
        self.counts["registrations"] += normal
        self.counts["backlog registrations planted"] += backlog

    def _webhooks(self, conn, *, n: int, failing: float, old: int) -> None:
        rows = []
        for i in range(n + old):
            bad = self.rng.random() < failing
            rows.append({"name": self.rng.choice(("stripe", "payment-confirmed", "crm-sync")),
                         "code": self.rng.choice((500, 502, 504)) if bad else 200,
                         "ms": self.rng.randint(20, 4000 if bad else 400), "err": "upstream error" if bad else None,
                         "age": 100 * 86400 if i >= n else 0})
        conn.execute(sa.text(
            """INSERT INTO webhook_logs (webhook_name, registration_id, status_code, duration_ms, error_message,
                                         created_at)
               VALUES (:name, NULL, :code, :ms, CAST(:err AS text), now() - make_interval(secs => CAST(:age AS integer)))"""), rows)
        self.counts["webhook_logs"] += n + old


@dataclass
class Storm:
    """A notification storm on top of what the checks fire: `rate` notifications a second (two emails for
    every Slack message), each a `test` transition of its own (never folded into a summary), written to
    the outbox and enqueued as a check run does. A row the fleet Postgres refused (its restart) is not
    written; one whose enqueue failed (Redis restarting) is left to notify.sweep."""

    fleet: sa.Engine
    client: object
    rate: float
    stop: threading.Event = field(default_factory=threading.Event)
    counts: Counter = field(default_factory=Counter)

    def run(self) -> None:
        from datetime import UTC, datetime

        from worker.notify import outbox

        n, owed = 0, 0.0
        while not self.stop.wait(1.0):
            owed += self.rate
            batch, owed = int(owed), owed - int(owed)
            payloads = []
            for _ in range(batch):
                n += 1
                channel = "slack" if n % 3 == 0 else "email"
                payloads.append((channel, {"check": "soak_storm", "severity": "high", "status": "test",
                                           "title": f"storm {n}", "summary": f"soak storm notification {n}",
                                           "labels": {"n": str(n)}}))
            try:
                with self.fleet.begin() as conn:
                    ids = [outbox.insert(conn, channel=ch, check="soak_storm", transition="test", payload=p,
                                         due=datetime.now(UTC), dedup_key=f"soak-storm:{uuid.uuid4()}")
                           for ch, p in payloads]
            except sa.exc.SQLAlchemyError:
                self.counts["storm rows refused (fleet Postgres restarting)"] += len(payloads)
                continue
            for (ch, _), nid in zip(payloads, ids, strict=True):
                self.counts[f"storm {ch}"] += 1
                try:
                    self.client.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")
                except Exception:  # noqa: BLE001 - the broker down: the row stays due, the sweeper's
                    self.counts["storm enqueues failed (left to notify.sweep)"] += 1


def scalar(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def pairs(engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def webhook_total(monitored) -> int:
    return scalar(monitored, "SELECT (SELECT count(*) FROM webhook_logs) + (SELECT count(*) FROM webhook_logs_archive)")


def unfinished(fleet) -> dict[str, int]:
    return dict(pairs(fleet, "SELECT status, count(*) FROM fleet.notifications WHERE status NOT IN "
                             "('sent', 'dead', 'suppressed') GROUP BY 1"))


@dataclass
class Verdict:
    lines: list[tuple[bool, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, ok: bool, text: str) -> None:
        self.lines.append((bool(ok), text))

    @property
    def ok(self) -> bool:
        return all(ok for ok, _ in self.lines)


def invariants(fleet, monitored, sink, *, since, webhooks_before: int, webhooks_written: int) -> Verdict:
    """`since`: when the fleet started (what the backlog numbered after it was emailed through the sink)."""
    v = Verdict()
    # -- notifications: none lost --------------------------------------------------------------------
    statuses = dict(pairs(fleet, "SELECT status, count(*) FROM fleet.notifications GROUP BY 1"))
    stuck = {s: n for s, n in statuses.items() if s not in FINAL}
    v.check(not stuck, f"no notification lost: {sum(statuses.values())} outbox rows, "
                       f"{', '.join(f'{s} {n}' for s, n in sorted(statuses.items()))}; not final: {stuck or 'none'}")
    emails = [e for e in sink.emails if not e["batch"]]
    keys = Counter(e["idempotency_key"] for e in emails)
    sent_email = pairs(fleet, "SELECT id::text, provider_id FROM fleet.notifications WHERE channel = 'email' "
                              "AND status = 'sent' AND folded_into IS NULL")
    missing = [nid for nid, _ in sent_email if nid not in keys]
    v.check(not missing, f"every sent email notification reached the provider: {len(sent_email)} sent (plus "
                         f"those folded into them), {len(missing)} missing {missing[:3]}")
    # -- notifications: none doubled -----------------------------------------------------------------
    doubled = {k: n for k, n in keys.items() if n > 1}
    v.check(not doubled and None not in keys,
            f"no email doubled: {len(emails)} alert emails at the provider, {len(keys)} idempotency keys, "
            f"{len(doubled)} keys received twice {list(doubled.items())[:3]}")
    slack_sent = scalar(fleet, "SELECT count(*) FROM fleet.notifications WHERE channel = 'slack' AND status = 'sent' "
                               "AND folded_into IS NULL")
    slack_got = len(sink.slack_messages)
    v.notes.append(f"Slack (no idempotency key, the documented duplicate window: at most one duplicate per "
                   f"worker killed or request timed out between Slack's answer and the commit of `sent`): "
                   f"{slack_got} messages received for {slack_sent} sent Slack notifications, "
                   f"{max(0, slack_got - slack_sent)} duplicates")
    table = pairs(monitored, "SELECT metadata->>'notification_id', count(*) FROM system_alerts "
                             "WHERE metadata ? 'notification_id' GROUP BY 1 HAVING count(*) > 1")
    v.notes.append(f"dashboard (system_alerts, written outside the fleet's transaction, the same window as Slack): "
                   f"{len(table)} notifications written twice")
    # -- backlog: one number and one email per registration --------------------------------------------
    numbered = pairs(monitored, "SELECT r.id, r.confirmation_number, count(ce.id), min(ce.status), max(ce.status), "
                                "bool_or(r.confirmation_generated_at >= :since) "
                                "FROM registrations r LEFT JOIN confirmation_emails ce ON ce.registration_id = r.id "
                                "WHERE r.confirmation_number LIKE 'CNF-%' GROUP BY r.id", since=since)
    wrong = [r for r in numbered if r[1] != confirmation_number(r[0]) or r[2] != 1]
    left = scalar(monitored, f"SELECT count(*) FROM registrations WHERE {BACKLOG}")  # noqa: S608
    v.check(not wrong and left == 0, f"one confirmation number and one email row per registration: {len(numbered)} "
                                     f"numbered by the backlog ({sum(bool(r[5]) for r in numbered)} during the soak), {len(wrong)} wrong {wrong[:3]}, {left} left unnumbered")
    tagged = Counter(next((t["value"] for t in e.get("tags") or [] if t.get("name") == "registration_id"), None)
                     for e in sink.emails if e["batch"])
    sent_rows = {str(r[0]) for r in numbered if r[3] == r[4] == "sent" and r[5]}
    twice = {k: n for k, n in tagged.items() if n > 1}
    unsent = sent_rows - set(tagged)
    v.check(not twice and not unsent, f"one confirmation email per registration at the provider: {len(tagged)} "
                                      f"registrations emailed ({len(sent_rows)} numbered and sent during the soak), {len(twice)} twice {list(twice.items())[:3]}, "
                                      f"{len(unsent)} recorded sent but never received")
    # -- checks: no slot evaluated twice ---------------------------------------------------------------
    runs = scalar(fleet, "SELECT count(*) FROM fleet.check_runs")
    dup = pairs(fleet, "SELECT check_name, slot, count(*) FROM fleet.check_runs GROUP BY 1, 2 HAVING count(*) > 1")
    open_runs = scalar(fleet, "SELECT count(*) FROM fleet.check_runs WHERE finished_at IS NULL")
    v.check(not dup and not open_runs, f"no check slot evaluated twice: {runs} runs, {len(dup)} (check, slot) twice "
                                       f"{dup[:3]}, {open_runs} left unfinished")
    # -- archive: rows conserved -----------------------------------------------------------------------
    archives = dict(pairs(fleet, "SELECT status, count(*) FROM fleet.job_runs WHERE job = 'archive_webhook_logs' "
                                 "GROUP BY 1"))
    total = webhook_total(monitored)
    both = scalar(monitored, "SELECT count(*) FROM webhook_logs JOIN webhook_logs_archive USING (id)")
    moved = scalar(monitored, "SELECT count(*) FROM webhook_logs_archive")
    v.check(archives.get("ok", 0) > 0 and total == webhooks_before + webhooks_written and both == 0,
            f"archive rows conserved: archive runs {archives}, {moved} rows archived; live + archive = {total} = "
            f"{webhooks_before} before + {webhooks_written} written: {total == webhooks_before + webhooks_written}; "
            f"{both} in both tables")
    return v
