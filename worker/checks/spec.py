"""The YAML model of a check (config/checks/*.yaml): what it runs, its condition, its notices."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator, model_validator

from worker.checks.templates import Template
from worker.fleet.db import psycopg_text
from worker.fleet.fields import IDENT_RE, SEVERITIES, Duration, Name, ScheduleField, Strict
from worker.fleet.names import beat_entry
from worker.fleet.sqltext import code_only, second_statement

# -- conditions ------------------------------------------------------------------------------------
_COND = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
_OPS = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


@dataclass(frozen=True)
class Condition:
    op: str
    threshold: float

    @classmethod
    def parse(cls, v: Any) -> Condition:
        if isinstance(v, Condition):
            return v
        m = _COND.match(str(v))
        if not m:
            raise ValueError(f"{v!r} is not a condition: use an operator and a number, e.g. '> 20' or '< 95.5'")
        threshold = float(m.group(2))
        if not math.isfinite(threshold):  # 400 digits read as inf (found by tests/reliability)
            raise ValueError(f"{v!r} is not a condition: its number is too large")
        return cls(m.group(1), threshold)

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def __str__(self) -> str:
        t = int(self.threshold) if self.threshold.is_integer() else self.threshold
        return f"{self.op} {t}"


ConditionField = Annotated[Condition, BeforeValidator(Condition.parse), PlainSerializer(str)]


# -- checks ----------------------------------------------------------------------------------------
PROM_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# what worker/metrics.py sets on every check series itself, and the query columns that are never labels
RESERVED_EXPORT_LABELS = frozenset({"check", "severity", "state", "value", "no_data_reason"})


# functions a READ ONLY transaction still lets a query call, with effects outside it (tests/reliability
# shows each on a real server): refused in a check's query, called like a function, outside literals
SIDE_EFFECTS = re.compile(r"\b(pg_terminate_backend|pg_cancel_backend|pg_reload_conf|pg_(?:try_)?advisory_\w+|"
                          r"lo_\w+|dblink\w*)\s*\(", re.IGNORECASE)


class HttpProbe(Strict):
    url: str
    expect_status: int = 200
    json_field: str | None = None  # dotted path, e.g. services.whatsapp.status
    expect: str | int | float | bool | None = None
    method: Literal["GET", "HEAD"] = "GET"


class RedisProbe(Strict):
    url: str | None = None  # default: the broker
    metric: Literal["keyspace_hit_ratio", "used_memory_ratio", "connected_clients", "rejected_connections",
                    "evicted_keys"] = "keyspace_hit_ratio"


class Remediate(Strict):
    task: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class Check(Strict):
    name: Name
    description: str
    schedule: ScheduleField
    kind: Literal["sql", "http", "redis"] = "sql"
    database: Literal["monitored", "fleet"] = "monitored"  # fleet: the fleet's own state (fleet.yaml)
    query: str | None = None
    probe: HttpProbe | RedisProbe | None = None
    condition: ConditionField
    for_: Duration = Field(default=timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)  # Prometheus's: stays firing this long after the condition stops
    severity: Literal[SEVERITIES]
    labels: dict[str, str] = Field(default_factory=dict)
    export_labels: list[str] = Field(default_factory=list)  # label columns on /metrics (worker/metrics.py)
    summary: Template
    details: Template | None = None
    runbook: str | None = None
    no_data: Literal["ok", "alerting", "keep"] = "ok"
    remediate: Remediate | None = None
    timeout: Duration = timedelta(seconds=10)
    enabled: bool = True

    @model_validator(mode="after")
    def _kind_fields(self) -> Check:
        if self.kind == "sql":
            if not self.query:
                raise ValueError("a sql check needs `query` (returning a numeric `value` column)")
            if self.probe is not None:
                raise ValueError("`probe` is for http and redis checks; a sql check uses `query`")
        elif self.kind == "http":
            if not isinstance(self.probe, HttpProbe):
                raise ValueError("an http check needs `probe: {url: ...}`")
        elif self.kind == "redis":
            if not isinstance(self.probe, RedisProbe):
                raise ValueError("a redis check needs `probe: {metric: keyspace_hit_ratio}`")
        if self.kind != "sql":
            unknown = [k for k in self.export_labels if k not in self.labels]
            if unknown:
                raise ValueError(f"export_labels: {unknown[0]!r} is not a label of this {self.kind} check (a probe has "
                                 "no label columns; name one of `labels`)")
        if self.timeout.total_seconds() <= 0 or self.timeout.total_seconds() > 300:
            raise ValueError("timeout must be between 1s and 5m")
        return self

    @field_validator("query")
    @classmethod
    def _query(cls, v: str | None) -> str | None:
        if v is None:
            return v
        line = second_statement(v)
        if line is not None:
            raise ValueError(f"the query holds a second SQL statement (line {line} of the query); a check runs "
                             "one statement, READ ONLY")
        code = code_only(v)
        first = re.match(r"\s*\(*\s*(\w+)", code)
        if first is None or first.group(1).lower() not in ("select", "with", "values", "table"):
            raise ValueError(f"the query starts with {(first.group(1) if first else code.strip()[:20])!r}: a check "
                             "runs one SELECT (or WITH ... SELECT), READ ONLY")
        side = SIDE_EFFECTS.search(code)
        if side:
            raise ValueError(f"the query calls {side.group(1)}(), which acts even in a READ ONLY transaction "
                             "(signals backends, reloads the server, takes session locks, reads or writes server "
                             "files, or writes through another connection); a check only reads")
        unknown = sorted(set(psycopg_text(v)[1]) - {"now"})
        if unknown:
            raise ValueError(f"unknown bind parameter :{unknown[0]} (only :now is bound; write `::` for a cast)")
        return v

    @field_validator("runbook")
    @classmethod
    def _runbook(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("ops/runbooks/") or ".." in v):
            raise ValueError("runbook must be a path under ops/runbooks/")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not IDENT_RE.match(k):
                raise ValueError(f"label name {k!r} must be an identifier")
        return v


    @field_validator("export_labels")
    @classmethod
    def _export_labels(cls, v: list[str]) -> list[str]:
        for k in v:
            if not PROM_LABEL_RE.match(k) or k.startswith("__"):
                raise ValueError(f"export_labels: {k!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, "
                                 "not starting with __)")
            if k in RESERVED_EXPORT_LABELS:
                raise ValueError(f"export_labels: {k!r} collides with a label the exporter sets itself or a column "
                                 f"that is no label ({', '.join(sorted(RESERVED_EXPORT_LABELS))})")
        if len(set(v)) != len(v):
            raise ValueError(f"export_labels: {next(k for k in v if v.count(k) > 1)!r} is named twice")
        return v


class ChecksFile(Strict):
    checks: list[Check] = Field(default_factory=list)


def queue_for(check: Check) -> str:
    """Where a check's runs go: the fleet's own checks (database: fleet) to the notify queue, whose
    workers must be up for anything to be told, so a stuck or unconsumed checks queue cannot starve
    the checks that tell of it (checks_missed); every other check to the checks queue."""
    return "notify" if check.database == "fleet" else "checks"


def beat_entries(checks: Iterable[Check]) -> dict[str, dict[str, Any]]:
    """One checks.run per enabled check, on its schedule and queue (stale runs expire instead of piling up)."""
    return {f"check:{c.name}": beat_entry("checks.run", c.schedule.celery_schedule(), {"name": c.name}, expires=300,
                                          queue=queue_for(c))
            for c in checks if c.enabled}
