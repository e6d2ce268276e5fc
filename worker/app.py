"""The Celery app: queues, at-least-once settings, time limits, and the one task decorator."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import structlog
from celery import Celery, signals
from celery.utils.text import str_to_list
from kombu import Queue

from worker import startup
from worker.fleet import calls
from worker.fleet.brokerfix import guard_redis_transport
from worker.fleet.errors import ArgumentError, ConfigError, ServiceUnavailable, SettingsError
from worker.fleet.logs import configure_logging, get_logger
from worker.fleet.names import KNOWN_TASKS, QUEUES, TASK_MODULES, VISIBILITY_TIMEOUT, queue_of
from worker.fleet.settings import get_settings

try:
    _settings = get_settings()
    _broker = _settings.broker_url()
    _redis = _settings.redis()
    _backend = _settings.result_backend
except SettingsError as _exc:  # `celery -A worker ...` with a bad environment: one line, no traceback
    sys.stderr.write(f"opsfleet: {_exc}\n")
    raise SystemExit(2) from None

guard_redis_transport()  # a Redis restart must not end a worker (kombu 5.7.0: worker/fleet/brokerfix.py)
app = Celery("opsfleet", include=TASK_MODULES)
app.conf.update(
    broker_url=_broker,
    result_backend=_backend,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
    result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
    result_expires=24 * 3600,
    result_extended=True,  # a result keeps its task name and arguments: `opsfleet task show ID`
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    timezone="UTC",
    enable_utc=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_acks_on_failure_or_timeout=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_track_started=True,
    task_send_sent_event=True,
    worker_send_task_events=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    # with RabbitMQ, each consumer asks for an acknowledgement timeout above its queue's hard limit
    # (RabbitMQ 3.12+ honours it; older servers apply their server-wide consumer_timeout: README)
    task_queues=[Queue(name, consumer_arguments={"x-consumer-timeout": startup.consumer_timeout_ms(name)}
                       if _broker.startswith(("amqp", "pyamqp")) else None) for name in QUEUES],
    task_default_queue="checks",
    task_routes={f"{family}.*": {"queue": family} for family in QUEUES},
    beat_scheduler="worker.beat:Scheduler",
    beat_max_loop_interval=5,
    redbeat_redis_url=_redis,
    redbeat_key_prefix="opsfleet:redbeat:",
    redbeat_lock_timeout=30,
)

_ALLOWED_OPTIONS = {"bind", "ignore_result", "max_retries", "default_retry_delay", "acks_late",
                    "track_started", "typing", "rate_limit", "soft_time_limit", "time_limit"}
# expected in normal operation: Celery records the failure and logs one line, without a traceback
EXPECTED = (ArgumentError, ServiceUnavailable, ConfigError)
log = get_logger("worker.app")


def task(name: str, *, accepts: dict[str, str] | None = None, shadow: Callable[[dict], str] | None = None,
         **options: Any):
    """Register a task under an explicit dotted name, routed to its family's queue.

    Options are checked here so a typo (`ignore_results=`) fails at import, not silently. Every call's
    arguments are checked against the function's signature before it runs (`accepts` describes each
    for the message); a service that stops answering fails the task in one line (worker.fleet.calls).
    `shadow(kwargs)` names the task as logs and Flower show it (e.g. checks.run:confirmation_backlog)."""
    family = queue_of(name)
    if name not in KNOWN_TASKS:
        raise ValueError(f"task {name!r} is not in worker.fleet.names.KNOWN_TASKS")
    unknown = set(options) - _ALLOWED_OPTIONS
    if unknown:
        raise TypeError(f"unknown task option(s) for {name}: {', '.join(sorted(unknown))}")
    limits = QUEUES[family]
    opts: dict[str, Any] = {"soft_time_limit": limits["soft_time_limit"], "time_limit": limits["time_limit"],
                            "throws": EXPECTED, **options}
    if shadow is not None:
        opts["shadow_name"] = lambda self, args, kwargs, options: shadow(kwargs or {})
        _SHADOWS[name] = shadow
    bound = bool(options.get("bind"))

    def decorate(fn: Callable[..., Any]):
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            calls.check_arguments(name, fn, args[1:] if bound else args, kwargs, accepts or {}, bound=bound)
            try:
                return fn(*args, **kwargs)
            except calls.service_errors() as exc:
                unavailable = calls.service_unavailable(exc)
                log.error("task_failed", task=name, error=str(unavailable))
                raise unavailable from None
            except EXPECTED as exc:
                log.warning("task_failed", task=name, error=str(exc))
                raise

        return app.task(name=name, **opts)(run)

    return decorate


_SHADOWS: dict[str, Callable[[dict], str]] = {}


@signals.task_received.connect
def _name_a_call(request: Any = None, **_: Any) -> None:
    """A call that came without a shadow name (`celery call`, `send_task` by name: neither asks the task
    for one) gets the one beat's calls carry, before the worker announces it: Flower and the logs show
    `checks.run:confirmation_backlog` whoever sent it. Arguments that do not name one leave it plain."""
    if request is None or request.request_dict.get("shadow") or request.type not in _SHADOWS:
        return
    try:
        kwargs = request.kwargs
        named = _SHADOWS[request.type](kwargs) if isinstance(kwargs, dict) else None
    except Exception:  # noqa: BLE001 (a name is a courtesy: arguments it cannot read are checked when the task runs)
        return
    if named and named != request.type:
        request.name = request.request_dict["shadow"] = named


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    configure_logging()


logging.getLogger("celery.worker").addFilter(startup.ConsumerTimeoutExplained())
for _name in ("celery.worker.request", "kombu.message"):  # Celery's request acks through kombu's message
    logging.getLogger(_name).addFilter(startup.AckAfterCloseExplained())


@signals.celeryd_init.connect
def _check_at_start(options: dict[str, Any] | None = None, **_: Any) -> None:
    """A worker refuses to start, with one line per problem, on what would make every task fail: a
    missing setting, an invalid config/, a broker or Redis that does not answer, a maintenance job
    naming what the monitored database lacks (worker.startup)."""
    include = str_to_list((options or {}).get("queues") or [])
    exclude = set(str_to_list((options or {}).get("exclude_queues") or []))
    queues = [q for q in (include or QUEUES) if q not in exclude]
    found = startup.worker_findings(queues)
    for line in found.warnings:
        sys.stderr.write(f"opsfleet worker: warning: {line}\n")
    if found.errors:
        for line in found.errors:
            sys.stderr.write(f"opsfleet worker: {line}\n")
        sys.stderr.flush()
        os._exit(2)  # SystemExit is swallowed by the worker's bootstrap; leave at once


@signals.task_prerun.connect
def _bind_task_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task_name=getattr(task, "name", None))


@signals.task_postrun.connect
def _clear_task_context(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()
