"""Declarative config under config/ (OPSFLEET_CONFIG_DIR): checks, routing, maintenance, backlogs.

The loader only: each file is parsed into its domain's model (worker.checks.spec, notify.routing,
maintenance.spec, backlog.spec), every error names file:line and field, and what spans files (a
runbook's path, a task a check or backlog names) is checked here. Reading config needs no broker and
no database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from worker.backlog.spec import Backlog, BacklogsFile
from worker.checks.spec import Check, ChecksFile
from worker.fleet.errors import ConfigError
from worker.fleet.names import KNOWN_TASKS
from worker.fleet.settings import get_settings
from worker.fleet.yamlfile import YamlDoc, load_yaml
from worker.maintenance.spec import MaintenanceFile, MaintenanceJob
from worker.notify.routing import Routing


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
