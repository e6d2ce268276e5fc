"""Is the fleet well: every dependency probed, each on its own (a failure never hides the next one),
with its state and latency. `opsfleet health` prints them; `opsfleet serve` answers /health in seed
003's shape (status, timestamp, services) for load balancers and uptime checkers.

state: ok | warn (works, but look: retrying notifications, a job that never ran) | fail | off (not
configured and not needed). The fleet is healthy when nothing fails.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.beat import BEAT_TICK_KEY
from worker.channels.registry import configured, webhook_headers
from worker.config import FleetConfig
from worker.fleet import redisconn
from worker.fleet.db import checks_role_warnings, create, normalize_url, safe_url
from worker.fleet.logs import mask_text
from worker.fleet.names import QUEUES
from worker.fleet.settings import Settings
from worker.startup import check_broker, check_redis

BEAT_LOCK_KEY = "opsfleet:redbeat::lock"
BEAT_STALE_S = 60
OUTBOX_STUCK = timedelta(minutes=5)


@dataclass
class Probe:
    name: str
    state: str  # ok | warn | fail | off
    detail: str = ""
    latency_ms: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timed(name: str, fn: Callable[[], Probe | tuple[str, str] | tuple[str, str, dict]]) -> Probe:
    started = time.perf_counter()
    try:
        got = fn()
    except Exception as exc:  # a probe reports, it never raises: the next one must still run
        text = mask_text(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip()
                         else type(exc).__name__)
        return Probe(name, "fail", text, round((time.perf_counter() - started) * 1000, 1))
    probe = got if isinstance(got, Probe) else Probe(name, *got[:2], data=got[2] if len(got) > 2 else {})
    probe.latency_ms = round((time.perf_counter() - started) * 1000, 1)
    return probe


def _database(url: str, what: str) -> tuple[str, str]:
    engine = sa.create_engine(normalize_url(url), poolclass=sa.pool.NullPool,
                              connect_args={"connect_timeout": 3, "application_name": "opsfleet-health"})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return "ok", f"{what} {safe_url(url)}"
    finally:
        engine.dispose()


def _checks_role(url: str) -> tuple[str, str]:
    """The role the checks run as: a superuser or one that may write the application is a warning."""
    engine = create(url, pool_size=1)
    try:
        found = checks_role_warnings(engine)
    finally:
        engine.dispose()
    return ("warn", found[0]) if found else ("ok", "read-only: cannot write the application's tables")


def _broker(settings: Settings) -> tuple[str, str]:
    props = check_broker(settings)
    product = props.get("product", b"")
    product = product.decode() if isinstance(product, bytes) else str(product or "")
    version = props.get("version", b"")
    version = version.decode() if isinstance(version, bytes) else str(version or "")
    return "ok", mask_text(settings.broker_url()) + (f" ({product} {version})" if product else "")


def _redis(settings: Settings) -> tuple[str, str]:
    check_redis(settings)
    return "ok", mask_text(settings.redis())


def _workers(app: Any, timeout: float) -> list[Probe]:
    """Who consumes each queue (`celery inspect active_queues`, by worker name): a queue no worker
    consumes is red: its tasks pile up."""
    started = time.perf_counter()
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as exc:  # noqa: BLE001 - the broker's own error, reported
        return [Probe("workers", "fail", f"cannot ask the workers: {str(exc).splitlines()[0] if str(exc) else exc}")]
    latency = round((time.perf_counter() - started) * 1000, 1)
    by_queue: dict[str, list[str]] = {q: [] for q in QUEUES}
    for worker, queues in replies.items():
        for q in queues or []:
            by_queue.setdefault(q.get("name"), []).append(worker)
    out = []
    for queue in QUEUES:
        names = sorted(by_queue.get(queue, []))
        out.append(Probe(f"queue {queue}", "ok" if names else "fail",
                         ", ".join(names) if names else f"no worker consumes the {queue} queue: its tasks wait",
                         latency, {"workers": names}))
    return out


def _beat(settings: Settings) -> tuple[str, str, dict]:
    client = redisconn.client(settings.redis(), socket_timeout=3)
    tick = client.get(BEAT_TICK_KEY)
    lock_ttl = client.pttl(BEAT_LOCK_KEY)
    data: dict[str, Any] = {"lock_held": lock_ttl is not None and lock_ttl > 0}
    if tick is None:
        return "fail", "no beat has ticked (is `celery -A worker beat` running?)", data
    last = json.loads(tick)
    age = time.time() - float(last["at"])
    data.update(host=last.get("host"), last_tick_age_s=round(age, 1))
    if age > BEAT_STALE_S:
        return "fail", f"the leading beat ({last.get('host')}) last ticked {age:.0f} s ago", data
    return "ok", f"leader {last.get('host')}, ticked {age:.0f} s ago", data


def channel_problems(kind: str, settings: Settings, spec: Any = None) -> list[str]:
    """What a channel of `kind` lacks to deliver (empty: configured)."""
    if kind == "email":
        missing = [v for v, ok in (("RESEND_API_KEY", settings.resend_api_key),
                                   ("ALERT_EMAIL_RECIPIENTS", (spec and spec.recipients) or settings.recipients))
                   if not ok]
        return [f"{', '.join(missing)} not set"] if missing else []
    if kind == "slack":
        if settings.slack_bot_token:
            return [] if (spec and spec.slack_channel) or settings.slack_channel else ["SLACK_CHANNEL not set"]
        return [] if settings.alert_slack_webhook_url else ["ALERT_SLACK_WEBHOOK_URL (or SLACK_BOT_TOKEN) not set"]
    if kind in ("pagerduty", "webhook"):
        value, var = configured(kind, settings, spec)
        missing = [] if value else [f"{var} not set"]
        if kind == "webhook":
            missing += [f"{spec.headers_env[h]} not set (header {h})" for h, v in webhook_headers(spec).items() if not v]
        return missing
    return []


def _http(url: str, headers: dict[str, str], timeout: float, method: str = "GET",
          data: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"User-Agent": "opsfleet-health", **headers}, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - configured provider URLs
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


def _probe_resend(settings: Settings, timeout: float) -> tuple[str, str]:
    """GET /domains: sends nothing. A sending-only key answers 401 restricted_api_key: the key is valid."""
    status, body = _http(settings.resend_api_url.rstrip("/") + "/domains",
                         {"Authorization": f"Bearer {settings.resend_api_key}"}, timeout)
    if status == 200 or (status == 401 and body.get("name") == "restricted_api_key"):
        return "ok", "Resend accepts the API key" + (" (sending only)" if status == 401 else "")
    return "fail", f"Resend answered {status} {body.get('name', '')}: {body.get('message', '')}".strip()


def _probe_slack(settings: Settings, timeout: float) -> tuple[str, str]:
    if not settings.slack_bot_token:
        return "ok", "configured (an incoming webhook has no call that sends nothing: not probed)"
    base = (settings.slack_api_url or "https://slack.com/api/").rstrip("/") + "/"
    status, body = _http(base + "auth.test", {"Authorization": f"Bearer {settings.slack_bot_token}",
                                              "Content-Type": "application/x-www-form-urlencoded"}, timeout,
                         method="POST", data=b"")
    if status == 200 and body.get("ok"):
        return "ok", f"Slack auth.test ok ({body.get('team', '')})"
    return "fail", f"Slack auth.test: {body.get('error') or status}"


def _channels(cfg: FleetConfig, settings: Settings, probe: bool, timeout: float,
              monitored: Engine | None) -> list[Probe]:
    out = []
    specs = cfg.routing.channels if cfg.routing else {}
    for name, spec in specs.items():
        if spec.kind == "digest":
            continue
        label = f"channel {name}"

        def one(name=name, spec=spec) -> tuple[str, str]:
            problems = channel_problems(spec.kind, settings, spec)
            if problems:
                return "fail", f"{spec.kind}: {'; '.join(problems)}: its notifications go dead"
            if spec.kind == "table":
                if monitored is None:
                    return "fail", "no monitored database"
                with monitored.connect() as conn:
                    ok = conn.execute(sa.text("SELECT to_regclass('system_alerts') IS NOT NULL")).scalar()
                return ("ok", "system_alerts in the monitored database") if ok else \
                    ("fail", "the monitored database has no system_alerts table")
            if probe and spec.kind == "email":
                return _probe_resend(settings, timeout)
            if probe and spec.kind == "slack":
                return _probe_slack(settings, timeout)
            if spec.kind in ("pagerduty", "webhook"):
                return "ok", f"{spec.kind} configured (not probed: every call of its API delivers something)"
            return "ok", f"{spec.kind} configured (not probed: --probe makes a call that sends nothing)"

        got = _timed(label, one)
        got.data["kind"] = spec.kind
        out.append(got)
    return out


def _fleet_state(fleet: Engine, cfg: FleetConfig, now: datetime) -> list[Probe]:
    def outbox() -> tuple[str, str, dict]:
        with fleet.connect() as conn:
            r = conn.execute(sa.text("""
                SELECT count(*) FILTER (WHERE status IN ('pending', 'retrying') AND next_attempt_at <= :stuck) AS stuck,
                       count(*) FILTER (WHERE status IN ('pending', 'retrying') AND next_attempt_at <= :now) AS due,
                       count(*) FILTER (WHERE status = 'retrying') AS retrying,
                       count(*) FILTER (WHERE status = 'dead' AND dead_at > :day) AS dead
                FROM fleet.notifications WHERE status IN ('pending', 'retrying', 'dead')"""),
                {"now": now, "stuck": now - OUTBOX_STUCK, "day": now - timedelta(hours=24)}).mappings().one()
        data = {k: int(v) for k, v in r.items()}
        if data["dead"] or data["stuck"]:
            return "fail", (f"{data['dead']} dead in 24 h, {data['stuck']} due for over 5 min (see `opsfleet alerts "
                            "list` and the notifications_dead check)"), data
        if data["retrying"] or data["due"]:
            return "warn", f"{data['due']} due, {data['retrying']} retrying", data
        return "ok", "nothing waiting", data

    def checks() -> tuple[str, str, dict]:
        with fleet.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT DISTINCT ON (check_name) check_name, status, error FROM fleet.check_runs "
                "ORDER BY check_name, started_at DESC")).all()
        errors = sorted(r.check_name for r in rows if r.status == "error" and r.check_name in cfg.checks)
        data = {"in_error": errors, "ran": len(rows)}
        if errors:
            return "fail", f"{len(errors)} in error: {', '.join(errors[:5])}{' ...' if len(errors) > 5 else ''}", data
        return ("ok", f"{len(rows)} ran, none in error", data) if rows else ("warn", "no check has run yet", data)

    def jobs() -> tuple[str, str, dict]:
        with fleet.connect() as conn:
            last = {r.job: r for r in conn.execute(sa.text(
                "SELECT DISTINCT ON (job) job, status, started_at FROM fleet.job_runs "
                "WHERE status <> 'dry_run' ORDER BY job, started_at DESC"))}
        stale, failed, never = [], [], []
        for job in (j for j in cfg.maintenance.values() if j.enabled):
            r = last.get(job.name)
            if r is None:
                never.append(job.name)
            elif r.status == "error":
                failed.append(job.name)
            elif now - r.started_at > 2 * job.schedule.period(now) + timedelta(minutes=5):
                stale.append(job.name)
        data = {"failed": failed, "stale": stale, "never_ran": never}
        if failed or stale:
            return "fail", "; ".join(p for p in (f"last run failed: {', '.join(failed)}" if failed else "",
                                                 f"not run for two periods: {', '.join(stale)}" if stale else "") if p), data
        if never:
            return "warn", f"never ran yet: {', '.join(never[:5])}{' ...' if len(never) > 5 else ''}", data
        return "ok", f"{len(last)} jobs ran on schedule", data

    return [_timed("outbox", outbox), _timed("checks", checks), _timed("maintenance jobs", jobs)]


GROUPS = ("database", "broker", "redis", "workers", "channels", "state")


def run_all(settings: Settings, cfg: FleetConfig, *, probe: bool = False, timeout: float = 3.0,
            workers: bool = True, app: Any = None, groups: set[str] | None = None) -> list[Probe]:
    """Every probe (or those of `groups`, see GROUPS), in order; each failure is reported and the next
    still runs."""
    want = set(GROUPS) if groups is None else set(groups)
    now = datetime.now(UTC)
    out: list[Probe] = []
    if "database" in want or {"channels", "state"} & want:
        out += [_timed("database", lambda: _database(settings.require_database_url(), "monitored")),
                _timed("fleet database", lambda: _database(settings.require_fleet_database_url(), "fleet"))]
        if "database" in want and out[0].state == "ok":
            out.append(_timed("checks role", lambda: _checks_role(settings.require_database_url())))
    if "broker" in want:
        out.append(_timed("broker", lambda: _broker(settings)))
    if "redis" in want:
        out.append(_timed("redis", lambda: _redis(settings)))
    if not {"workers", "channels", "state"} & want:
        return out
    workers = workers and "workers" in want
    if workers:
        if app is None:
            from worker.app import app
        out += _workers(app, timeout=min(timeout, 2.0))
        out.append(_timed("beat", lambda: _beat(settings)))
    monitored = fleet = None
    try:
        monitored = create(settings.require_database_url(), pool_size=1)
        fleet = create(settings.require_fleet_database_url(), pool_size=1)
    except Exception:  # noqa: BLE001, S110 - reported by the database probes above
        pass
    if "channels" in want:
        out += _channels(cfg, settings, probe, timeout, monitored if out[0].state == "ok" else None)
    if fleet is not None and out[1].state == "ok" and "state" in want:
        out += _fleet_state(fleet, cfg, now)
    for engine in (monitored, fleet):
        if engine is not None:
            engine.dispose()
    return out


def overall(probes: list[Probe]) -> str:
    if any(p.state == "fail" for p in probes):
        return "unhealthy"
    return "degraded" if any(p.state == "warn" for p in probes) else "healthy"


_SERVICE_STATE = {"ok": "operational", "warn": "degraded", "fail": "down", "off": "not_configured"}


def health_document(probes: list[Probe], settings: Settings) -> dict[str, Any]:
    """Seed 003's /api/health shape: status, timestamp, services, environment (booleans only)."""
    return {
        "status": overall(probes),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "services": {p.name: {"status": _SERVICE_STATE[p.state], "detail": p.detail, "latency_ms": p.latency_ms}
                     for p in probes},
        "environment": {"hasDatabaseUrl": bool(settings.database_url), "hasResendKey": bool(settings.resend_api_key),
                        "hasSlackWebhook": bool(settings.alert_slack_webhook_url),
                        "hasSlackBotToken": bool(settings.slack_bot_token), "hasRedisUrl": bool(settings.redis_url)},
    }
