"""What a worker and a beat check before they start: the settings they need, the config folder, the
broker and Redis answering, and (a worker consuming maintenance) the jobs against the database. Each
problem is one line; either process refuses to start on any of them instead of logging `ready` and
then failing every task it takes. Warnings (a RabbitMQ too old to take the per-consumer timeout the
long queues need) are logged once and the process starts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from kombu import Connection

from worker.config import get_config
from worker.fleet import redisconn
from worker.fleet.errors import OpsfleetError, ServiceUnavailable
from worker.fleet.logs import mask_text
from worker.fleet.names import QUEUES
from worker.fleet.settings import Settings, get_settings
from worker.maintenance.catalog import check_catalog_at

# RabbitMQ takes a per-consumer delivery acknowledgement timeout (x-consumer-timeout) from 3.12 on;
# before, its server-wide consumer_timeout (30 min by default) applies to every delivery.
PER_CONSUMER_TIMEOUT_SINCE = (3, 12, 0)
RABBITMQ_DEFAULT_CONSUMER_TIMEOUT_S = 1800


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def consumer_timeout_ms(queue: str) -> int:
    """The per-consumer acknowledgement timeout our consumers ask RabbitMQ for: the queue's hard
    time limit and 5 minutes more, so a task that is still allowed to run is never cancelled."""
    return (QUEUES[queue]["time_limit"] + 300) * 1000


def check_broker(settings: Settings) -> dict:
    """Connect to the broker once; RabbitMQ's server properties (its version), or {} for Redis."""
    url = settings.broker_url()
    conn = Connection(url, connect_timeout=5)
    try:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=5)
        props = getattr(conn.connection, "server_properties", None) or {}
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in props.items()}
    except Exception as exc:  # kombu raises the transport's own errors (socket, amqp, redis)
        raise ServiceUnavailable(f"cannot reach the broker at {mask_text(url)} (CELERY_BROKER_URL): "
                                 f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    finally:
        conn.release()


def check_redis(settings: Settings) -> None:
    url = settings.redis()
    if not redisconn.answers(url, timeout=3):
        raise ServiceUnavailable(f"cannot reach Redis at {mask_text(url)} (REDIS_URL, or CELERY_BROKER_URL when "
                                 "that is Redis): RedBeat, the rate-limit buckets and the follow-up keys live there")


def _version(text: object) -> tuple[int, ...]:
    text = text.decode() if isinstance(text, bytes) else str(text)
    parts = []
    for p in text.split("."):
        digits = "".join(c for c in p if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _rabbitmq_timeouts(props: dict, queues: Iterable[str]) -> list[str]:
    product = props.get("product") or b""
    if "RabbitMQ" not in (product.decode() if isinstance(product, bytes) else str(product)):
        return []
    version = _version(props.get("version", "0"))
    if version >= PER_CONSUMER_TIMEOUT_SINCE:
        return []
    long = sorted(q for q in queues if QUEUES[q]["time_limit"] > RABBITMQ_DEFAULT_CONSUMER_TIMEOUT_S)
    if not long:
        return []
    need = max(consumer_timeout_ms(q) for q in long)
    shown = ".".join(map(str, version)) or "?"
    return [f"RabbitMQ {shown} applies its server-wide consumer_timeout (30 min by default) to every delivery, "
            f"and the tasks of {', '.join(long)} may run up to {max(QUEUES[q]['time_limit'] for q in long) // 60} "
            f"min: set consumer_timeout = {need} in rabbitmq.conf (RabbitMQ 3.12+ takes the per-consumer "
            "timeout opsfleet asks for), or a long task is cancelled and run again"]


def worker_findings(queues: Iterable[str]) -> Findings:
    """A worker consuming `queues` (empty: all of them)."""
    queues = set(queues) or set(QUEUES)
    found = Findings()
    try:
        settings = get_settings()
        settings.require_database_url()
        cfg = get_config()
    except OpsfleetError as exc:
        found.errors.append(str(exc))
        return found
    try:
        props = check_broker(settings)
        found.warnings += _rabbitmq_timeouts(props, queues)
    except OpsfleetError as exc:
        found.errors.append(str(exc))
    try:
        check_redis(settings)
    except OpsfleetError as exc:
        found.errors.append(str(exc))
    if found.errors or not {"checks", "maintenance"} & queues:
        return found
    try:
        errors = catalog_problems(cfg, settings, checks="checks" in queues, maintenance="maintenance" in queues)
    except (ServiceUnavailable, sa.exc.DBAPIError) as exc:  # (e.g. the database went away mid-check)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        found.warnings.append(f"checks and jobs not checked against the database at start: {reason}; "
                              "each run meets its own errors")
        return found
    found.errors += errors
    if "checks" in queues and not errors:
        found.warnings += _role_warnings(settings)
    return found


def _role_warnings(settings: Settings) -> list[str]:
    """The checks' role: a superuser or one that may write is worth one warning at start, not a refusal."""
    from worker.fleet.db import checks_role_warnings, create

    engine = create(settings.require_database_url(), pool_size=1)
    try:
        return checks_role_warnings(engine)
    except sa.exc.DBAPIError:
        return []
    finally:
        engine.dispose()


FIX_HINT = ("disable the pack in config/packs.yaml (or the job or check: enabled: false), or point DATABASE_URL "
            "at the application's database")


def catalog_problems(cfg: Any, settings: Settings, *, checks: bool = True, maintenance: bool = True) -> list[str]:
    """What the enabled packs, checks and jobs need that the databases lack, one line each (a pack's
    missing tables and functions; then, of the packs that have what they need, each check whose query
    does not plan and each job naming a missing table, column or function), and a last line saying
    what to do. Empty when all is well. Raises ServiceUnavailable when a database does not answer."""
    from worker.checks.catalog import check_queries
    from worker.fleet.db import create, ping
    from worker.packs import missing

    problems: list[str] = []
    monitored = create(settings.require_database_url(), pool_size=1)
    fleet = create(settings.require_fleet_database_url(), pool_size=1)
    try:
        ping(monitored, "the monitored database")
        with monitored.connect() as conn:
            for pack in cfg.packs.values():
                problems += missing(pack, conn)
        short = {p.split(": pack ", 1)[1].split(" ", 1)[0] for p in problems}
        if checks:
            problems += check_queries((c for n, c in cfg.checks.items() if cfg.check_pack.get(n) not in short),
                                      {"monitored": monitored, "fleet": fleet}, where=cfg.check_field)
        if maintenance:
            jobs = [j for n, j in cfg.maintenance.items() if cfg.job_pack.get(n) not in short]
            problems += check_catalog_at(settings.require_maintenance_database_url(), jobs, where=cfg.job_field)
    finally:
        monitored.dispose()
        fleet.dispose()
    if any('relation "fleet.' in p for p in problems):
        problems.append("the fleet's own tables are not there: run `opsfleet db upgrade` against FLEET_DATABASE_URL "
                        "(or DATABASE_URL)")
    return [*problems, FIX_HINT] if problems else []


def beat_findings() -> Findings:
    """A beat: what a worker needs but the catalog (a beat would schedule tasks no worker can run)."""
    found = Findings()
    try:
        settings = get_settings()
        settings.require_database_url()
        get_config()
    except OpsfleetError as exc:
        found.errors.append(str(exc))
        return found
    for probe in (check_broker, check_redis):
        try:
            probe(settings)
        except OpsfleetError as exc:
            found.errors.append(str(exc))
    return found
