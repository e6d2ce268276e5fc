"""Seed 000 (confirmation emails): registrations, confirmation_emails, webhook_logs, maintenance_log."""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from ops.sample_app.seed.common import (
    FAILING_WEBHOOK,
    HISTORY,
    HOUR,
    PRICES,
    WEBHOOK_WEIGHTS,
    WEBHOOKS,
    Put,
    Row,
    ages,
    clamp,
    marked,
    person,
)

SCHEMA = ("000_confirmations.sql",)  # the schema files its database needs
TABLES = ("registrations", "confirmation_emails", "webhook_logs", "maintenance_log")  # what write() fills

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
        recent = clamp(scale // 1500, 60, 2000)
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
        email, name = person(cid)
        return (rid, cid, 1 + rng.randrange(n_events), email, name, PRICES[rng.randrange(len(PRICES))],
                status, payment, f"pi_{rid:012d}", f"CNF-{rid:010d}" if generated else None, generated,
                email_status, created, updated)

    for age in ages(rng, plan.history, 65 * 60, HISTORY, growth=1.5):
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
    for j, age in enumerate(ages(rng, plan.recent, 20, 59 * 60)):
        rid += 1
        took = rng.uniform(6, 40) if j in slow else min(rng.lognormvariate(0.2, 0.45), 4.8)
        updated = now - timedelta(seconds=max(age, took + 5))
        generated = updated + timedelta(seconds=took)
        created = updated - timedelta(seconds=rng.uniform(20, 240))
        email_status = "pending" if generated > now - timedelta(seconds=20) else "failed" if j % 50 == 49 else "sent"
        yield row(created, updated, "completed", "completed", generated, email_status)

    for age in ages(rng, plan.backlog, 21 * 60, 59 * 60):
        rid += 1
        updated = now - timedelta(seconds=age)
        yield row(updated - timedelta(seconds=rng.uniform(20, 240)), updated, "completed", "completed", None, None)


EMAIL_COLUMNS = ("id", "registration_id", "recipient", "subject", "status", "provider_id", "error", "attempts",
                  "sent_at", "created_at")
_EMAIL_ERRORS = ("550 5.1.1 mailbox unavailable", "Resend API 429: rate limit exceeded",
                 "Resend API 500: internal server error", "422: invalid recipient address")


def confirmation_emails(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
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


WEBHOOK_COLUMNS = ("id", "webhook_name", "registration_id", "status_code", "duration_ms", "payload",
                    "error_message", "created_at")
_WEBHOOK_EVENTS = dict(zip(WEBHOOKS, ("payment_intent.succeeded", "registration.paid", "confirmation.generated",
                                      "email.delivered", "charge.succeeded"), strict=True))
_HTTP_ERRORS = {400: "400 Bad Request: invalid signature", 401: "401 Unauthorized", 429: "429 Too Many Requests",
                500: "500 Internal Server Error", 502: "502 Bad Gateway", 504: "504 Gateway Timeout"}
_FAILING_ERRORS = ((500, "500: could not obtain a database connection within 5000 ms"),
                   (504, "504: function timed out after 30 s"), (502, "502 Bad Gateway"))


def webhook_sizes(scale: int) -> tuple[int, int]:
    per_hook = clamp(scale // 4000, 30, 500)
    recent = per_hook * (len(WEBHOOKS) + 1)
    return per_hook, 2 * scale - recent


def webhook_logs(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:webhooks")
    per_hook, n_history = webhook_sizes(scale)
    reg = _RegistrationPlan.for_scale(scale)
    cum = [sum(WEBHOOK_WEIGHTS[: i + 1]) for i in range(len(WEBHOOKS))]
    codes = tuple(_HTTP_ERRORS)
    wid = 0
    for i, age in enumerate(ages(rng, n_history, HOUR + 60, HISTORY, growth=1.5)):
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
        for j, age in enumerate(ages(rng, n, 5, HOUR - 10)):
            attempt = 1
            if failing and marked(j, 0.45):
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


def maintenance_log(now: datetime) -> list[Row]:
    """Monthly maintenance ran 95 and 65 days ago (nothing was 90 days old yet), not since."""
    details = '{"archived_webhook_logs": 0, "vacuumed": ["registrations", "webhook_logs", "confirmation_emails"]}'
    return [("monthly_maintenance", now - timedelta(days=d, minutes=7), now - timedelta(days=d), 0, details)
            for d in (95, 65)]


def write(put: Put, scale: int, now: datetime, seed_: int) -> None:
    """Write this system's tables through `put` (the COPY of seed())."""
    confirmed = 0

    def counting(rows: Iterator[Row]) -> Iterator[Row]:
        nonlocal confirmed
        for row in rows:
            confirmed += row[10] is not None
            yield row

    put("registrations", REGISTRATION_COLUMNS, counting(iter_registration_rows(scale, now, seed_)), scale)
    put("confirmation_emails", EMAIL_COLUMNS, confirmation_emails(scale, now, seed_), confirmed)
    per_hook, wh_history = webhook_sizes(scale)
    put("webhook_logs", WEBHOOK_COLUMNS, webhook_logs(scale, now, seed_), wh_history + per_hook * 6)
    put("maintenance_log", ("task", "started_at", "completed_at", "rows_affected", "details"), maintenance_log(now))
