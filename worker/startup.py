"""What a worker and a beat check before they start: the settings they need, the config folder, the
broker and Redis answering, and (a worker consuming maintenance) the jobs against the database. Each
problem is one line; either process refuses to start on any of them instead of logging `ready` and
then failing every task it takes. Warnings (a RabbitMQ too old to take the per-consumer timeout the
long queues need) are logged once and the process starts.

worker.app imports this module for its filters and timeouts: what the checks read (the config
folder, SQLAlchemy, the catalog) is imported when they run, at a worker's or a beat's start, so a
`celery call` or a CLI command that imports the app does not pay for it."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection

from worker.fleet import redisconn
from worker.fleet.errors import OpsfleetError, ServiceUnavailable
from worker.fleet.logs import mask_text
from worker.fleet.names import QUEUES
from worker.fleet.settings import Settings, get_settings

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


class ConsumerTimeoutExplained(logging.Filter):
    """On the `celery.worker` logger: Celery's "Unrecoverable error" when RabbitMQ closed the channel
    because a delivery stayed unacknowledged past the server's consumer_timeout becomes one line that
    says what happens and the line to set, without the traceback (a setting, not a bug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.exc_info[1]) if record.exc_info and record.exc_info[1] is not None else ""
        if "delivery acknowledgement" in text and "timed out" in text:
            used = re.search(r"Timeout value used: (\d+) ms", text)
            need = max(consumer_timeout_ms(q) for q in QUEUES)
            record.msg = (f"RabbitMQ closed this worker's channel: a task stayed unacknowledged past the server's "
                          f"consumer_timeout ({used.group(1) if used else '?'} ms), so the worker stops once it is over "
                          f"and the task runs again from the start, to be cut again: set consumer_timeout = {need} in "
                          "rabbitmq.conf and restart the node (README, RabbitMQ as the broker)")
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


class AckAfterCloseExplained(logging.Filter):
    """On the logger a task's ack is made with (celery.worker.request): kombu's "Couldn't ack N" with its traceback, when the broker had
    already closed the connection (RabbitMQ's consumer_timeout, a broker restart): one line. Acks are
    late, so the delivery is back in the queue and the task runs again (tasks are idempotent)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if str(record.msg).startswith("Couldn't ack") and exc is not None and "connection already closed" in str(exc):
            tag = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = (f"could not acknowledge delivery {tag}: the broker had closed the connection; the task "
                          "goes back to the queue and runs again (acks are late)")
            record.args, record.exc_info, record.exc_text = (), None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


# What a Postgres server says when it answered and refused these credentials or this database: a
# mistake in the URL, which waiting does not mend (a server that does not answer, or is starting up
# or full, may answer later: a warning, and the process starts).
_REFUSALS = ("does not exist", "password authentication failed", "authentication failed", "no pg_hba.conf entry",
             "permission denied for database", "is not permitted to log in", "no password supplied")


def refused_credentials(urls: dict[str, str]) -> list[str]:
    """One line per database (by the variable that names it) whose server answered and refused the
    URL's role, password or database name."""
    import sqlalchemy as sa

    from worker.fleet.db import create

    problems: list[str] = []
    for variable, url in urls.items():
        engine = create(url, application_name="opsfleet-startup", pool_size=1, pre_ping=False)
        try:
            with engine.connect():
                pass
        except sa.exc.OperationalError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            if "FATAL:" in reason and any(r in reason for r in _REFUSALS):
                why = " ".join(reason.split("FATAL:", 1)[1].split())
                shown = sa.engine.make_url(url).render_as_string(hide_password=True)
                problems.append(f"{variable} ({shown}) is refused by its server: {mask_text(why)}; fix the "
                                f"user, password or database name in {variable} (a database that does not answer "
                                "is waited for, one that refuses is not)")
        finally:
            engine.dispose()
    return problems


def _databases(settings: Settings, cfg: Any, queues: set[str]) -> dict[str, str]:
    """The databases a process consuming `queues` uses, by the variable that names them."""
    urls = {"FLEET_DATABASE_URL" if settings.fleet_database_url else "DATABASE_URL": settings.require_fleet_database_url()}
    if not cfg.targets_declared and settings.database_url:
        urls.setdefault("DATABASE_URL", settings.database_url)
        if settings.maintenance_database_url and {"maintenance", "backlog"} & queues:
            urls["MAINTENANCE_DATABASE_URL"] = settings.maintenance_database_url
    return urls


def worker_findings(queues: Iterable[str]) -> Findings:
    """A worker consuming `queues` (empty: all of them)."""
    import sqlalchemy as sa

    from worker.config import get_config

    queues = set(queues) or set(QUEUES)
    found = Findings()
    try:
        settings = get_settings()
        cfg = get_config()
        _require_databases(settings, cfg)
    except OpsfleetError as exc:
        found.errors.append(str(exc))
        return found
    found.errors += refused_credentials(_databases(settings, cfg, queues))
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
    if cfg.targets_declared:
        errors, warnings = target_problems(cfg, settings, checks="checks" in queues)
        found.errors += errors
        found.warnings += warnings
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
    import sqlalchemy as sa

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
QUERY_HINT = ("a query the database cannot parse or run (a syntax error, a wrong type) is the check's own: fix it at "
              "the file and line named (`opsfleet checks run NAME --dry-run` runs it)")


def _hints(problems: list[str]) -> list[str]:
    """What to do: FIX_HINT for what the database lacks (a table, a function: the wrong database or a pack
    it has no use for), QUERY_HINT for a query that is wrong wherever it runs."""
    lacking = sum(1 for p in problems if "does not exist" in p or "does not have" in p)
    return ([QUERY_HINT] if lacking < len(problems) else []) + ([FIX_HINT] if lacking else [])


def catalog_problems(cfg: Any, settings: Settings, *, checks: bool = True, maintenance: bool = True) -> list[str]:
    """What the enabled packs, checks and jobs need that the databases lack, one line each (a pack's
    missing tables and functions; then, of the packs that have what they need, each check whose query
    does not plan and each job naming a missing table, column or function), and a last line saying
    what to do. Empty when all is well. Raises ServiceUnavailable when a database does not answer."""
    from worker.checks.catalog import check_queries
    from worker.fleet.db import create, ping
    from worker.maintenance.catalog import check_catalog_at
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
    hints = _hints(problems)
    if any('relation "fleet.' in p for p in problems):
        problems.append("the fleet's own tables are not there: run `opsfleet db upgrade` against FLEET_DATABASE_URL "
                        "(or DATABASE_URL)")
    return [*problems, *hints]


def _require_databases(settings: Settings, cfg: Any) -> None:
    """DATABASE_URL, unless config/targets.yaml names the databases: then the fleet's own
    (FLEET_DATABASE_URL, or DATABASE_URL)."""
    if cfg.targets_declared:
        settings.require_fleet_database_url()
    else:
        settings.require_database_url()


def target_problems(cfg: Any, settings: Settings, *, checks: bool = True) -> tuple[list[str], list[str]]:
    """Of each declared target: the tables and functions its packs need that its database lacks (an
    error, one line naming the target and the table), and whether it answers at all (a target that is
    down is a warning: the fleet starts, and the target's database_down tells of it)."""
    import sqlalchemy as sa

    from worker.fleet.db import checks_role_warnings, create
    from worker.packs import missing

    errors: list[str] = []
    warnings: list[str] = []
    for t in cfg.targets.values():
        engine = create(t.database_url(settings), pool_size=1, pre_ping=False)
        try:
            with engine.connect() as conn:
                for name in t.packs:
                    if name in cfg.packs:
                        errors += [f"target {t.name} ({t.where}): {m.replace('the monitored database', 'its database')}"
                                   for m in missing(cfg.packs[name], conn)]
            if checks:
                warnings += [f"target {t.name}: {w}" for w in checks_role_warnings(engine)]
        except sa.exc.DBAPIError as exc:
            reason = mask_text(str(exc.orig or exc).strip().splitlines()[0])
            state = ("refuses its url: fix its user, password or database name"
                     if "FATAL:" in reason and any(r in reason for r in _REFUSALS) else "does not answer")
            warnings.append(f"target {t.name} {state} ({reason}): the fleet starts without it; its checks "
                            "fail until it does and its database_down fires")
        finally:
            engine.dispose()
    if errors:
        errors.append(f"remove the pack from the target's `packs:` in {cfg.root / 'targets.yaml'}, or point its url at "
                      "the application's database")
    return errors, warnings


def beat_findings() -> Findings:
    """A beat: what a worker needs but the catalog (a beat would schedule tasks no worker can run)."""
    from worker.config import get_config

    found = Findings()
    try:
        settings = get_settings()
        cfg = get_config()
        _require_databases(settings, cfg)
    except OpsfleetError as exc:
        found.errors.append(str(exc))
        return found
    found.errors += refused_credentials(_databases(settings, cfg, set()))
    for probe in (check_broker, check_redis):
        try:
            probe(settings)
        except OpsfleetError as exc:
            found.errors.append(str(exc))
    return found
