"""Field types shared by every config file (pydantic), and the one list of severities."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from worker.fleet.timeutil import Schedule, parse_duration

# Worst first (seed 001's Alert Types table): routing, message ordering and metrics use this order.
SEVERITIES = ("critical", "high", "warning", "medium", "info")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")  # \Z: `$` would let "name\n" through
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


def severity_rank(severity: str) -> int:
    """0 for critical ... 4 for info; an unknown severity sorts last."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def _duration(v: Any) -> timedelta:
    if isinstance(v, timedelta):
        return v
    return parse_duration(v)


def _schedule(v: Any) -> Schedule:
    if isinstance(v, Schedule):
        return v
    return Schedule.parse(v)


def _name(v: Any) -> str:
    if not isinstance(v, str) or not NAME_RE.match(v):
        raise ValueError(f"{v!r} must be snake_case: lowercase letters, digits and _, starting with a letter")
    return v


def _identifier(v: Any) -> str:
    """A SQL identifier from config: optionally schema-qualified, validated before it is ever quoted."""
    if not isinstance(v, str):
        raise ValueError(f"{v!r} is not a valid SQL identifier (letters, digits, _; optionally schema.table)")
    parts = v.split(".")
    if len(parts) > 2 or not all(IDENT_RE.match(p) for p in parts):
        raise ValueError(f"{v!r} is not a valid SQL identifier (letters, digits, _; optionally schema.table)")
    return v


Duration = Annotated[timedelta, BeforeValidator(_duration), PlainSerializer(lambda td: td.total_seconds())]
ScheduleField = Annotated[Schedule, BeforeValidator(_schedule), PlainSerializer(lambda s: s.text)]
Name = Annotated[str, BeforeValidator(_name)]
Identifier = Annotated[str, BeforeValidator(_identifier)]


class Strict(BaseModel):
    """A config model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, populate_by_name=True)
