"""Is the fleet well: every dependency probed, each on its own (a failure never hides the next one),
with its state and latency. `opsfleet health` prints them; `opsfleet serve` answers /health in seed
003's shape (status, timestamp, services) for load balancers and uptime checkers.

state: ok | warn (works, but look: retrying notifications, a job that never ran in two of its periods
since beat scheduled it) | fail | off (not configured and not needed). The fleet is healthy when nothing fails.

Each target (config/targets.yaml, or DATABASE_URL as `default`) is probed too ("target NAME": a
connection with a short timeout, and its state from the fleet's: up or down and why, its last check
run's age). A target down is the target's alert (its database_down, its checks in error), not the
fleet's failure: its probe is `warn` at worst, so it never makes the fleet unhealthy. Without
targets.yaml, DATABASE_URL is still the `database` probe too, which fails as it always did (maintenance,
backlogs and the checks role read it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.channels import registry
from worker.config import FleetConfig
from worker.fleet import redisconn
from worker.fleet.db import NO_PREPARED, checks_role_warnings, create, normalize_url, safe_url
from worker.fleet.logs import mask_text
from worker.fleet.names import BEAT_TICK_KEY, QUEUES
from worker.fleet.settings import Settings
from worker.fleet.timeutil import human_duration
from worker.startup import check_broker, check_redis
from worker.watch import targets as target_state

BEAT_LOCK_KEY = "opsfleet:redbeat::lock"
BEAT_STALE_S = 60
OUTBOX_STUCK = timedelta(minutes=5)
TARGET_CONNECT_S = 2  # libpq's shortest connect_timeout; probed in parallel, TARGET_PROBES at a time
TARGET_PROBES = 8
# `opsfleet health --json`'s `targets` entries: these fields, in this order, for every target
TARGET_FIELDS = ("name", "reachable", "error", "connect_ms", "up", "reason", "last_run", "last_run_age_s", "firing")


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
                              connect_args={**NO_PREPARED, "connect_timeout": 3, "application_name": "opsfleet-health"})
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


def _channels(cfg: FleetConfig, settings: Settings, probe: bool, timeout: float,
              monitored: Engine | None) -> list[Probe]:
    out = []
    specs = cfg.routing.channels if cfg.routing else {}
    for name, spec in specs.items():
        if spec.kind in registry.ROUTING_ONLY:
            continue
        label = f"channel {name}"

        def one(name=name, spec=spec) -> tuple[str, str]:
            cls = registry.channel_class(spec.kind)
            problems = cls.problems(settings, spec)
            if problems:
                return "fail", f"{spec.kind}: {'; '.join(problems)}: its notifications go dead"
            if cls.probing == "on_request" and not probe:
                return "ok", f"{spec.kind} configured (not probed: --probe makes a call that sends nothing)"
            return cls.probe(settings, spec, timeout, monitored)

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
            last = {(r.job, r.target): r for r in conn.execute(sa.text(
                "SELECT DISTINCT ON (job, target) job, target, status, started_at FROM fleet.job_runs "
                "WHERE status <> 'dry_run' ORDER BY job, target, started_at DESC"))}
            # when the running beat started scheduling each job (fleet.job_schedule, as maintenance_job_health)
            scheduled = {(r.job, r.target): r.recorded_at for r in conn.execute(sa.text(
                "SELECT job, target, recorded_at FROM fleet.job_schedule WHERE family = 'maintenance'"))}
        stale, failed, never, not_due = [], [], [], []
        for job, place in cfg.scheduled_maintenance():  # each job on each target it runs on
            if not job.enabled:
                continue
            r, named = last.get((job.name, place.key)), job.name + place.suffix
            grace = 2 * job.schedule.period(now) + timedelta(minutes=5)
            since = scheduled.get((job.name, place.key))
            if r is None and since is not None and now - since <= grace:
                not_due.append(named)  # beat scheduled it lately: not missing (yet), as a stale run is judged
            elif r is None:
                never.append(named)
            elif r.status == "error":
                failed.append(named)
            elif now - r.started_at > grace:
                stale.append(named)
        data = {"failed": failed, "stale": stale, "never_ran": never, "not_due_yet": not_due}
        if failed or stale:
            return "fail", "; ".join(p for p in (f"last run failed: {', '.join(failed)}" if failed else "",
                                                 f"not run for two periods: {', '.join(stale)}" if stale else "") if p), data
        if never:
            return "warn", f"never ran yet: {', '.join(never[:5])}{' ...' if len(never) > 5 else ''}", data
        return "ok", f"{len(last)} jobs ran on schedule" + (f", {len(not_due)} not due yet" if not_due else ""), data

    return [_timed("outbox", outbox), _timed("checks", checks), _timed("maintenance jobs", jobs)]


def _connect(url: str) -> tuple[bool, str | None, float]:
    import psycopg

    started = time.perf_counter()
    dsn = normalize_url(url).replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        with psycopg.connect(dsn, connect_timeout=TARGET_CONNECT_S, application_name="opsfleet-health") as conn:
            conn.execute("SELECT 1")
        ok, error = True, None
    except psycopg.Error as exc:
        ok, error = False, mask_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return ok, error, round((time.perf_counter() - started) * 1000, 1)


def _targets(cfg: FleetConfig, settings: Settings, fleet: Engine | None, now: datetime) -> list[Probe]:
    """Each target: reachable now, and its state from the fleet's (worker.watch.targets). ok, or warn
    when it does not answer or is down; never fail (a target down is its own alert)."""
    known: dict[str, dict[str, Any]] = {}
    if fleet is not None:
        try:
            with fleet.connect() as conn:
                known = {t["name"]: t for t in target_state.overview(conn, cfg, now)}
        except sa.exc.SQLAlchemyError:  # the fleet database probe says why
            known = {}
    urls: dict[str, str | None] = {}
    for t in cfg.targets.values():
        try:
            urls[t.name] = t.database_url(settings)
        except Exception:  # noqa: BLE001 - DATABASE_URL unset: said below
            urls[t.name] = None
    with ThreadPoolExecutor(max_workers=max(1, min(TARGET_PROBES, len(urls)))) as pool:
        answers = dict(zip(urls, pool.map(lambda u: _connect(u) if u else (False, "DATABASE_URL is not set", 0.0),
                                         urls.values()), strict=True))
    out = []
    for name, (reachable, error, ms) in answers.items():
        st = known.get(name, {})
        data = {"name": name, "reachable": reachable, "error": error, "connect_ms": ms, "up": st.get("up"),
                "reason": st.get("reason"), "last_run": st.get("last_run"), "last_run_age_s": st.get("last_run_age_s"),
                "firing": st.get("firing")}
        age = data["last_run_age_s"]
        ran = f"last check run {human_duration(age)} ago" if age is not None else "no check run yet"
        if not reachable:
            detail = f"down: does not answer ({error}); {ran}"
        elif st.get("up") is False:
            detail = f"down: {st['reason']}; answers now; {ran}"
        else:
            detail = f"answers; {ran}" + (f" ({st['reason']})" if st.get("reason") else "")
        out.append(Probe(f"target {name}", "ok" if reachable and st.get("up") is not False else "warn",
                         detail, ms, data))
    return out


def target_entries(probes: list[Probe]) -> list[dict[str, Any]]:
    """The targets' probes as `opsfleet health --json`'s `targets` list (TARGET_FIELDS)."""
    return [{k: p.data.get(k) for k in TARGET_FIELDS} for p in probes if p.name.startswith("target ")]


def down_targets(probes: list[Probe]) -> list[Probe]:
    return [p for p in probes if p.name.startswith("target ") and p.state != "ok"]


GROUPS = ("database", "broker", "redis", "workers", "channels", "state", "targets")


def run_all(settings: Settings, cfg: FleetConfig, *, probe: bool = False, timeout: float = 3.0,
            workers: bool = True, app: Any = None, groups: set[str] | None = None) -> list[Probe]:
    """Every probe (or those of `groups`, see GROUPS), in order; each failure is reported and the next
    still runs."""
    want = set(GROUPS) if groups is None else set(groups)
    now = datetime.now(UTC)
    out: list[Probe] = []
    # with targets.yaml and no DATABASE_URL, the targets are the monitored databases: no `database` probe
    monitored_probe = bool(settings.database_url) or not cfg.targets_declared
    if "database" in want or {"channels", "state"} & want:
        if monitored_probe:
            out.append(_timed("database", lambda: _database(settings.require_database_url(), "monitored")))
        out.append(_timed("fleet database", lambda: _database(settings.require_fleet_database_url(), "fleet")))
        if "database" in want and monitored_probe and out[0].state == "ok":
            out.append(_timed("checks role", lambda: _checks_role(settings.require_database_url())))
    db_state = {p.name: p.state for p in out}
    if "broker" in want:
        out.append(_timed("broker", lambda: _broker(settings)))
    if "redis" in want:
        out.append(_timed("redis", lambda: _redis(settings)))
    if not {"workers", "channels", "state", "targets"} & want:
        return out
    workers = workers and "workers" in want
    if workers:
        if app is None:
            from worker.app import app
        out += _workers(app, timeout=min(timeout, 2.0))
        out.append(_timed("beat", lambda: _beat(settings)))
    monitored = fleet = None
    try:
        fleet = create(settings.require_fleet_database_url(), pool_size=1)
        monitored = create(settings.require_database_url(), pool_size=1)
    except Exception:  # noqa: BLE001, S110 - reported by the database probes above
        pass
    if "channels" in want:
        out += _channels(cfg, settings, probe, timeout, monitored if db_state.get("database") == "ok" else None)
    if fleet is not None and db_state.get("fleet database") == "ok" and "state" in want:
        out += _fleet_state(fleet, cfg, now)
    if "targets" in want:
        out += _targets(cfg, settings, fleet if db_state.get("fleet database", "ok") == "ok" else None, now)
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
