"""Seed 003 (WhatsApp): whatsapp_notifications, whatsapp_error_logs, whatsapp_sessions."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import chain

from ops.sample_app.seed.common import (
    DAY,
    HISTORY,
    HOUR,
    STALE_WHATSAPP_SESSION,
    Put,
    Row,
    ages,
    clamp,
    marked,
)

SCHEMA = ("003_whatsapp.sql",)  # the schema files its database needs
TABLES = ("whatsapp_notifications", "whatsapp_error_logs", "whatsapp_sessions")  # what write() fills

WA_COLUMNS = ("id", "order_id", "phone_number", "message_type", "status", "error_message", "attempts",
               "created_at", "sent_at")
_WA_TYPES = ("order_confirmation", "ticket_delivery", "event_reminder")
_WA_SEND_ERRORS = ("Connection Closed", "Timed Out", "Phone number is not on WhatsApp", "Rate limit exceeded")


def whatsapp_sizes(scale: int) -> tuple[int, int, int]:
    day = clamp(scale // 500, 60, 3000)
    hour = max(20, day // 8)
    return hour, day - hour, clamp(scale // 5, 100, 100_000) - day


def whatsapp_notifications(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:whatsapp")
    n_hour, n_day, n_history = whatsapp_sizes(scale)
    wid = 0

    def row(age: float, status: str) -> Row:
        created = now - timedelta(seconds=age)
        failed = status == "failed"
        sent = created + timedelta(seconds=rng.uniform(1, 12)) if status == "sent" else None
        return (wid, rng.randrange(1, 10**6), f"+55119{rng.randrange(10**7, 10**8)}", _WA_TYPES[rng.randrange(3)],
                status, _WA_SEND_ERRORS[rng.randrange(4)] if failed else None, 3 if failed else 1, created, sent)

    for age in ages(rng, n_history, DAY + 60, HISTORY, growth=1.5):
        wid += 1
        yield row(age, "failed" if rng.random() < 0.025 else "sent")
    # The last 24 h and the last hour: 20% failed each; the two newest still pending.
    for j, age in enumerate(ages(rng, n_day, HOUR + 30, DAY)):
        wid += 1
        yield row(age, "failed" if marked(j, 0.2) else "sent")
    for j, age in enumerate(ages(rng, n_hour, 5, HOUR - 30)):
        wid += 1
        yield row(age, "pending" if j >= n_hour - 2 else "failed" if marked(j, 0.2) else "sent")


WA_ERROR_COLUMNS = ("id", "notification_id", "error_type", "error_message", "phone_number", "context", "created_at")
_WA_ERROR_TYPES = (("connection_closed", "Connection Closed: stream errored out"),
                   ("send_timeout", "Timed Out waiting for message ack"),
                   ("rate_limited", "Rate limit exceeded (429)"),
                   ("session_expired", "Session expired: scan the QR code again"),
                   ("invalid_phone_number", "Phone number is not on WhatsApp"),
                   ("media_upload_failed", "Media upload failed: 413 Payload Too Large"))
WA_RECENT_TYPES = (0,) * 15 + (1,) * 10 + (2,) * 6 + (3,) * 4  # 35 in the last hour


def whatsapp_error_logs(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:whatsapp-errors")
    n_history = clamp(scale // 100, 40, 10_000)
    recent = list(WA_RECENT_TYPES)
    rng.shuffle(recent)
    history = ((age, rng.choice((0, 1, 2, 4, 4, 5))) for age in ages(rng, n_history, HOUR + 60, HISTORY, growth=1.0))
    last_hour = zip(ages(rng, len(recent), 20, HOUR - 20), recent, strict=True)
    for i, (age, kind) in enumerate(chain(history, last_hour), start=1):
        error_type, message = _WA_ERROR_TYPES[kind]
        yield (i, rng.randrange(1, 10**6) if kind != 0 else None, error_type, message,
               f"+55119{rng.randrange(10**7, 10**8)}", f'{{"attempt": {1 + i % 3}}}', now - timedelta(seconds=age))


WA_SESSION_COLUMNS = ("session_id", "phone_number", "is_active", "connection_state", "last_connected_at",
                       "created_at", "updated_at")


def whatsapp_sessions(now: datetime) -> list[Row]:
    ago = lambda **kw: now - timedelta(**kw)  # noqa: E731
    return [("wa-legacy-00", "+551140040000", False, "disconnected", ago(days=41), ago(days=200), ago(days=40)),
            ("wa-main-01", "+551140040001", True, "connected", ago(hours=3), ago(days=90), ago(minutes=2)),
            (STALE_WHATSAPP_SESSION, "+551140040002", True, "connected", ago(hours=31), ago(days=60), ago(hours=30))]


def write(put: Put, scale: int, now: datetime, seed_: int) -> None:
    """Write this system's tables through `put` (the COPY of seed())."""
    put("whatsapp_notifications", WA_COLUMNS, whatsapp_notifications(scale, now, seed_), sum(whatsapp_sizes(scale)))
    put("whatsapp_error_logs", WA_ERROR_COLUMNS, whatsapp_error_logs(scale, now, seed_),
        clamp(scale // 100, 40, 10_000) + len(WA_RECENT_TYPES))
    put("whatsapp_sessions", WA_SESSION_COLUMNS, whatsapp_sessions(now))
