"""structlog for our code and for Celery's own loggers, with secrets masked wherever they appear.

JSON when stderr is not a terminal (production, CI), key=value colours in a terminal. Every record,
ours or a library's, passes through `mask_secrets` before it is rendered.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

import structlog

MASK = "***"

# Patterns that are secrets whatever variable they came from.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # password inside a DSN: scheme://user:password@host
    (re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)(?P<post>@)"), r"\g<pre>***\g<post>"),
    # Slack incoming webhook path
    (re.compile(r"(hooks\.slack\.com/services/)[A-Za-z0-9/_\-]+"), r"\1***"),
    (re.compile(r"(/services/T[A-Za-z0-9]+/B[A-Za-z0-9]+/)[A-Za-z0-9_\-]+"), r"\1***"),
    # Slack tokens
    (re.compile(r"xox[abposr]-[A-Za-z0-9\-]+"), "xox?-***"),
    # Resend API keys
    (re.compile(r"\bre_[A-Za-z0-9_]{8,}"), "re_***"),
    # Authorization headers
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}"), r"\1***"),
]

_extra_secrets: list[str] = []


def register_secrets(values: Iterable[str | None]) -> None:
    """Exact strings (from settings) that must never reach a log line."""
    for v in values:
        if v and len(v) >= 4 and v not in _extra_secrets:
            _extra_secrets.append(v)
    _extra_secrets.sort(key=len, reverse=True)


def mask_text(text: str) -> str:
    for secret in _extra_secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: _mask_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask_value(v) for v in value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return mask_text(str(value))


def mask_secrets(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: _mask_value(v) for k, v in event_dict.items()}


class _MaskingRenderer:
    """Last line of defence: mask the rendered line too (covers anything a renderer adds)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, logger: Any, name: str, event_dict: dict[str, Any]) -> str:
        return mask_text(self.inner(logger, name, event_dict))


def _drop_celery_data(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Celery's task-outcome records carry an extra `data` dict (id, name, args, kwargs, exc and a
    traceback string, even for a task's expected error): the message says as much, and a real error's
    traceback still comes with the record's own exc_info."""
    if str(event_dict.get("logger", "")).startswith("celery"):
        event_dict.pop("data", None)
    return event_dict


_configured: tuple[str, str] | None = None


def configure_logging(fmt: str | None = None, level: str | None = None, *, force: bool = False) -> None:
    """Configure structlog and the stdlib root logger (Celery's loggers propagate to it)."""
    global _configured
    from worker.fleet.settings import get_settings

    try:
        settings = get_settings()
        fmt = fmt or settings.log_format
        level = level or settings.log_level
        register_secrets(settings.secret_values())
    except Exception:  # settings errors are reported by the caller; logging must still work
        pass
    fmt = fmt or ("console" if sys.stderr.isatty() else "json")
    level = (level or "INFO").upper()
    if _configured == (fmt, level) and not force:
        return
    _configured = (fmt, level)

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _drop_celery_data,
    ]
    if fmt == "json":
        renderer: Any = structlog.processors.JSONRenderer()
        tail: list[Any] = [structlog.processors.dict_tracebacks]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        tail = []

    structlog.configure(
        processors=[*shared, structlog.stdlib.PositionalArgumentsFormatter(),
                    structlog.processors.StackInfoRenderer(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *tail,
            mask_secrets,
            _MaskingRenderer(renderer),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "kombu", "amqp", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for celery_logger in ("celery", "celery.task", "celery.worker", "celery.beat", "celery.redirected"):
        lg = logging.getLogger(celery_logger)
        lg.handlers.clear()
        lg.propagate = True


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
