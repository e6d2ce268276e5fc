"""A fleet transaction run once more when it met a connection that died while idle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.fleet.logs import get_logger

_log = get_logger(__name__)
T = TypeVar("T")


def once_more_if_stale(fn: Callable[..., T], engine: Engine, *args: Any, **kwargs: Any) -> T:
    """`fn(engine, ...)`, once more when its transaction met a connection that died while idle (a
    restart): hot_fleet_engine pings nothing at checkout, and such a transaction wrote nothing. For
    what is safe to run again (a read, a delivery's stage)."""
    try:
        return fn(engine, *args, **kwargs)
    except sa.exc.DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        _log.warning("fleet_connection_replaced", during=fn.__name__.lstrip("_"),
                     reason=str(exc.orig).strip().splitlines()[0] if exc.orig and str(exc.orig).strip() else "")
        return fn(engine, *args, **kwargs)
