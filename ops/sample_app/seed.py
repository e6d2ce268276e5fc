"""Realistic sample-app data with planted problems, streamed into Postgres with COPY.

`seed(engine, scale)` writes `scale` registrations and proportional amounts of everything else, spread
over the 120 days before `now`, then plants the problems `planted_problems()` lists, anchored at `now`
so the seeds' checks fire when run right after. Every table is produced by a generator and written
in COPY batches of `batch_size` rows (one transaction each), so memory does not grow with `scale`:
nothing holds more than a few thousand rows, and tables that relate to another one (emails to
registrations, tickets to reservations) replay that one's deterministic generator instead of
remembering it. Same `rng_seed` and `now` -> same data.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, islice

import psycopg
from psycopg import postgres, sql
from psycopg.adapt import Dumper
from psycopg.pq import Format
from sqlalchemy.engine import Engine

Progress = Callable[[str, int, int], None]
Row = tuple

MIN_SCALE = 100
DAY = 86_400.0
HOUR = 3_600.0
HISTORY = 120 * DAY

FAILING_WEBHOOK = "generate-confirmation"
WEBHOOKS = ("registration-payment-webhook", FAILING_WEBHOOK, "send-confirmation-email", "resend-webhook", "stripe-webhook")
WEBHOOK_WEIGHTS = (0.26, 0.26, 0.26, 0.14, 0.08)
STALE_WHATSAPP_SESSION = "wa-backup-02"
DOUBLE_BOOKING_ERROR = 'duplicate key value violates unique constraint "reservation_seats_active_seat_key"'

_FIRST = ("Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemi", "Liam",
          "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara", "Uma", "Victor", "Wen", "Yusuf")
_LAST = ("Almeida", "Brown", "Chen", "Dubois", "Evans", "Fischer", "Garcia", "Haddad", "Ivanova", "Jensen",
         "Kowalski", "Lopez", "Muller", "Nakamura", "Okafor", "Patel", "Rossi", "Silva", "Tanaka", "Weber")
_DOMAINS = ("example.com", "mail.example", "example.org", "inbox.example.net")
_PRICES = (2500, 4500, 4500, 7500, 12000, 19900)


def planted_problems() -> list[str]:
    """What seed() plants, as SQL-visible facts (all relative to its `now`)."""
    return [
        "confirmation backlog: 30 + scale//50000 registrations with status = 'completed', "
        "payment_status = 'completed', confirmation_number IS NULL, updated_at 21-59 min ago",
        f"failing webhook: '{FAILING_WEBHOOK}' has 45% non-200 status codes in webhook_logs over the last hour "
        "(and twice the calls of the others, which stay at <= 1%), so the overall rate is ~15%",
        "slow processing: >= 12% of the last hour's confirmations took 6-40 s "
        "(confirmation_generated_at - updated_at), so p95 > 5 s; the confirmation success rate of "
        "the last hour is far below 95% because of the backlog",
        "SMS failure spike: 18% of sms_delivery_log rows in the last hour have delivery_status = 'failed'",
        f"WhatsApp: session '{STALE_WHATSAPP_SESSION}' is_active with updated_at 30 h ago; 20% of "
        "whatsapp_notifications in the last 24 h (and the last hour, > 10 messages) are 'failed' "
        "(delivery rate 80%); 35 whatsapp_error_logs rows in the last hour; error logs older than 30 days",
        "seat reservations: 12 seat_reservations still is_active with expires_at 2-24 min in the past, their "
        "show_seats 'reserved'; the last cleanup run (reservation_cleanup_runs) was 25 min ago, failed after "
        "32 s with a statement timeout",
        "webhook_logs rows older than 90 days (~15% of them; the last monthly_maintenance in maintenance_log "
        "was 65 days ago), and rate_limit_logs rows older than 24 h",
        "error_logs: 9 rows with severity high/critical in the last hour",
        "performance_metrics: metric_type 'edge_function' averages > 3000 ms over the last hour "
        f"(half the calls are '{FAILING_WEBHOOK}' at 6-14 s)",
        "ticket_orders: 6.9-8.3% (by scale) failed over the last 24 h, none in the last 30 min",
        "double booking: one seat_reservation_audit_log row, event_type 'failed', 2 min ago, with "
        f"error_message '{DOUBLE_BOOKING_ERROR}'",
    ]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _clamp(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, x))


def _marked(j: int, rate: float) -> bool:
    """Exactly floor(n * rate) of j = 0..n-1 are marked, spread evenly (deterministic counts)."""
    return math.floor((j + 1) * rate) > math.floor(j * rate)


def _ages(rng: random.Random, n: int, newest: float, oldest: float, growth: float = 0.0) -> Iterator[float]:
    """n ages in seconds, oldest first, stratified (so sorted with no list); growth > 0 makes recent
    times denser (density at `newest` is 1 + growth times that at `oldest`)."""
    span = oldest - newest
    a = 2 * growth * (1 + growth / 2)
    for i in range(n):
        u = (i + rng.random()) / n
        t = (math.sqrt(1 + a * u) - 1) / growth if growth else u
        yield newest + (1 - t) * span


def _person(customer_id: int) -> tuple[str, str]:
    first = _FIRST[customer_id % len(_FIRST)]
    last = _LAST[(customer_id // len(_FIRST)) % len(_LAST)]
    email = f"{first.lower()}.{last.lower()}{customer_id}@{_DOMAINS[customer_id % len(_DOMAINS)]}"
    return email, f"{first} {last}"


class _JsonbTextBinaryDumper(Dumper):
    """jsonb in binary COPY from a str that already holds JSON (version byte 1 + the text)."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: str) -> bytes:
        return b"\x01" + obj.encode()


# Column types whose Python values (int, str, bool, datetime, list[int], JSON str) psycopg can send in
# binary COPY; a table with any other type (here: inet) is copied in text format.
_BINARY_COPY_TYPES = {"int2", "int4", "int8", "text", "bool", "timestamptz", "jsonb", "_int8"}


def copy_rows(conn: psycopg.Connection, table: str, columns: Iterable[str], rows: Iterable[Row], *,
              total: int, batch_size: int, progress: Progress | None = None) -> int:
    """COPY `rows` into `table`, `batch_size` rows per COPY statement and transaction (binary format
    when every column type allows it)."""
    columns = list(columns)
    types = conn.execute(
        "SELECT a.atttypid, t.typname FROM unnest(%s::text[]) WITH ORDINALITY AS c(name, n)"
        " JOIN pg_attribute a ON a.attrelid = %s::regclass AND a.attname = c.name"
        " JOIN pg_type t ON t.oid = a.atttypid ORDER BY c.n", (columns, table)).fetchall()
    binary = len(types) == len(columns) and all(name in _BINARY_COPY_TYPES for _, name in types)
    stmt = sql.SQL("COPY {} ({}) FROM STDIN {}").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL("(FORMAT BINARY)" if binary else ""))
    it = iter(rows)
    done = 0
    if progress:
        progress(table, 0, total)
    while True:
        batch = islice(it, batch_size)
        first = next(batch, None)
        if first is None:
            return done
        with conn.cursor() as cur:
            cur.adapters.register_dumper(None, _JsonbTextBinaryDumper)
            with cur.copy(stmt) as copy:
                if binary:
                    copy.set_types([oid for oid, _ in types])
                write = copy.write_row
                write(first)
                n = 1
                for row in batch:
                    write(row)
                    n += 1
        conn.commit()
        done += n
        if progress:
            progress(table, done, max(total, done))


# --------------------------------------------------------------------------------------------
# 000: registrations, confirmation_emails, webhook_logs, maintenance_log
# --------------------------------------------------------------------------------------------

REGISTRATION_COLUMNS = ("id", "customer_id", "event_id", "email", "full_name", "amount_in_cents", "status",
                        "payment_status", "payment_intent_id", "confirmation_number", "confirmation_generated_at",
                        "email_status", "created_at", "updated_at")


@dataclass(frozen=True)
class _RegistrationPlan:
    recent: int   # confirmed in the last hour
    slow: int     # of which took 6-40 s
    backlog: int  # paid, no confirmation number
    history: int  # older than 65 min

    @classmethod
    def for_scale(cls, scale: int) -> _RegistrationPlan:
        recent = _clamp(scale // 1500, 60, 2000)
        backlog = 30 + scale // 50_000
        return cls(recent, max(8, math.ceil(0.12 * recent)), backlog, scale - recent - backlog)


def iter_registration_rows(scale: int, now: datetime, rng_seed: int = 42) -> Iterator[Row]:
    """The registrations rows, in REGISTRATION_COLUMNS order (oldest first, then the last hour)."""
    plan = _RegistrationPlan.for_scale(scale)
    rng = random.Random(f"{rng_seed}:registrations")
    n_customers = max(50, scale * 3 // 5)
    n_events = max(5, scale // 2000)
    rid = 0

    def row(created: datetime, updated: datetime, status: str, payment: str, generated: datetime | None,
            email_status: str | None) -> Row:
        cid = rng.randrange(1, n_customers + 1)
        email, name = _person(cid)
        return (rid, cid, 1 + rng.randrange(n_events), email, name, _PRICES[rng.randrange(len(_PRICES))],
                status, payment, f"pi_{rid:012d}", f"CNF-{rid:010d}" if generated else None, generated,
                email_status, created, updated)

    for age in _ages(rng, plan.history, 65 * 60, HISTORY, growth=1.5):
        rid += 1
        created = now - timedelta(seconds=age)
        updated = created + timedelta(seconds=rng.uniform(20, 240))
        r = rng.random()
        if r < 0.92:
            generated = updated + timedelta(seconds=min(rng.lognormvariate(0.2, 0.45), 4.8))
            yield row(created, updated, "completed", "completed", generated,
                      "failed" if rng.random() < 0.015 else "sent")
        elif r < 0.96:
            yield row(created, updated, "pending", "pending", None, None)
        else:
            yield row(created, updated, "cancelled", "failed", None, None)

    slow = set(rng.sample(range(plan.recent), plan.slow))
    for j, age in enumerate(_ages(rng, plan.recent, 20, 59 * 60)):
        rid += 1
        took = rng.uniform(6, 40) if j in slow else min(rng.lognormvariate(0.2, 0.45), 4.8)
        updated = now - timedelta(seconds=max(age, took + 5))
        generated = updated + timedelta(seconds=took)
        created = updated - timedelta(seconds=rng.uniform(20, 240))
        email_status = "pending" if generated > now - timedelta(seconds=20) else "failed" if j % 50 == 49 else "sent"
        yield row(created, updated, "completed", "completed", generated, email_status)

    for age in _ages(rng, plan.backlog, 21 * 60, 59 * 60):
        rid += 1
        updated = now - timedelta(seconds=age)
        yield row(updated - timedelta(seconds=rng.uniform(20, 240)), updated, "completed", "completed", None, None)


_EMAIL_COLUMNS = ("id", "registration_id", "recipient", "subject", "status", "provider_id", "error", "attempts",
                  "sent_at", "created_at")
_EMAIL_ERRORS = ("550 5.1.1 mailbox unavailable", "Resend API 429: rate limit exceeded",
                 "Resend API 500: internal server error", "422: invalid recipient address")


def _confirmation_emails(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    """One email per confirmed registration (replays the registrations generator)."""
    rng = random.Random(f"{rng_seed}:emails")
    eid = 0
    for reg in iter_registration_rows(scale, now, rng_seed):
        generated = reg[10]
        if generated is None:
            continue
        eid += 1
        email_status = reg[11]
        subject = f"Your registration is confirmed ({reg[9]})"
        sent_at = generated + timedelta(seconds=rng.uniform(0.5, 3))
        if email_status == "pending":
            yield (eid, reg[0], reg[3], subject, "pending", None, None, 1, None, generated)
        elif email_status == "failed":
            error = _EMAIL_ERRORS[rng.randrange(len(_EMAIL_ERRORS))]
            yield (eid, reg[0], reg[3], subject, "failed", None, error, 3, sent_at, generated)
        else:
            status = "bounced" if rng.random() < 0.004 else "sent"
            yield (eid, reg[0], reg[3], subject, status, f"re_{rng.getrandbits(48):012x}", None, 1, sent_at, generated)


_WEBHOOK_COLUMNS = ("id", "webhook_name", "registration_id", "status_code", "duration_ms", "payload",
                    "error_message", "created_at")
_WEBHOOK_EVENTS = dict(zip(WEBHOOKS, ("payment_intent.succeeded", "registration.paid", "confirmation.generated",
                                      "email.delivered", "charge.succeeded"), strict=True))
_HTTP_ERRORS = {400: "400 Bad Request: invalid signature", 401: "401 Unauthorized", 429: "429 Too Many Requests",
                500: "500 Internal Server Error", 502: "502 Bad Gateway", 504: "504 Gateway Timeout"}
_FAILING_ERRORS = ((500, "500: could not obtain a database connection within 5000 ms"),
                   (504, "504: function timed out after 30 s"), (502, "502 Bad Gateway"))


def _webhook_sizes(scale: int) -> tuple[int, int]:
    per_hook = _clamp(scale // 4000, 30, 500)
    recent = per_hook * (len(WEBHOOKS) + 1)
    return per_hook, 2 * scale - recent


def _webhook_logs(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:webhooks")
    per_hook, n_history = _webhook_sizes(scale)
    reg = _RegistrationPlan.for_scale(scale)
    cum = [sum(WEBHOOK_WEIGHTS[: i + 1]) for i in range(len(WEBHOOKS))]
    codes = tuple(_HTTP_ERRORS)
    wid = 0
    for i, age in enumerate(_ages(rng, n_history, HOUR + 60, HISTORY, growth=1.5)):
        wid += 1
        r = rng.random()
        name = WEBHOOKS[min(bisect.bisect_right(cum, r), len(WEBHOOKS) - 1)]
        registration_id = 1 + i * reg.history // n_history
        code = codes[rng.randrange(len(codes))] if rng.random() < 0.006 else 200
        payload = f'{{"registration_id": {registration_id}, "event": "{_WEBHOOK_EVENTS[name]}", "attempt": 1}}'
        yield (wid, name, registration_id, code, int(rng.lognormvariate(4.6, 0.5)), payload,
               _HTTP_ERRORS.get(code), now - timedelta(seconds=age))

    # The last hour: healthy hooks <= 1% errors; the failing one retries (2x calls) at 45% errors,
    # its failures pointing at the backlog's registrations. Sorted by time: a few thousand rows at most.
    first_backlog = reg.history + reg.recent + 1
    recent: list[tuple] = []
    for name in WEBHOOKS:
        failing = name == FAILING_WEBHOOK
        n = per_hook * (2 if failing else 1)
        for j, age in enumerate(_ages(rng, n, 5, HOUR - 10)):
            attempt = 1
            if failing and _marked(j, 0.45):
                code, error = _FAILING_ERRORS[j % len(_FAILING_ERRORS)]
                registration_id, attempt = first_backlog + j % reg.backlog, 1 + j % 3
                duration = 30_000 if code == 504 else rng.randrange(4000, 9000)
            else:
                code = 502 if not failing and j % 100 == 99 else 200
                error, registration_id = _HTTP_ERRORS.get(code), first_backlog - 1 - rng.randrange(reg.recent)
                duration = int(rng.lognormvariate(4.6, 0.5))
            payload = f'{{"registration_id": {registration_id}, "event": "{_WEBHOOK_EVENTS[name]}", "attempt": {attempt}}}'
            recent.append((age, name, registration_id, code, duration, payload, error))
    recent.sort(key=lambda r: -r[0])
    for age, *rest in recent:
        wid += 1
        yield (wid, *rest, now - timedelta(seconds=age))


def _maintenance_log(now: datetime) -> list[Row]:
    """Monthly maintenance ran 95 and 65 days ago (nothing was 90 days old yet), not since."""
    details = '{"archived_webhook_logs": 0, "vacuumed": ["registrations", "webhook_logs", "confirmation_emails"]}'
    return [("monthly_maintenance", now - timedelta(days=d, minutes=7), now - timedelta(days=d), 0, details)
            for d in (95, 65)]


# --------------------------------------------------------------------------------------------
# 001: sms_delivery_log, error_logs, performance_metrics, user_sessions, rate_limit_logs,
#      system_alerts, backup_log
# --------------------------------------------------------------------------------------------

_SMS_COLUMNS = ("id", "recipient_phone", "message_type", "delivery_status", "provider", "provider_message_id",
                "error_code", "error_message", "created_at", "delivered_at")
_SMS_ERRORS = (("30003", "Unreachable destination handset"), ("30005", "Unknown destination handset"),
               ("30006", "Landline or unreachable carrier"), ("30007", "Message filtered by carrier"))
_SMS_TYPES = ("event_reminder", "ticket_link", "verification_code", "campaign")


def _sms_sizes(scale: int) -> tuple[int, int]:
    recent = _clamp(scale // 2000, 80, 500)
    return recent, _clamp(scale // 4, 300, 250_000) - recent


def _sms_delivery_log(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:sms")
    n_recent, n_history = _sms_sizes(scale)

    def row(i: int, age: float, status: str) -> Row:
        created = now - timedelta(seconds=age)
        err = _SMS_ERRORS[rng.randrange(len(_SMS_ERRORS))] if status in ("failed", "undelivered") else (None, None)
        delivered = created + timedelta(seconds=rng.uniform(2, 20)) if status == "delivered" else None
        return (i, f"+1{rng.randrange(2_000_000_000, 9_999_999_999)}", _SMS_TYPES[rng.randrange(len(_SMS_TYPES))],
                status, "twilio", f"SM{rng.getrandbits(64):016x}", err[0], err[1], created, delivered)

    for i, age in enumerate(_ages(rng, n_history, HOUR + 60, HISTORY, growth=1.5), start=1):
        r = rng.random()
        yield row(i, age, "delivered" if r < 0.93 else "sent" if r < 0.96 else "failed" if r < 0.99 else "undelivered")
    for j, age in enumerate(_ages(rng, n_recent, 30, HOUR - 30)):
        status = "failed" if _marked(j, 0.18) else "sent" if age < 60 else "delivered"
        yield row(n_history + j + 1, age, status)


_ERROR_COLUMNS = ("id", "severity", "category", "message", "function_name", "error_details", "occurred_at")
_ERRORS = (("api", "send-confirmation-email", "Resend API responded 429"),
           ("database", "generate-confirmation", "canceling statement due to statement timeout"),
           ("api", "registration-payment-webhook", "Stripe signature verification failed"),
           ("auth", "admin-login", "Invalid refresh token"),
           ("sms", "send-sms-reminder", "Twilio error 30003: unreachable handset"),
           ("api", "provision-gift-card", "Provider returned 503"))
_SEVERITIES = ("low", "medium", "high", "critical")
_RECENT_ERRORS = ("critical", "high", "low", "high", "medium", "critical", "high", "low", "high", "medium",
                  "high", "low", "critical", "medium", "high", "low", "medium")  # 9 high/critical of 17


def _error_logs(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:errors")
    n_history = _clamp(scale // 20, 100, 50_000) - len(_RECENT_ERRORS)

    def row(i: int, age: float, severity: str, err: tuple[str, str, str]) -> Row:
        details = f'{{"duration_ms": {rng.randrange(5, 30_000)}, "request_id": "req_{rng.getrandbits(40):010x}"}}'
        return (i, severity, err[0], err[2], err[1], details, now - timedelta(seconds=age))

    for i, age in enumerate(_ages(rng, n_history, HOUR + 60, HISTORY, growth=1.5), start=1):
        r = rng.random()
        severity = "low" if r < 0.6 else "medium" if r < 0.955 else "high" if r < 0.995 else "critical"
        yield row(i, age, severity, _ERRORS[rng.randrange(len(_ERRORS))])
    for j, age in enumerate(_ages(rng, len(_RECENT_ERRORS), 60, HOUR - 60)):
        severity = _RECENT_ERRORS[j]
        yield row(n_history + j + 1, age, severity, _ERRORS[1] if severity in ("high", "critical") else _ERRORS[j % 6])


_PERF_COLUMNS = ("id", "metric_type", "metric_name", "duration_ms", "metadata", "client_id", "recorded_at")
_EDGE_FUNCTIONS = (FAILING_WEBHOOK, "send-confirmation-email", "registration-payment-webhook", "check-alert-triggers")
_PAGES = ("dashboard_load", "registrations_list", "event_detail", "system_health")


def _perf_sizes(scale: int) -> tuple[int, int, int]:
    edge = _clamp(scale // 5000, 40, 400)
    pages = edge // 2
    return edge, pages, _clamp(scale // 2, 200, 250_000) - edge - pages


def _performance_metrics(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:perf")
    n_edge, n_pages, n_history = _perf_sizes(scale)
    pid = 0

    def edge(name: str, duration: int, age: float) -> Row:
        meta = '{"region": "us-east-1", "cold_start": %s}' % ("true" if rng.random() < 0.05 else "false")
        return (pid, "edge_function", name, duration, meta, None, now - timedelta(seconds=age))

    def page(age: float) -> Row:
        name = _PAGES[rng.randrange(len(_PAGES))]
        return (pid, "page_load", name, int(rng.lognormvariate(7.1, 0.4)), f'{{"route": "/{name}"}}',
                rng.randrange(1, 201), now - timedelta(seconds=age))

    for age in _ages(rng, n_history, HOUR + 60, HISTORY, growth=1.5):
        pid += 1
        r = rng.random()
        if r < 0.5:
            yield edge(_EDGE_FUNCTIONS[rng.randrange(4)], min(int(rng.lognormvariate(5.85, 0.5)), 2500), age)
        elif r < 0.85:
            yield page(age)
        else:
            yield (pid, "api_call", "rest:registrations", int(rng.lognormvariate(5.0, 0.4)), None, None,
                   now - timedelta(seconds=age))
    for j, age in enumerate(_ages(rng, n_edge, 30, HOUR - 30)):
        pid += 1
        if _marked(j, 0.5):
            yield edge(FAILING_WEBHOOK, rng.randrange(6000, 14_000), age)
        else:
            yield edge(_EDGE_FUNCTIONS[1 + rng.randrange(3)], min(int(rng.lognormvariate(5.85, 0.5)), 2500), age)
    for age in _ages(rng, n_pages, 30, HOUR - 30):
        pid += 1
        yield page(age)


_SESSION_COLUMNS = ("id", "user_id", "client_id", "ip_address", "user_agent", "created_at", "last_active_at",
                    "expires_at")
_AGENTS = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
           "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5)")


def _user_sessions(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:sessions")
    n_live = _clamp(scale // 5000, 10, 300)
    n_history = _clamp(scale // 10, 50, 50_000) - n_live
    n_users = max(20, n_history // 3)
    for i in range(1, n_history + n_live + 1):
        if i <= n_history:
            created_age = rng.uniform(HOUR, 30 * DAY)
            active_age = min(created_age, max(created_age - rng.uniform(0, 4 * HOUR), 20 * 60 + rng.uniform(0, HOUR)))
        else:
            created_age = rng.uniform(15 * 60, 8 * HOUR)
            active_age = rng.uniform(5, 14 * 60)
        created = now - timedelta(seconds=created_age)
        ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        yield (i, rng.randrange(1, n_users + 1), rng.randrange(1, 201), ip, _AGENTS[rng.randrange(3)], created,
               now - timedelta(seconds=active_age), created + timedelta(days=7))


_RATE_COLUMNS = ("id", "identifier", "endpoint", "request_count", "window_start", "created_at")
_ENDPOINTS = ("/api/registrations", "/api/auth/login", "/api/events", "/functions/v1/send-alert-notification")


def _rate_limit_logs(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:ratelimit")
    for i, age in enumerate(_ages(rng, _clamp(scale // 5, 100, 100_000), 5, 14 * DAY), start=1):
        created = now - timedelta(seconds=age)
        who = f"ip:203.0.113.{rng.randrange(1, 255)}" if rng.random() < 0.6 else f"user:{rng.randrange(1, 5000)}"
        yield (i, who, _ENDPOINTS[rng.randrange(len(_ENDPOINTS))], rng.randrange(1, 120),
               created.replace(second=0, microsecond=0), created)


_ALERT_COLUMNS = ("alert_type", "title", "message", "severity", "metadata", "dismissed", "is_read", "created_at",
                  "resolved_at")
_ALERT_KINDS = (("high_error_rate", "High Error Rate Detected", "Detected %d errors in the last hour", "critical"),
                ("performance_degradation", "Performance Degradation Detected", "Average response time: %dms "
                 "(threshold: 3000ms)", "warning"),
                ("high_sms_failure_rate", "High SMS Failure Rate", "%d%% of SMS messages failed", "high"))


def _system_alerts(now: datetime, rng_seed: int) -> list[Row]:
    rng = random.Random(f"{rng_seed}:alerts")
    rows = []
    for k in range(24):
        kind, title, message, severity = _ALERT_KINDS[k % 3]
        value = (6 + k % 9, 3100 + 97 * k, 11 + k % 7)[k % 3]
        created = now - timedelta(seconds=rng.uniform(6 * HOUR, 30 * DAY))
        rows.append((kind, title, message % value, severity, f'{{"value": {value}}}', True, True, created,
                     created + timedelta(minutes=rng.randrange(20, 90))))
    rows.sort(key=lambda r: r[7])
    rows.append(("performance_degradation", "Performance Degradation Detected",
                 "Average response time: 3412ms (threshold: 3000ms)", "warning", '{"avg_duration_ms": 3412}',
                 False, False, now - timedelta(hours=3), None))
    return rows


_BACKUP_COLUMNS = ("backup_type", "status", "started_at", "completed_at", "size_bytes", "location", "error_message")


def _backup_log(now: datetime) -> list[Row]:
    rows = []
    for k in range(119, -1, -1):
        started = now - timedelta(days=k, hours=3, minutes=(k * 7) % 13)
        day = started.strftime("%Y-%m-%d")
        if k == 40:
            rows.append(("full", "failed", started, started + timedelta(minutes=2), None, None,
                         "pg_dump: error: connection to server was lost"))
            continue
        size = int((2.0 + 3.0 * (119 - k) / 119) * 2**30)
        rows.append(("full", "succeeded", started, started + timedelta(minutes=8 + k % 7), size,
                     f"s3://ops-backups/sample-app/{day}.dump", None))
    return rows


# --------------------------------------------------------------------------------------------
# 003: whatsapp_notifications, whatsapp_error_logs, whatsapp_sessions
# --------------------------------------------------------------------------------------------

_WA_COLUMNS = ("id", "order_id", "phone_number", "message_type", "status", "error_message", "attempts",
               "created_at", "sent_at")
_WA_TYPES = ("order_confirmation", "ticket_delivery", "event_reminder")
_WA_SEND_ERRORS = ("Connection Closed", "Timed Out", "Phone number is not on WhatsApp", "Rate limit exceeded")


def _whatsapp_sizes(scale: int) -> tuple[int, int, int]:
    day = _clamp(scale // 500, 60, 3000)
    hour = max(20, day // 8)
    return hour, day - hour, _clamp(scale // 5, 100, 100_000) - day


def _whatsapp_notifications(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:whatsapp")
    n_hour, n_day, n_history = _whatsapp_sizes(scale)
    wid = 0

    def row(age: float, status: str) -> Row:
        created = now - timedelta(seconds=age)
        failed = status == "failed"
        sent = created + timedelta(seconds=rng.uniform(1, 12)) if status == "sent" else None
        return (wid, rng.randrange(1, 10**6), f"+55119{rng.randrange(10**7, 10**8)}", _WA_TYPES[rng.randrange(3)],
                status, _WA_SEND_ERRORS[rng.randrange(4)] if failed else None, 3 if failed else 1, created, sent)

    for age in _ages(rng, n_history, DAY + 60, HISTORY, growth=1.5):
        wid += 1
        yield row(age, "failed" if rng.random() < 0.025 else "sent")
    # The last 24 h and the last hour: 20% failed each; the two newest still pending.
    for j, age in enumerate(_ages(rng, n_day, HOUR + 30, DAY)):
        wid += 1
        yield row(age, "failed" if _marked(j, 0.2) else "sent")
    for j, age in enumerate(_ages(rng, n_hour, 5, HOUR - 30)):
        wid += 1
        yield row(age, "pending" if j >= n_hour - 2 else "failed" if _marked(j, 0.2) else "sent")


_WA_ERROR_COLUMNS = ("id", "notification_id", "error_type", "error_message", "phone_number", "context", "created_at")
_WA_ERROR_TYPES = (("connection_closed", "Connection Closed: stream errored out"),
                   ("send_timeout", "Timed Out waiting for message ack"),
                   ("rate_limited", "Rate limit exceeded (429)"),
                   ("session_expired", "Session expired: scan the QR code again"),
                   ("invalid_phone_number", "Phone number is not on WhatsApp"),
                   ("media_upload_failed", "Media upload failed: 413 Payload Too Large"))
_WA_RECENT_TYPES = (0,) * 15 + (1,) * 10 + (2,) * 6 + (3,) * 4  # 35 in the last hour


def _whatsapp_error_logs(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:whatsapp-errors")
    n_history = _clamp(scale // 100, 40, 10_000)
    recent = list(_WA_RECENT_TYPES)
    rng.shuffle(recent)
    history = ((age, rng.choice((0, 1, 2, 4, 4, 5))) for age in _ages(rng, n_history, HOUR + 60, HISTORY, growth=1.0))
    last_hour = zip(_ages(rng, len(recent), 20, HOUR - 20), recent, strict=True)
    for i, (age, kind) in enumerate(chain(history, last_hour), start=1):
        error_type, message = _WA_ERROR_TYPES[kind]
        yield (i, rng.randrange(1, 10**6) if kind != 0 else None, error_type, message,
               f"+55119{rng.randrange(10**7, 10**8)}", f'{{"attempt": {1 + i % 3}}}', now - timedelta(seconds=age))


_WA_SESSION_COLUMNS = ("session_id", "phone_number", "is_active", "connection_state", "last_connected_at",
                       "created_at", "updated_at")


def _whatsapp_sessions(now: datetime) -> list[Row]:
    ago = lambda **kw: now - timedelta(**kw)  # noqa: E731
    return [("wa-legacy-00", "+551140040000", False, "disconnected", ago(days=41), ago(days=200), ago(days=40)),
            ("wa-main-01", "+551140040001", True, "connected", ago(hours=3), ago(days=90), ago(minutes=2)),
            (STALE_WHATSAPP_SESSION, "+551140040002", True, "connected", ago(hours=31), ago(days=60), ago(hours=30))]


# --------------------------------------------------------------------------------------------
# 004: shows, show_seats, seat_reservations, reservation_seats, seat_reservation_audit_log,
#      ticket_orders, tickets, reservation_cleanup_runs
# --------------------------------------------------------------------------------------------

SEATS_PER_ROW = 20
_SECTIONS = (("ORCH", 8900), ("MEZZ", 6500), ("BALC", 3900))
_TITLES = ("Hamlet", "The Magic Flute", "Swan Lake", "Jazz at Midnight", "La Traviata", "Stand-up Gala")
_VENUES = ("Grand Theatre", "Riverside Hall", "Opera House")
_PAYMENT_FAILURES = ("card_declined", "insufficient_funds", "payment_intent_authentication_failure")
_RACE_ERROR = "Seat(s) taken by another session"
_LIVE_DONE, _LIVE_ACTIVE, _STALE = 6, 8, 12


@dataclass(frozen=True, slots=True)
class _Reservation:
    id: int
    show: int         # 0-based show index
    first_seat: int   # 0-based seat index within the show
    seats: int
    session_id: str
    created: datetime
    expires: datetime
    outcome: str      # completed | expired | active | stale (still active past expires_at)
    ended: datetime | None
    extended: bool
    order: str | None  # paid | failed | pending | refunded
    order_created: datetime | None
    race_lost: bool    # a 'failed' attempt (seat taken) just before this reservation


def _ticket_counts(scale: int) -> tuple[int, int, int]:
    n_res = _clamp(scale // 10, 200, 100_000)
    day = _clamp(n_res // 20, 80, 5000)
    day -= day % 20
    return n_res, day, _clamp(n_res // 250, 4, 400)


def _reservations(scale: int, now: datetime, rng_seed: int) -> Iterator[_Reservation]:
    """The reservation plan, in creation order; deterministic, so each ticketing table replays it."""
    rng = random.Random(f"{rng_seed}:tickets")
    n_res, n_day, n_shows = _ticket_counts(scale)
    n_history = n_res - n_day - _LIVE_DONE - _LIVE_ACTIVE - _STALE
    used = [0] * n_shows
    rid = 0

    def make(created: datetime, outcome: str, *, extended: bool = False, order: str | None = None,
             race_lost: bool = False, completes_in: float = 0.0) -> _Reservation:
        nonlocal rid
        rid += 1
        show = rng.randrange(n_shows)
        r = rng.random()
        seats = 1 if r < 0.3 else 2 if r < 0.75 else 3 if r < 0.9 else 4
        first = used[show]
        used[show] += seats
        expires = created + timedelta(seconds=900 if extended else 600)
        ended = order_created = None
        if outcome == "completed":
            ended = created + timedelta(seconds=completes_in or rng.uniform(90, 540))
            order_created = ended - timedelta(seconds=rng.uniform(20, 80))
        elif outcome == "expired":
            ended = expires + timedelta(seconds=rng.uniform(1, 60))
            if order:
                order_created = created + timedelta(seconds=rng.uniform(120, 500))
        elif order:
            order_created = min(created + timedelta(seconds=60), now - timedelta(seconds=5))
        return _Reservation(rid, show, first, seats, f"sess_{rng.getrandbits(40):010x}", created, expires,
                            outcome, ended, extended, order, order_created, race_lost)

    for age in _ages(rng, n_history, DAY + 60, HISTORY, growth=1.5):
        created = now - timedelta(seconds=age)
        completed = rng.random() < 0.58
        order = ("refunded" if rng.random() < 0.01 else "paid") if completed else \
            "failed" if rng.random() < 0.03 else None
        yield make(created, "completed" if completed else "expired", extended=rng.random() < 0.08, order=order,
                   race_lost=rng.random() < 0.02)
    # The last 24 h (up to 45 min ago): 11/20 completed, 1/20 expired after a failed payment, 8/20
    # expired unpaid -> 1 failed order per 12 (8.3%).
    for j, age in enumerate(_ages(rng, n_day, 45 * 60, DAY)):
        k = j % 20
        yield make(now - timedelta(seconds=age), "completed" if k < 11 else "expired", extended=j % 10 == 3,
                   order="paid" if k < 11 else "failed" if k == 11 else None, race_lost=j % 50 == 17)
    for age in _ages(rng, _LIVE_DONE, 15 * 60, 44 * 60):
        yield make(now - timedelta(seconds=age), "completed", order="paid", completes_in=rng.uniform(180, 480))
    for age in _ages(rng, _STALE, 120, 24 * 60):
        yield make(now - timedelta(seconds=age + 600), "stale")
    for j, age in enumerate(_ages(rng, _LIVE_ACTIVE, 20, 540)):
        yield make(now - timedelta(seconds=age), "active", order="pending" if j % 2 == 0 else None)


@dataclass(frozen=True)
class _TicketLayout:
    reservations: int
    shows: int
    seats_per_show: int
    reservation_seats: int
    audit: int
    orders: int
    tickets: int

    def seat_id(self, show: int, seat: int) -> int:
        return show * self.seats_per_show + seat + 1


def _ticket_layout(scale: int, now: datetime, rng_seed: int) -> _TicketLayout:
    n_res, _, n_shows = _ticket_counts(scale)
    used = [0] * n_shows
    seats = audit = orders = tickets = 0
    for r in _reservations(scale, now, rng_seed):
        used[r.show] = r.first_seat + r.seats
        seats += r.seats
        audit += 1 + r.race_lost + r.extended + (r.ended is not None)
        orders += r.order is not None
        tickets += r.seats if r.order == "paid" else 0
    per_show = math.ceil(max(used) * 1.15 / SEATS_PER_ROW + 1) * SEATS_PER_ROW
    return _TicketLayout(n_res, n_shows, per_show, seats, audit + 1, orders, tickets)


def _seat_label(seat: int) -> tuple[str, str, int, int]:
    row = seat // SEATS_PER_ROW
    section, price = _SECTIONS[min(row // 10, len(_SECTIONS) - 1)]
    return section, f"R{row + 1}", seat % SEATS_PER_ROW + 1, price


def _shows(layout: _TicketLayout, now: datetime) -> Iterator[Row]:
    for s in range(layout.shows):
        title = f"{_TITLES[s % len(_TITLES)]} #{s // len(_TITLES) + 1}"
        starts = now + timedelta(days=round(-100 + 160 * s / layout.shows), hours=19.5)
        yield (s + 1, title, _VENUES[s % len(_VENUES)], starts, now - timedelta(days=121))


_SEAT_STATUS = {"completed": "sold", "active": "reserved", "stale": "reserved", "expired": "available"}


def _show_seats(scale: int, now: datetime, rng_seed: int, layout: _TicketLayout) -> Iterator[Row]:
    used = [0] * layout.shows
    for r in _reservations(scale, now, rng_seed):
        used[r.show] = r.first_seat + r.seats
        status = _SEAT_STATUS[r.outcome]
        for seat in range(r.first_seat, r.first_seat + r.seats):
            yield (layout.seat_id(r.show, seat), r.show + 1, *_seat_label(seat), status, r.ended or r.created)
    opened = now - timedelta(days=121)
    for show in range(layout.shows):
        for seat in range(used[show], layout.seats_per_show):
            yield (layout.seat_id(show, seat), show + 1, *_seat_label(seat), "available", opened)


def _seat_reservations(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    for r in _reservations(scale, now, rng_seed):
        yield (r.id, r.show + 1, r.session_id, r.outcome in ("active", "stale"), r.expires,
               r.ended if r.outcome == "completed" else None, r.created, r.ended or r.created)


def _reservation_seats(scale: int, now: datetime, rng_seed: int, layout: _TicketLayout) -> Iterator[Row]:
    for r in _reservations(scale, now, rng_seed):
        released = r.ended if r.outcome == "expired" else None
        for seat in range(r.first_seat, r.first_seat + r.seats):
            yield (r.id, layout.seat_id(r.show, seat), r.created, released)


def _audit_log(scale: int, now: datetime, rng_seed: int, layout: _TicketLayout) -> Iterator[Row]:
    aid = 0
    double_booked: list[int] = []
    for r in _reservations(scale, now, rng_seed):
        seats = [layout.seat_id(r.show, s) for s in range(r.first_seat, r.first_seat + r.seats)]
        events: list[tuple] = []
        if r.race_lost:
            events.append((None, "failed", _RACE_ERROR, r.created - timedelta(seconds=3)))
        events.append((r.id, "created", None, r.created))
        if r.extended:
            events.append((r.id, "extended", None, r.created + timedelta(seconds=480)))
        if r.ended:
            events.append((r.id, r.outcome, None, r.ended))
        for reservation_id, event, error, at in events:
            aid += 1
            yield (aid, reservation_id, r.show + 1, r.session_id, event, seats, error, at)
        if r.outcome == "active" and not double_booked:
            double_booked = [r.show + 1, *seats]
    aid += 1
    yield (aid, None, double_booked[0], "sess_00doublebk", "failed", double_booked[1:], DOUBLE_BOOKING_ERROR,
           now - timedelta(minutes=2))


def _ticket_orders(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    oid = 0
    for r in _reservations(scale, now, rng_seed):
        if r.order is None:
            continue
        oid += 1
        total = sum(_seat_label(s)[3] for s in range(r.first_seat, r.first_seat + r.seats))
        failure = _PAYMENT_FAILURES[r.id % 3] if r.order == "failed" else None
        updated = r.ended if r.order in ("paid", "refunded") else r.order_created + timedelta(seconds=4)
        yield (oid, r.id, r.show + 1, f"buyer{r.id}@example.com", r.order, total, f"pi_t{r.id:010d}", failure,
               r.order_created, updated)


def _tickets(scale: int, now: datetime, rng_seed: int, layout: _TicketLayout) -> Iterator[Row]:
    oid = tid = 0
    for r in _reservations(scale, now, rng_seed):
        if r.order is None:
            continue
        oid += 1
        if r.order != "paid":
            continue
        for seat in range(r.first_seat, r.first_seat + r.seats):
            tid += 1
            yield (tid, oid, r.show + 1, layout.seat_id(r.show, seat), f"TKT-{tid:010d}", r.ended)


_CLEANUP_COLUMNS = ("start_time", "end_time", "status", "expired_count", "error_message")


def _cleanup_runs(now: datetime, rng_seed: int) -> list[Row]:
    """Every 5 min for a day, until the run 25 min ago failed on a statement timeout; none since."""
    rng = random.Random(f"{rng_seed}:cleanup")
    rows = []
    for minutes in range(24 * 60, 25, -5):
        start = now - timedelta(minutes=minutes, seconds=-rng.uniform(0, 2))
        rows.append((start, start + timedelta(seconds=rng.uniform(0.04, 0.9)), "succeeded", rng.randrange(0, 6), None))
    start = now - timedelta(minutes=25)
    rows.append((start, start + timedelta(seconds=32.4), "failed", 0, "canceling statement due to statement timeout"))
    return rows


# --------------------------------------------------------------------------------------------
# seed()
# --------------------------------------------------------------------------------------------

def seed(engine: Engine, scale: int, *, now: datetime | None = None, batch_size: int = 50_000,
         progress: Progress | None = None, rng_seed: int = 42) -> dict[str, int]:
    """Fill the (initialised, empty) sample-app tables: `scale` registrations and proportional data
    around them, with the problems of planted_problems() anchored at `now` (default: the database's
    clock; a naive datetime is taken as UTC). `progress(table, rows_done, rows_total)` is called after
    every batch. Returns the rows written per table."""
    if scale < MIN_SCALE:
        raise ValueError(f"scale must be at least {MIN_SCALE} (got {scale})")
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    raw = engine.raw_connection()
    try:
        conn: psycopg.Connection = raw.driver_connection
        conn.rollback()
        if conn.execute("SELECT EXISTS (SELECT 1 FROM registrations)").fetchone()[0]:
            raise ValueError("seed() expects empty sample-app tables: run it on a freshly initialised database")
        if now is None:
            now = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        elif now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        now = now.astimezone(UTC)
        conn.rollback()
        return _write_all(conn, scale, now, rng_seed, batch_size, progress)
    finally:
        raw.close()


def _write_all(conn: psycopg.Connection, scale: int, now: datetime, seed_: int, batch_size: int,
               progress: Progress | None) -> dict[str, int]:
    written: dict[str, int] = {}

    def put(table: str, columns: Iterable[str], rows: Iterable[Row], total: int | None = None) -> None:
        total = len(rows) if isinstance(rows, list) else total
        written[table] = copy_rows(conn, table, columns, rows, total=total, batch_size=batch_size, progress=progress)

    confirmed = 0

    def counting(rows: Iterator[Row]) -> Iterator[Row]:
        nonlocal confirmed
        for row in rows:
            confirmed += row[10] is not None
            yield row

    put("registrations", REGISTRATION_COLUMNS, counting(iter_registration_rows(scale, now, seed_)), scale)
    put("confirmation_emails", _EMAIL_COLUMNS, _confirmation_emails(scale, now, seed_), confirmed)
    per_hook, wh_history = _webhook_sizes(scale)
    put("webhook_logs", _WEBHOOK_COLUMNS, _webhook_logs(scale, now, seed_), wh_history + per_hook * 6)
    put("maintenance_log", ("task", "started_at", "completed_at", "rows_affected", "details"), _maintenance_log(now))

    put("sms_delivery_log", _SMS_COLUMNS, _sms_delivery_log(scale, now, seed_), sum(_sms_sizes(scale)))
    put("error_logs", _ERROR_COLUMNS, _error_logs(scale, now, seed_), _clamp(scale // 20, 100, 50_000))
    put("performance_metrics", _PERF_COLUMNS, _performance_metrics(scale, now, seed_), sum(_perf_sizes(scale)))
    put("user_sessions", _SESSION_COLUMNS, _user_sessions(scale, now, seed_), _clamp(scale // 10, 50, 50_000))
    put("rate_limit_logs", _RATE_COLUMNS, _rate_limit_logs(scale, now, seed_), _clamp(scale // 5, 100, 100_000))
    put("system_alerts", _ALERT_COLUMNS, _system_alerts(now, seed_))
    put("backup_log", _BACKUP_COLUMNS, _backup_log(now))

    put("whatsapp_notifications", _WA_COLUMNS, _whatsapp_notifications(scale, now, seed_), sum(_whatsapp_sizes(scale)))
    put("whatsapp_error_logs", _WA_ERROR_COLUMNS, _whatsapp_error_logs(scale, now, seed_),
        _clamp(scale // 100, 40, 10_000) + len(_WA_RECENT_TYPES))
    put("whatsapp_sessions", _WA_SESSION_COLUMNS, _whatsapp_sessions(now))

    layout = _ticket_layout(scale, now, seed_)
    put("shows", ("id", "title", "venue", "starts_at", "created_at"), _shows(layout, now), layout.shows)
    put("show_seats", ("id", "show_id", "section", "row_label", "seat_number", "price_in_cents", "status", "updated_at"),
        _show_seats(scale, now, seed_, layout), layout.shows * layout.seats_per_show)
    put("seat_reservations", ("id", "show_id", "session_id", "is_active", "expires_at", "completed_at", "created_at",
                              "updated_at"), _seat_reservations(scale, now, seed_), layout.reservations)
    put("reservation_seats", ("reservation_id", "seat_id", "created_at", "released_at"),
        _reservation_seats(scale, now, seed_, layout), layout.reservation_seats)
    put("seat_reservation_audit_log", ("id", "reservation_id", "show_id", "session_id", "event_type", "seat_ids",
                                       "error_message", "created_at"), _audit_log(scale, now, seed_, layout), layout.audit)
    put("ticket_orders", ("id", "reservation_id", "show_id", "customer_email", "status", "total_amount_in_cents",
                          "payment_intent_id", "failure_reason", "created_at", "updated_at"),
        _ticket_orders(scale, now, seed_), layout.orders)
    put("tickets", ("id", "order_id", "show_id", "seat_id", "ticket_code", "created_at"),
        _tickets(scale, now, seed_, layout), layout.tickets)
    put("reservation_cleanup_runs", _CLEANUP_COLUMNS, _cleanup_runs(now, seed_))

    _finish(conn, written)
    return written


def _finish(conn: psycopg.Connection, tables: Iterable[str]) -> None:
    """Move each id sequence past the explicit ids, then ANALYZE what was loaded."""
    for table in tables:
        if table == "reservation_seats":
            continue
        conn.execute(sql.SQL(
            "SELECT setval(pg_get_serial_sequence({name}, 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
        ).format(name=sql.Literal(table), table=sql.Identifier(table)))
    conn.commit()
    for table in tables:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    conn.commit()
