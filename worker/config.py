"""Declarative config under config/ (OPSFLEET_CONFIG_DIR): checks, routing, maintenance, backlogs.

The loader only: each file is parsed into its domain's model (worker.checks.spec, notify.routing,
maintenance.spec, backlog.spec), every error names file:line and field, and what spans files (a
runbook's path, a task a check or backlog names) is checked here. Reading config needs no broker and
no database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from worker import packs as packs_mod
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
    check_pack: dict[str, str | None] = field(default_factory=dict)  # check name -> its pack (None: the folder's own)
    routing: Routing | None = None
    maintenance: dict[str, MaintenanceJob] = field(default_factory=dict)
    job_docs: dict[str, tuple[YamlDoc, int]] = field(default_factory=dict)  # job -> its file and index there
    job_pack: dict[str, str | None] = field(default_factory=dict)
    backlogs: dict[str, Backlog] = field(default_factory=dict)
    packs: dict[str, packs_mod.Pack] = field(default_factory=dict)  # the enabled packs, in order
    _bases: dict[str, Path] = field(default_factory=dict)  # check -> the folder its runbook path is relative to

    def job_field(self, job: str, field_name: str) -> str:
        """`file:line: jobs.N.field` of a maintenance job's field (the job's first line if the field is unset)."""
        if job not in self.job_docs:
            return f"maintenance job {job}"
        doc, i = self.job_docs[job]
        loc = ("jobs", i, *(int(p) if p.isdigit() else p for p in field_name.split(".")))
        return f"{doc.where(loc)}: jobs.{i}.{field_name}"

    def runbooks(self) -> dict[str, Path]:
        """Each runbook a check names (its path as written, `ops/runbooks/x.md`) -> the file."""
        return {c.runbook: self._bases.get(n, self.root.parent) / c.runbook
                for n, c in self.checks.items() if c.runbook}

    def check_field(self, check: str) -> str:
        """`file:line: checks.N (name)` of a check."""
        return f"{self.check_files.get(check, 'check')} ({check})"


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


def load_config(root: Path | str | None = None, *, packs: str | list[str] | None = None) -> FleetConfig:
    """The config folder: its own checks/, maintenance.yaml and backlogs.yaml, the packs it enables
    (packs.yaml; `packs` or OPSFLEET_PACKS override it: names, or `all`), and routing.yaml."""
    if root is None:
        root = get_settings().opsfleet_config_dir
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: config folder not found (set OPSFLEET_CONFIG_DIR to the folder holding checks/)")
    cfg = FleetConfig(root=root)
    _load_folder(cfg, root, None, root.parent)

    packs_doc = load_yaml(root / packs_mod.PACKS_FILE) if (root / packs_mod.PACKS_FILE).exists() else None
    packs_file = _parse(packs_doc, packs_mod.PacksFile) if packs_doc is not None else None
    for name, folder in packs_mod.enabled(root, packs, packs_doc, packs_file):
        doc = load_yaml(folder / packs_mod.PACK_FILE)
        cfg.packs[name] = packs_mod.Pack(name, folder, _parse(doc, packs_mod.PackSpec), doc)
        _load_folder(cfg, folder, name, folder.parent.parent)

    routing_path = root / "routing.yaml"
    if routing_path.exists():
        cfg.routing = _without_disabled_channels(_parse(load_yaml(routing_path), Routing), cfg.packs)
    _cross_check(cfg)
    return cfg


def _load_folder(cfg: FleetConfig, folder: Path, pack: str | None, base: Path) -> None:
    """One folder's checks (checks.yaml, checks/*.yaml), maintenance.yaml and backlogs.yaml."""
    files = ([folder / "checks.yaml"] if (folder / "checks.yaml").exists() else [])
    files += sorted((folder / "checks").glob("*.yaml")) if (folder / "checks").is_dir() else []
    for path in files:
        doc = load_yaml(path)
        parsed: ChecksFile = _parse(doc, ChecksFile)
        for i, check in enumerate(parsed.checks):
            where = doc.where(("checks", i, "name"))
            if check.name in cfg.checks:
                raise ConfigError(f"{where}: checks.{i}.name: {check.name!r} is already defined at {cfg.check_files[check.name]}")
            cfg.checks[check.name] = check
            cfg.check_files[check.name] = f"{where}: checks.{i}"
            cfg.check_pack[check.name] = pack
            cfg._bases[check.name] = base

    if (folder / "maintenance.yaml").exists():
        doc = load_yaml(folder / "maintenance.yaml")
        for i, job in enumerate(_parse(doc, MaintenanceFile).jobs):
            if job.name in cfg.maintenance:
                raise doc.error(("jobs", i, "name"), f"{job.name!r} is defined twice (also in {cfg.job_docs[job.name][0].path})")
            cfg.maintenance[job.name] = job
            cfg.job_docs[job.name] = (doc, i)
            cfg.job_pack[job.name] = pack

    if (folder / "backlogs.yaml").exists():
        doc = load_yaml(folder / "backlogs.yaml")
        for i, b in enumerate(_parse(doc, BacklogsFile).backlogs):
            if b.name in cfg.backlogs:
                raise doc.error(("backlogs", i, "name"), f"{b.name!r} is defined twice")
            if b.task not in KNOWN_TASKS:
                raise doc.error(("backlogs", i, "task"), f"unknown task {b.task!r} (known: {', '.join(sorted(KNOWN_TASKS))})")
            cfg.backlogs[b.name] = b


def _without_disabled_channels(routing: Routing, enabled: dict[str, Any]) -> Routing:
    """A channel that names a pack (`pack: ace_engage`: seed 001's system_alerts) is left out, with its
    place in every route, while that pack is not enabled; one with `when_set: VARIABLE` while that
    variable is empty (PagerDuty without PAGERDUTY_ROUTING_KEY)."""
    off = {name for name, ch in routing.channels.items()
           if (ch.pack is not None and ch.pack not in enabled) or (ch.when_set and not os.environ.get(ch.when_set))}
    if not off:
        return routing
    return routing.model_copy(update={
        "channels": {n: c for n, c in routing.channels.items() if n not in off},
        "routes": [r.model_copy(update={"channels": [c for c in r.channels if c not in off]}) for r in routing.routes],
    })


def _cross_check(cfg: FleetConfig) -> None:
    for name, check in cfg.checks.items():
        base = cfg._bases.get(name, cfg.root.parent)
        if check.runbook and not (base / check.runbook).is_file():
            raise ConfigError(f"{cfg.check_files[name]}.runbook: {check.runbook} does not exist "
                              f"(paths are relative to {base})")
        if check.remediate and check.remediate.task not in KNOWN_TASKS:
            raise ConfigError(
                f"{cfg.check_files[name]}.remediate.task: unknown task {check.remediate.task!r} "
                f"(known: {', '.join(sorted(KNOWN_TASKS))})"
            )


@lru_cache(maxsize=1)
def get_config() -> FleetConfig:
    return load_config()
