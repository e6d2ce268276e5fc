"""Declarative config under config/ (OPSFLEET_CONFIG_DIR): checks, routing, maintenance, backlogs.

The loader only: each file is parsed into its domain's model (worker.checks.spec, notify.routing,
maintenance.spec, backlog.spec), every error names file:line and field, and what spans files (a
runbook's path, a task a check or backlog names) is checked here. Reading config needs no broker and
no database.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from worker import packs as packs_mod
from worker import targets as targets_mod
from worker.backlog.spec import JOBS, Backlog, BacklogsFile
from worker.checks.spec import Check, ChecksFile, Scheduled
from worker.fleet.errors import ConfigError, OpsfleetError
from worker.fleet.logs import get_logger
from worker.fleet.names import KNOWN_TASKS
from worker.fleet.runs import Place
from worker.fleet.settings import get_settings
from worker.fleet.yamlfile import YamlDoc, load_yaml
from worker.maintenance.spec import MaintenanceFile, MaintenanceJob
from worker.notify.routing import Routing
from worker.reports.spec import Reports

log = get_logger(__name__)


@dataclass
class FleetConfig:
    root: Path
    checks: dict[str, Check] = field(default_factory=dict)
    check_files: dict[str, str] = field(default_factory=dict)  # check name -> file:line
    check_pack: dict[str, str | None] = field(default_factory=dict)  # check name -> its pack (None: the folder's own)
    routing: Routing | None = None
    reports: Reports | None = None  # the `reports:` section of routing.yaml (or, deprecated, digest's schedules)
    targets: dict[str, targets_mod.Target] = field(default_factory=dict)  # the databases watched, in order
    targets_declared: bool = False  # config/targets.yaml exists (else the one `default` target)
    maintenance: dict[str, MaintenanceJob] = field(default_factory=dict)
    job_docs: dict[str, tuple[YamlDoc, int]] = field(default_factory=dict)  # job -> its file and index there
    job_pack: dict[str, str | None] = field(default_factory=dict)
    backlogs: dict[str, Backlog] = field(default_factory=dict)
    backlog_pack: dict[str, str | None] = field(default_factory=dict)  # backlog name -> its pack (None: the folder's own)
    packs: dict[str, packs_mod.Pack] = field(default_factory=dict)  # the enabled packs, in order
    _bases: dict[str, Path] = field(default_factory=dict)  # check -> the folder its runbook path is relative to

    def job_field(self, job: str, field_name: str) -> str:
        """`file:line: jobs[name].field` of a maintenance job's field (the job's first line if the field is unset)."""
        if job not in self.job_docs:
            return f"maintenance job {job}"
        doc, i = self.job_docs[job]
        loc = ("jobs", i, *(int(p) if p.isdigit() else p for p in field_name.split(".")))
        return f"{doc.where(loc)}: {doc.field(loc)}"

    def runbooks(self) -> dict[str, Path]:
        """Each runbook a check names (its path as written, `ops/runbooks/x.md`) -> the file."""
        return {c.runbook: self._bases.get(n, self.root.parent) / c.runbook
                for n, c in self.checks.items() if c.runbook}

    def targets_of(self, check: str) -> list[str]:
        """The targets `check` runs for: every target whose packs name its pack (a check of the config
        folder's own: every target); [FLEET] for what runs once for the whole fleet (the fleet's own
        checks, http and redis probes)."""
        c = self.checks[check]
        if c.kind != "sql" or c.database == "fleet":
            return [targets_mod.FLEET]
        pack = self.check_pack.get(check)
        return [t.name for t in self.targets.values() if pack is None or pack in t.packs]

    def target_for(self, check: str, given: str | None) -> targets_mod.Target | None:
        """The target a run of `check` is for: `given`, or the check's one target; None for the fleet's
        own checks (they run once). ValueError, one line, when `given` is not a target or not the
        check's, or when the check runs on several and none is given."""
        return self._pick(f"check {check}", self.targets_of(check), given)

    def _pick(self, what: str, on: list[str], given: str | None) -> targets_mod.Target | None:
        """`given` if it is one of `on` (the targets `what` runs on), else the one of `on`; ValueError,
        one line, otherwise (target_for and job_target_for share the rule)."""
        if given is not None:
            if given not in self.targets:
                raise ValueError(f"no target {given!r} (targets: {', '.join(self.targets)}; `opsfleet targets list`)")
            if given not in on:
                where = ", ".join(t for t in on if t) or "the fleet itself, once (no target)"
                raise ValueError(f"{what} does not run on target {given!r} (it runs on: {where})")
            return self.targets[given]
        if len(on) > 1:
            raise ValueError(f"{what} runs on {len(on)} targets ({', '.join(on)}): name one with target")
        if not on:
            raise ValueError(f"{what} runs on no target: no target's packs name its pack")
        return self.targets.get(on[0])

    def scheduled_checks(self) -> list[Scheduled]:
        """Every (check, target) beat runs: a check once per target its pack is on, the fleet's own
        once. A run names its target when the check has several (or the target is declared)."""
        out = []
        for name, check in self.checks.items():
            for t in self.targets_of(name):
                target = self.targets.get(t)
                if target is None:  # the fleet's own
                    out.append(Scheduled(check))
                else:
                    out.append(Scheduled(check, target.name if target.where else None, target.key, target.queue))
        return out

    # -- maintenance jobs and backlogs, per target --------------------------------------------------------
    def _on(self, pack: str | None) -> list[str]:
        """The targets whose packs name `pack` (None, the config folder's own: every target); [FLEET]
        for the fleet pack's, which run once for the fleet."""
        if pack == "fleet":
            return [targets_mod.FLEET]
        return [t.name for t in self.targets.values() if pack is None or pack in t.packs]

    def job_targets(self, family: str, job: str) -> list[str]:
        """The targets a maintenance job (family `maintenance`, by name) or a backlog task's job (family
        `backlog`, by the name its runs have: reprocess_confirmations) runs on: once per target that
        enables its pack, once for the fleet (FLEET) for the fleet pack's and fleet_retention jobs. A
        backlog task no backlog of the config names runs where the other backlogs do (the backlog tasks
        work the same tables), and with no backlog at all on every target (by hand, as before targets)."""
        if family == "maintenance":
            if self.maintenance[job].kind == "fleet_retention":
                return [targets_mod.FLEET]
            return self._on(self.job_pack.get(job))
        packs = ({self.backlog_pack.get(n) for n, b in self.backlogs.items() if b.job == job}
                 or {self.backlog_pack.get(n) for n in self.backlogs})
        on = {t for p in packs or {None} for t in self._on(p)}
        return [t for t in [targets_mod.FLEET, *self.targets] if t in on]

    def job_target_for(self, family: str, job: str, given: str | None) -> targets_mod.Target | None:
        """The target a run of a job is for: `given`, or the job's one target; None for what runs once
        for the fleet. ValueError, one line, when `given` is not a target or not the job's, or when the
        job runs on several and none is given (the same rule as target_for, for checks)."""
        what = f"maintenance job {job}" if family == "maintenance" else f"backlog {job}"
        return self._pick(what, self.job_targets(family, job), given)

    def _place(self, t: str) -> Place:
        target = self.targets.get(t)
        return Place() if target is None else Place(target.name if target.where else None, target.key)

    def scheduled_maintenance(self) -> list[tuple[MaintenanceJob, Place]]:
        """Every (job, target) beat runs: once per target its pack is on, the fleet's own once."""
        return [(job, self._place(t)) for name, job in self.maintenance.items() for t in self.job_targets("maintenance", name)]

    def scheduled_backlogs(self) -> list[tuple[Backlog, Place]]:
        """Every (backlog, target) beat runs: once per target its pack is on."""
        return [(b, self._place(t)) for name, b in self.backlogs.items() for t in self._on(self.backlog_pack.get(name))]

    # -- what a disabled pack has ---------------------------------------------------------------------------
    def pack_off(self, kind: str, name: str) -> str | None:
        """When `name` (a check, a maintenance `job`, or a `backlog` task's job) is not in this config
        because the pack that has it is not enabled: one line naming the pack and how to enable it;
        else None. Reads only the yaml of the packs that are there but off, and only when asked (a task
        or a command refusing a name), so loading the config stays as it was."""
        if name in (self.checks if kind == "check" else self.maintenance if kind == "job" else ()):
            return None
        if kind == "backlog" and self.backlogs:
            return None  # a backlog task no backlog names runs where the others do (their tables are there)
        file, key, field_name = {"check": ("checks", "checks", "name"), "job": ("maintenance", "jobs", "name"),
                                 "backlog": ("backlogs", "backlogs", "task")}[kind]
        for pack, folder in packs_mod.available(self.root).items():
            if pack in self.packs:
                continue
            paths = [folder / f"{file}.yaml", *sorted((folder / file).glob("*.yaml"))]
            docs = [load_yaml(p).data for p in paths if p.is_file()]
            items = [i for d in docs if isinstance(d, dict) for i in (d.get(key) or []) if isinstance(i, dict)]
            if name in {JOBS.get(i[field_name], i[field_name]) for i in items if isinstance(i.get(field_name), str)}:
                what = {"check": "check", "job": "maintenance job", "backlog": "backlog"}[kind]
                return (f"{what} {name} belongs to pack {pack}, which is not enabled: enable it with "
                        f"{packs_mod.ENV}={pack} (comma-separated, or all) or in {self.root / packs_mod.PACKS_FILE}, "
                        f"or add it to a target's packs in {self.root / targets_mod.TARGETS_FILE}")
        return None

    def unknown_check(self, name: str) -> str:
        """`unknown check 'x' (did you mean 'y'?)`, or that it is a check of a pack not enabled here
        (pack_off's line)."""
        from worker.fleet.calls import closest

        hint = closest(name, self.checks)
        if not hint and self.root.is_dir():
            with contextlib.suppress(OpsfleetError):
                off = self.pack_off("check", name)
                if off:
                    return off
        return f"unknown check {name!r}{hint}"

    def check_field(self, check: str) -> str:
        """`file:line: checks[name]` of a check."""
        return self.check_files.get(check, f"check {check}")


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

    targets_path = root / targets_mod.TARGETS_FILE
    if targets_path.exists():
        known = packs_mod.available(root)
        cfg.targets = targets_mod.load(load_yaml(targets_path), set(known))
        cfg.targets_declared = True
        for name in dict.fromkeys(p for t in cfg.targets.values() for p in t.packs):
            if name not in cfg.packs:  # a pack a target names, that packs.yaml does not enable
                doc = load_yaml(known[name] / packs_mod.PACK_FILE)
                cfg.packs[name] = packs_mod.Pack(name, known[name], _parse(doc, packs_mod.PackSpec), doc)
                _load_folder(cfg, known[name], name, known[name].parent.parent)
    else:
        cfg.targets = targets_mod.implicit(list(cfg.packs))

    routing_path = root / "routing.yaml"
    if routing_path.exists():
        routing_doc = load_yaml(routing_path)
        cfg.routing = _without_disabled_channels(_parse(routing_doc, Routing), cfg.packs)
        cfg.reports = _reports(routing_doc, cfg.routing)
    _cross_check(cfg)
    return cfg


def _reports(doc: YamlDoc, routing: Routing) -> Reports | None:
    """The reports' section; without one, the schedules a routing.yaml of before keeps under `digest:`
    (weekly_schedule, monthly_schedule), with a deprecation line, and no reports without a digest."""
    if routing.reports is not None:
        try:
            return Reports.model_validate(routing.reports)
        except ValidationError as exc:
            raise doc.validation_error(exc, ("reports",)) from None
    digest = routing.digest
    if digest is None:
        return None
    old = {f: getattr(digest, f) for f in ("weekly_schedule", "monthly_schedule") if f in digest.model_fields_set}
    for f in old:
        log.warning("config_deprecated", where=doc.where(("digest", f)),
                    message=f"digest.{f} is deprecated: move it to reports.{f.removesuffix('_schedule')} "
                            "(see config/README.md)")
    defaults = Reports()
    return Reports(channel=digest.channel, weekly=old.get("weekly_schedule", defaults.weekly),
                   monthly=old.get("monthly_schedule", defaults.monthly))


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
                raise ConfigError(f"{where}: checks.{i}.name: {check.name!r} is already defined at "
                                  f"{cfg.check_files[check.name]}")
            cfg.checks[check.name] = check
            cfg.check_files[check.name] = f"{where}: {doc.field(('checks', i))}"
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
            cfg.backlog_pack[b.name] = pack


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
