"""Seed 001 (ACE Engage): sms_delivery_log, error_logs, performance_metrics, user_sessions,
rate_limit_logs, system_alerts, backup_log."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from ops.sample_app.seed.common import DAY, FAILING_WEBHOOK, HISTORY, HOUR, Put, Row, ages, clamp, marked

# the schema files its database needs: 000 too, since its email log is confirmation_emails (the pack
# requires it; a database of ACE Engage alone has it empty)
SCHEMA = ("000_confirmations.sql", "001_ace_engage.sql")
TABLES = ("sms_delivery_log", "error_logs", "performance_metrics", "user_sessions", "rate_limit_logs",
          "system_alerts", "backup_log")  # what write() fills

SMS_COLUMNS = ("id", "recipient_phone", "message_type", "delivery_status", "provider", "provider_message_id",
                "error_code", "error_message", "created_at", "delivered_at")
_SMS_ERRORS = (("30003", "Unreachable destination handset"), ("30005", "Unknown destination handset"),
               ("30006", "Landline or unreachable carrier"), ("30007", "Message filtered by carrier"))
_SMS_TYPES = ("event_reminder", "ticket_link", "verification_code", "campaign")


def sms_sizes(scale: int) -> tuple[int, int]:
    recent = clamp(scale // 2000, 80, 500)
    return recent, clamp(scale // 4, 300, 250_000) - recent


def sms_delivery_log(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:sms")
    n_recent, n_history = sms_sizes(scale)

    def row(i: int, age: float, status: str) -> Row:
        created = now - timedelta(seconds=age)
        err = _SMS_ERRORS[rng.randrange(len(_SMS_ERRORS))] if status in ("failed", "undelivered") else (None, None)
        delivered = created + timedelta(seconds=rng.uniform(2, 20)) if status == "delivered" else None
        return (i, f"+1{rng.randrange(2_000_000_000, 9_999_999_999)}", _SMS_TYPES[rng.randrange(len(_SMS_TYPES))],
                status, "twilio", f"SM{rng.getrandbits(64):016x}", err[0], err[1], created, delivered)

    for i, age in enumerate(ages(rng, n_history, HOUR + 60, HISTORY, growth=1.5), start=1):
        r = rng.random()
        yield row(i, age, "delivered" if r < 0.93 else "sent" if r < 0.96 else "failed" if r < 0.99 else "undelivered")
    for j, age in enumerate(ages(rng, n_recent, 30, HOUR - 30)):
        status = "failed" if marked(j, 0.18) else "sent" if age < 60 else "delivered"
        yield row(n_history + j + 1, age, status)


ERROR_COLUMNS = ("id", "severity", "category", "message", "function_name", "error_details", "occurred_at")
_ERRORS = (("api", "send-confirmation-email", "Resend API responded 429"),
           ("database", "generate-confirmation", "canceling statement due to statement timeout"),
           ("api", "registration-payment-webhook", "Stripe signature verification failed"),
           ("auth", "admin-login", "Invalid refresh token"),
           ("sms", "send-sms-reminder", "Twilio error 30003: unreachable handset"),
           ("api", "provision-gift-card", "Provider returned 503"))
_SEVERITIES = ("low", "medium", "high", "critical")
_RECENT_ERRORS = ("critical", "high", "low", "high", "medium", "critical", "high", "low", "high", "medium",
                  "high", "low", "critical", "medium", "high", "low", "medium")  # 9 high/critical of 17


def error_logs(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:errors")
    n_history = clamp(scale // 20, 100, 50_000) - len(_RECENT_ERRORS)

    def row(i: int, age: float, severity: str, err: tuple[str, str, str]) -> Row:
        details = f'{{"duration_ms": {rng.randrange(5, 30_000)}, "request_id": "req_{rng.getrandbits(40):010x}"}}'
        return (i, severity, err[0], err[2], err[1], details, now - timedelta(seconds=age))

    for i, age in enumerate(ages(rng, n_history, HOUR + 60, HISTORY, growth=1.5), start=1):
        r = rng.random()
        severity = "low" if r < 0.6 else "medium" if r < 0.955 else "high" if r < 0.995 else "critical"
        yield row(i, age, severity, _ERRORS[rng.randrange(len(_ERRORS))])
    for j, age in enumerate(ages(rng, len(_RECENT_ERRORS), 60, HOUR - 60)):
        severity = _RECENT_ERRORS[j]
        yield row(n_history + j + 1, age, severity, _ERRORS[1] if severity in ("high", "critical") else _ERRORS[j % 6])


PERF_COLUMNS = ("id", "metric_type", "metric_name", "duration_ms", "metadata", "client_id", "recorded_at")
_EDGE_FUNCTIONS = (FAILING_WEBHOOK, "send-confirmation-email", "registration-payment-webhook", "check-alert-triggers")
_PAGES = ("dashboard_load", "registrations_list", "event_detail", "system_health")


def perf_sizes(scale: int) -> tuple[int, int, int]:
    edge = clamp(scale // 5000, 40, 400)
    pages = edge // 2
    return edge, pages, clamp(scale // 2, 200, 250_000) - edge - pages


def performance_metrics(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:perf")
    n_edge, n_pages, n_history = perf_sizes(scale)
    pid = 0

    def edge(name: str, duration: int, age: float) -> Row:
        meta = '{"region": "us-east-1", "cold_start": %s}' % ("true" if rng.random() < 0.05 else "false")
        return (pid, "edge_function", name, duration, meta, None, now - timedelta(seconds=age))

    def page(age: float) -> Row:
        name = _PAGES[rng.randrange(len(_PAGES))]
        return (pid, "page_load", name, int(rng.lognormvariate(7.1, 0.4)), f'{{"route": "/{name}"}}',
                rng.randrange(1, 201), now - timedelta(seconds=age))

    for age in ages(rng, n_history, HOUR + 60, HISTORY, growth=1.5):
        pid += 1
        r = rng.random()
        if r < 0.5:
            yield edge(_EDGE_FUNCTIONS[rng.randrange(4)], min(int(rng.lognormvariate(5.85, 0.5)), 2500), age)
        elif r < 0.85:
            yield page(age)
        else:
            yield (pid, "api_call", "rest:registrations", int(rng.lognormvariate(5.0, 0.4)), None, None,
                   now - timedelta(seconds=age))
    for j, age in enumerate(ages(rng, n_edge, 30, HOUR - 30)):
        pid += 1
        if marked(j, 0.5):
            yield edge(FAILING_WEBHOOK, rng.randrange(6000, 14_000), age)
        else:
            yield edge(_EDGE_FUNCTIONS[1 + rng.randrange(3)], min(int(rng.lognormvariate(5.85, 0.5)), 2500), age)
    for age in ages(rng, n_pages, 30, HOUR - 30):
        pid += 1
        yield page(age)


SESSION_COLUMNS = ("id", "user_id", "client_id", "ip_address", "user_agent", "created_at", "last_active_at",
                    "expires_at")
_AGENTS = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
           "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5)")


def user_sessions(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:sessions")
    n_live = clamp(scale // 5000, 10, 300)
    n_history = clamp(scale // 10, 50, 50_000) - n_live
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


RATE_COLUMNS = ("id", "identifier", "endpoint", "request_count", "window_start", "created_at")
_ENDPOINTS = ("/api/registrations", "/api/auth/login", "/api/events", "/functions/v1/send-alert-notification")


def rate_limit_logs(scale: int, now: datetime, rng_seed: int) -> Iterator[Row]:
    rng = random.Random(f"{rng_seed}:ratelimit")
    for i, age in enumerate(ages(rng, clamp(scale // 5, 100, 100_000), 5, 14 * DAY), start=1):
        created = now - timedelta(seconds=age)
        who = f"ip:203.0.113.{rng.randrange(1, 255)}" if rng.random() < 0.6 else f"user:{rng.randrange(1, 5000)}"
        yield (i, who, _ENDPOINTS[rng.randrange(len(_ENDPOINTS))], rng.randrange(1, 120),
               created.replace(second=0, microsecond=0), created)


ALERT_COLUMNS = ("alert_type", "title", "message", "severity", "metadata", "dismissed", "is_read", "created_at",
                  "resolved_at")
_ALERT_KINDS = (("high_error_rate", "High Error Rate Detected", "Detected %d errors in the last hour", "critical"),
                ("performance_degradation", "Performance Degradation Detected", "Average response time: %dms "
                 "(threshold: 3000ms)", "warning"),
                ("high_sms_failure_rate", "High SMS Failure Rate", "%d%% of SMS messages failed", "high"))


def system_alerts(now: datetime, rng_seed: int) -> list[Row]:
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


BACKUP_COLUMNS = ("backup_type", "status", "started_at", "completed_at", "size_bytes", "location", "error_message")


def backup_log(now: datetime) -> list[Row]:
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


def write(put: Put, scale: int, now: datetime, seed_: int) -> None:
    """Write this system's tables through `put` (the COPY of seed())."""
    put("sms_delivery_log", SMS_COLUMNS, sms_delivery_log(scale, now, seed_), sum(sms_sizes(scale)))
    put("error_logs", ERROR_COLUMNS, error_logs(scale, now, seed_), clamp(scale // 20, 100, 50_000))
    put("performance_metrics", PERF_COLUMNS, performance_metrics(scale, now, seed_), sum(perf_sizes(scale)))
    put("user_sessions", SESSION_COLUMNS, user_sessions(scale, now, seed_), clamp(scale // 10, 50, 50_000))
    put("rate_limit_logs", RATE_COLUMNS, rate_limit_logs(scale, now, seed_), clamp(scale // 5, 100, 100_000))
    put("system_alerts", ALERT_COLUMNS, system_alerts(now, seed_))
    put("backup_log", BACKUP_COLUMNS, backup_log(now))
