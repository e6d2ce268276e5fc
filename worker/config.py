"""Declarative config under config/ (OPSFLEET_CONFIG_DIR): checks, routing, maintenance, backlogs.

Every file is validated by pydantic at start; an error names file:line and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import jinja2.sandbox
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from worker.db import psycopg_text
from worker.errors import ConfigError
from worker.sqltext import second_statement
from worker.timeutil import Schedule, parse_duration
from worker.yamlfile import YamlDoc, load_yaml

SEVERITIES = ("critical", "high", "warning", "medium", "info")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_templates = jinja2.sandbox.SandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined)


def _duration(v: Any) -> timedelta:
    if isinstance(v, timedelta):
        return v
    return parse_duration(v)


def _schedule(v: Any) -> Schedule:
    if isinstance(v, Schedule):
        return v
    return Schedule.parse(v)


Duration = Annotated[timedelta, BeforeValidator(_duration), PlainSerializer(lambda td: td.total_seconds())]
ScheduleField = Annotated[Schedule, BeforeValidator(_schedule), PlainSerializer(lambda s: s.text)]


def _name(v: str) -> str:
    if not NAME_RE.match(v):
        raise ValueError(f"{v!r} must be snake_case: lowercase letters, digits and _, starting with a letter")
    return v


def _identifier(v: str) -> str:
    """A SQL identifier from config: optionally schema-qualified, validated before it is ever quoted."""
    parts = v.split(".")
    if len(parts) > 2 or not all(IDENT_RE.match(p) for p in parts):
        raise ValueError(f"{v!r} is not a valid SQL identifier (letters, digits, _; optionally schema.table)")
    return v


Name = Annotated[str, BeforeValidator(_name)]
Identifier = Annotated[str, BeforeValidator(_identifier)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, populate_by_name=True)


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
        return cls(m.group(1), float(m.group(2)))

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def __str__(self) -> str:
        t = int(self.threshold) if self.threshold.is_integer() else self.threshold
        return f"{self.op} {t}"


ConditionField = Annotated[Condition, BeforeValidator(Condition.parse), PlainSerializer(str)]


def _template(v: str) -> str:
    try:
        _templates.parse(v)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error: {exc.message}") from None
    return v


Template = Annotated[str, BeforeValidator(_template)]


# -- checks ----------------------------------------------------------------------------------------
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
    severity: Literal["critical", "high", "warning", "medium", "info"]
    labels: dict[str, str] = Field(default_factory=dict)
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


class ChecksFile(Strict):
    checks: list[Check] = Field(default_factory=list)


# -- routing ---------------------------------------------------------------------------------------
class Channel(Strict):
    kind: Literal["email", "slack", "table", "digest"]
    # per-channel overrides of the environment (names of settings, never secrets inline)
    recipients: list[str] | None = None
    slack_channel: str | None = None
    rate_limit: float | None = None  # messages per second for this provider target
    burst: int | None = None


class Route(Strict):
    match: dict[str, str] = Field(default_factory=dict)
    channels: list[str]
    repeat_interval: Duration = timedelta(hours=4)
    send_resolved: bool = True
    group_wait: Duration = timedelta(seconds=30)
    continue_: bool = Field(default=False, alias="continue")


class Digest(Strict):
    schedule: ScheduleField = Field(default_factory=lambda: Schedule.parse("0 8 * * *"))
    channel: str = "email"


class Routing(Strict):
    channels: dict[str, Channel]
    routes: list[Route]
    digest: Digest | None = None
    sweep_interval: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _known_channels(self) -> Routing:
        for i, route in enumerate(self.routes):
            for ch in route.channels:
                if ch not in self.channels:
                    raise ValueError(f"routes[{i}] names channel {ch!r}, which is not under `channels:`")
        if self.digest is not None and self.digest.channel not in self.channels:
            raise ValueError(f"digest.channel {self.digest.channel!r} is not under `channels:`")
        return self

    def route_for(self, labels: dict[str, str]) -> list[Route]:
        out = []
        for route in self.routes:
            if all(labels.get(k) == v for k, v in route.match.items()):
                out.append(route)
                if not route.continue_:
                    break
        return out


# -- maintenance and backlogs ----------------------------------------------------------------------
class MaintenanceJob(Strict):
    name: Name
    description: str = ""
    kind: Literal["archive", "purge", "vacuum", "sql", "fleet_retention"]
    schedule: ScheduleField
    table: Identifier | None = None
    archive_table: Identifier | None = None
    age_column: Identifier = "created_at"
    key_column: Identifier = "id"
    older_than: Duration | None = None
    where: str | None = None  # extra SQL predicate, e.g. "status = 'sent'"
    tables: list[Identifier] = Field(default_factory=list)
    function: Identifier | None = None
    batch_size: int = Field(default=5000, ge=1, le=1_000_000)
    pause: Duration = timedelta(milliseconds=50)
    max_rows: int | None = Field(default=None, ge=1)
    maintenance_log: bool = False
    timeout: Duration = timedelta(minutes=30)
    enabled: bool = True

    @model_validator(mode="after")
    def _kind_fields(self) -> MaintenanceJob:
        need: dict[str, tuple[str, ...]] = {
            "archive": ("table", "archive_table", "older_than"),
            "purge": ("table", "older_than"),
            "vacuum": ("tables",),
            "sql": ("function",),
            "fleet_retention": ("older_than",),
        }
        missing = [f for f in need[self.kind] if not getattr(self, f)]
        if missing:
            raise ValueError(f"a {self.kind} job needs {', '.join(missing)}")
        return self


class MaintenanceFile(Strict):
    jobs: list[MaintenanceJob] = Field(default_factory=list)


class Backlog(Strict):
    name: Name
    description: str = ""
    task: str
    schedule: ScheduleField
    kwargs: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class BacklogsFile(Strict):
    backlogs: list[Backlog] = Field(default_factory=list)


# -- the whole folder ------------------------------------------------------------------------------
@dataclass
class FleetConfig:
    root: Path
    checks: dict[str, Check] = field(default_factory=dict)
    check_files: dict[str, str] = field(default_factory=dict)  # check name -> file:line
    routing: Routing | None = None
    maintenance: dict[str, MaintenanceJob] = field(default_factory=dict)
    maintenance_doc: YamlDoc | None = None  # maintenance.yaml, to point at a job's field
    backlogs: dict[str, Backlog] = field(default_factory=dict)

    def job_field(self, job: str, field_name: str) -> str:
        """`file:line: jobs.N.field` of a maintenance job's field (the job's first line if the field is unset)."""
        names = list(self.maintenance)
        if self.maintenance_doc is None or job not in names:
            return f"maintenance job {job}"
        i = names.index(job)
        loc = ("jobs", i, *(int(p) if p.isdigit() else p for p in field_name.split(".")))
        return f"{self.maintenance_doc.where(loc)}: jobs.{i}.{field_name}"


def _parse(doc: YamlDoc, model: type[BaseModel], *, required: bool = True) -> Any:
    data = doc.data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise doc.error((), f"expected a mapping at the top of the file, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise doc.validation_error(exc) from None


def load_config(root: Path | str | None = None) -> FleetConfig:
    if root is None:
        from worker.settings import get_settings

        root = get_settings().opsfleet_config_dir
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: config folder not found (set OPSFLEET_CONFIG_DIR to the folder holding checks/)")
    cfg = FleetConfig(root=root)

    checks_dir = root / "checks"
    for path in sorted(checks_dir.glob("*.yaml")) if checks_dir.is_dir() else []:
        doc = load_yaml(path)
        parsed: ChecksFile = _parse(doc, ChecksFile)
        for i, check in enumerate(parsed.checks):
            where = doc.where(("checks", i, "name"))
            if check.name in cfg.checks:
                raise ConfigError(f"{where}: checks.{i}.name: {check.name!r} is already defined at {cfg.check_files[check.name]}")
            cfg.checks[check.name] = check
            cfg.check_files[check.name] = where

    routing_path = root / "routing.yaml"
    if routing_path.exists():
        cfg.routing = _parse(load_yaml(routing_path), Routing)

    maint_path = root / "maintenance.yaml"
    if maint_path.exists():
        doc = load_yaml(maint_path)
        for i, job in enumerate(_parse(doc, MaintenanceFile).jobs):
            if job.name in cfg.maintenance:
                raise doc.error(("jobs", i, "name"), f"{job.name!r} is defined twice")
            cfg.maintenance[job.name] = job
        cfg.maintenance_doc = doc

    backlog_path = root / "backlogs.yaml"
    if backlog_path.exists():
        doc = load_yaml(backlog_path)
        for i, b in enumerate(_parse(doc, BacklogsFile).backlogs):
            if b.name in cfg.backlogs:
                raise doc.error(("backlogs", i, "name"), f"{b.name!r} is defined twice")
            cfg.backlogs[b.name] = b

    _cross_check(cfg)
    return cfg


def _cross_check(cfg: FleetConfig) -> None:
    from worker.app import KNOWN_TASKS

    for name, check in cfg.checks.items():
        if check.runbook and not (cfg.root.parent / check.runbook).is_file():
            raise ConfigError(f"{cfg.check_files[name]}: checks.{name}.runbook: {check.runbook} does not exist "
                              f"(paths are relative to {cfg.root.parent})")
        if check.remediate and check.remediate.task not in KNOWN_TASKS:
            raise ConfigError(
                f"{cfg.check_files[name]}: checks.{name}.remediate.task: unknown task {check.remediate.task!r} "
                f"(known: {', '.join(sorted(KNOWN_TASKS))})"
            )
    for b in cfg.backlogs.values():
        if b.task not in KNOWN_TASKS:
            raise ConfigError(f"{cfg.root / 'backlogs.yaml'}: backlogs.{b.name}.task: unknown task {b.task!r}")


@lru_cache(maxsize=1)
def get_config() -> FleetConfig:
    return load_config()


def render(template: str, **context: Any) -> str:
    """Render a summary/details template (sandboxed; a missing name renders as an error marker)."""
    try:
        return _templates.from_string(template).render(**context)
    except Exception as exc:  # a template must never abort a check run (e.g. round() of a NULL value)
        return f"{template} [template error: {exc}]"
