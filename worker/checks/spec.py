"""The YAML model of a check (config/checks/*.yaml): what it runs, its condition, its notices."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator, model_validator

from worker.actions.spec import ActionField
from worker.checks.evidence import EvidenceField
from worker.checks.sqlcalls import read_only_problem
from worker.checks.templates import Template
from worker.fleet.db import psycopg_text
from worker.fleet.fields import IDENT_RE, SEVERITIES, Duration, Name, ScheduleField, Strict
from worker.fleet.names import beat_entry

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
# what worker/watch/metrics.py sets on every check series itself, and the query columns that are never labels
RESERVED_EXPORT_LABELS = frozenset({"check", "severity", "state", "value", "no_data_reason"})


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
    export_labels: list[str] = Field(default_factory=list)  # label columns on /metrics (worker/watch/metrics.py)
    summary: Template
    details: Template | None = None
    runbook: str | None = None
    no_data: Literal["ok", "alerting", "keep"] = "ok"
    remediate: Remediate | None = None
    evidence: list[EvidenceField] = Field(default_factory=list)  # gathered when an instance fires (worker.checks.evidence)
    actions: list[ActionField] = Field(default_factory=list)  # fixes its alerts propose (worker.actions)
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
        if self.database == "fleet" and any(a.kind in ("terminate_session", "cancel_blocker", "vacuum_table",
                                                       "drop_slot") for a in self.actions):
            raise ValueError("actions: a check of the fleet's own database proposes no fix to it")
        if self.kind != "sql" and self.evidence:
            raise ValueError("evidence: a probe has no database to ask; evidence is for sql checks")
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
        problem = read_only_problem(v, "a check")
        if problem:
            raise ValueError(problem)
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


@dataclass(frozen=True)
class Scheduled:
    """One check on one target, as beat schedules it (the composer, worker/beat.py, pairs them)."""

    check: Check
    target: str | None = None  # the target a run is given; None: the check has one, and needs none
    key: str = ""  # the target's key in the fleet's state ("": the fleet's own, or the implicit default)
    queue: str | None = None  # the target's own queue, if it has one

    @property
    def queue_name(self) -> str:
        return queue_for(self.check) if self.check.database == "fleet" else (self.queue or queue_for(self.check))

    @property
    def entry(self) -> str:
        return f"check:{self.check.name}" if self.target is None else f"check:{self.check.name}@{self.target}"


def beat_entries(runs: Iterable[Scheduled | Check]) -> dict[str, dict[str, Any]]:
    """The checks as beat sends them (stale runs expire instead of piling up). The enabled checks of one
    target that share a schedule and a queue go as one checks.run_batch, evaluated one after another on
    the target's kept connection (a fleet of 300 targets sends 300 tasks a minute, not 6,300: a Celery
    task's own cost, a few ms, was most of an evaluation's, bench/targets.py); a check alone on its
    schedule goes as checks.run, as before. Each check still claims its own (check, target, slot)."""
    groups: dict[tuple, list[Scheduled]] = {}
    for run in runs:
        run = run if isinstance(run, Scheduled) else Scheduled(run)
        if run.check.enabled:
            groups.setdefault((run.target, run.check.schedule.text, run.queue_name, run.queue is not None), []).append(run)
    out = {}
    for (target, schedule, queue, own_queue), group in groups.items():
        where = {"target": target} if target is not None else {}
        if len(group) == 1:
            out[group[0].entry] = beat_entry("checks.run", group[0].check.schedule.celery_schedule(),
                                             {"name": group[0].check.name, **where}, expires=300, queue=queue,
                                             own_queue=own_queue)
        else:
            name = f"checks[{schedule}]" + (f"@{target}" if target is not None else "") + \
                   ("" if queue == "checks" else f":{queue}")
            out[name] = beat_entry("checks.run_batch", group[0].check.schedule.celery_schedule(),
                                   {"names": [r.check.name for r in group], **where}, expires=300, queue=queue,
                                   own_queue=own_queue)
    return out
