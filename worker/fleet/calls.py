"""What every task does around its work. `celery call` sends kwargs unchecked, so each call's
arguments are checked against the task's signature first (an unknown name, a missing one: one
message naming each, and what the task accepts, before anything is done). A service that stops
answering mid-task (Postgres, Redis) is reported as one line, not a traceback; the worker stays up."""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from worker.fleet.errors import ArgumentError, ServiceUnavailable


def service_errors() -> tuple[type[BaseException], ...]:
    """The errors meaning a service did not answer (the task fails, its next run or the sweeper
    retries): SQLAlchemy's and psycopg's operational errors, Redis's connection and timeout errors, a
    socket's. Only of the clients this process has imported: one it has not imported raised nothing,
    and a process that imports the app to send a task (`celery call`, the CLI) loads none for it."""
    found: list[type[BaseException]] = [ConnectionError]
    if (sa_exc := sys.modules.get("sqlalchemy.exc")) is not None:
        found += [sa_exc.OperationalError, sa_exc.InterfaceError]
    if (psycopg := sys.modules.get("psycopg")) is not None:
        found.append(psycopg.OperationalError)
    if (redis := sys.modules.get("redis")) is not None:
        found += [redis.ConnectionError, redis.TimeoutError]
    return tuple(found)


def closest(name: str, choices: Iterable[str]) -> str:
    """`; did you mean x?` when a choice is close to `name`, else ``."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def accepted(accepts: Mapping[str, str]) -> str:
    return ", ".join(f"{k} ({v})" for k, v in accepts.items()) or "none"


def rejected(task: str, problems: list[str], accepts: Mapping[str, str]) -> ArgumentError:
    return ArgumentError(f"{task} rejected its arguments, nothing was done: {'; '.join(problems)}. "
                         f"Accepted arguments: {accepted(accepts)}")


def pack_off(task: str, problem: str | None) -> None:
    """ArgumentError, one line, when `problem` says what the call names is in a pack that is not enabled
    (FleetConfig.pack_off): the task does nothing rather than fail on the tables that pack needs."""
    if problem:
        raise ArgumentError(f"{task} rejected its arguments, nothing was done: {problem}")


def check_arguments(task: str, fn: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any],
                    accepts: Mapping[str, str], *, bound: bool) -> None:
    """Raise ArgumentError naming every argument the call gets wrong (a task taking **kwargs checks
    its own, with a model)."""
    params = list(inspect.signature(fn).parameters.values())[1 if bound else 0:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    names = [p.name for p in named]
    problems = [f"unknown argument {k!r}{closest(k, names)}" for k in kwargs if k not in names]
    if len(args) > len([p for p in named if p.kind is p.POSITIONAL_OR_KEYWORD]):
        problems.append(f"{len(args)} positional arguments (give them by name: --kwargs '{{...}}')")
    given = set(kwargs) | {p.name for p, _ in zip(named, args, strict=False)}
    problems += [f"missing argument {p.name!r}" for p in named if p.default is p.empty and p.name not in given]
    if problems:
        raise rejected(task, problems, accepts)


def one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def service_unavailable(exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(f"a service did not answer: {one_line(exc)}")


def known(task: str, field: str, value: Any, choices: Iterable[str], accepts: Mapping[str, str]) -> str:
    """`value` if it is one of `choices`, else ArgumentError naming the closest."""
    choices = sorted(choices)
    if isinstance(value, str) and value in choices:
        return value
    hint = closest(value, choices) if isinstance(value, str) else ""
    raise rejected(task, [f"{field}={value!r} is not known{hint}"], accepts)


def instant(task: str, field: str, value: Any, accepts: Mapping[str, str]):
    """An ISO 8601 instant with a timezone, or None for None."""
    from datetime import datetime

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise rejected(task, [f"{field}={value!r} is not an ISO 8601 instant with a timezone "
                              "(e.g. 2026-11-23T10:00:00+00:00)"], accepts)
    return parsed
