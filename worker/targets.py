"""Targets: the databases one fleet watches (config/targets.yaml), pgwatch's sources for opsfleet.

    targets:
      - name: confirmations                      # [a-z0-9_]+, unique: the `target` label
        url: ${CONFIRMATIONS_DATABASE_URL}       # ${VAR} from the environment: no secret in YAML
        maintenance_url: ${CONFIRMATIONS_MAINTENANCE_URL}   # optional (default: url)
        packs: [postgres, confirmations]
        labels: {team: payments}                 # optional, on every alert of the target
        queue: checks                            # optional: a queue of its own for its checks

Without the file, DATABASE_URL (and MAINTENANCE_DATABASE_URL) is one target named `default` with the
packs config/packs.yaml (or OPSFLEET_PACKS) enables: a deployment of before runs unchanged.

A check of a pack runs once per target whose `packs` names it; a check of the config folder's own
runs on every target; the fleet's own checks (`database: fleet`) and the http/redis probes run once,
for the fleet, not per target (their state's target is "", `FLEET`).

In the fleet's state the `target` column holds the target's `key`: its name, or "" for the implicit
default target (so a fleet of one database keeps its state where it was, migration 0008) and for
what runs once for the fleet. The `target` label is on every alert of a declared target and part of
its fingerprint, except `default`'s: a targets.yaml that names the old database `default` adopts its
alerts as they are (checks.state.fingerprint, checks.store.load_instances).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationError

from worker.fleet.errors import ConfigError
from worker.fleet.fields import Name, Strict
from worker.fleet.yamlfile import YamlDoc

TARGETS_FILE = "targets.yaml"
DEFAULT = "default"
FLEET = ""  # the target of what runs once for the whole fleet (the fleet pack, probes)
FLEET_LABEL = "fleet"  # its `target` label on /metrics and the heartbeat's lines: no target may be named so
NAME = re.compile(r"^[a-z0-9_]+$")
QUEUE = re.compile(r"^[a-z0-9_.-]+$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TargetSpec(Strict):
    name: str
    url: str
    maintenance_url: str | None = None
    packs: list[Name] = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    queue: str | None = None


class TargetsFile(Strict):
    targets: list[TargetSpec] = Field(min_length=1)


@dataclass(frozen=True)
class Target:
    name: str
    packs: tuple[str, ...]
    url: str | None = None  # None: DATABASE_URL (the default target without targets.yaml)
    maintenance_url: str | None = None  # None: url, or MAINTENANCE_DATABASE_URL for the default target
    labels: dict[str, str] = field(default_factory=dict)
    queue: str | None = None
    where: str = ""  # targets.yaml:line of its entry ("" for the implicit default)

    @property
    def key(self) -> str:
        """What the fleet's state calls it: its name, "" for the implicit default."""
        return self.name if self.where else FLEET

    def database_url(self, settings: Any) -> str:
        """Where its checks read (a monitoring role)."""
        return self.url or settings.require_database_url()

    def maintenance_database_url(self, settings: Any) -> str:
        """Where its maintenance jobs and backlogs write."""
        if self.url is None:
            return self.maintenance_url or settings.require_maintenance_database_url()
        return self.maintenance_url or self.url

    def alert_labels(self) -> dict[str, str]:
        """What every alert of the target carries: its own labels, then `target`; nothing for the
        implicit default target (a fleet of one database shows its alerts as it always did)."""
        if not self.where:
            return {}
        return {**self.labels, "target": self.name}


def implicit(packs: list[str]) -> dict[str, Target]:
    """The one target of a deployment without targets.yaml: DATABASE_URL, every enabled pack."""
    return {DEFAULT: Target(DEFAULT, tuple(packs))}


def load(doc: YamlDoc, known_packs: set[str], environ: dict[str, str] | None = None) -> dict[str, Target]:
    """targets.yaml's targets, by name, in order. One line naming file:line and field for a target
    named twice, a name that is not a label value, a pack that does not exist, or an unset ${VAR}."""
    env = os.environ if environ is None else environ
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise doc.error((), f"expected a mapping with `targets:`, got {type(data).__name__}")
    try:
        parsed = TargetsFile.model_validate(data)
    except ValidationError as exc:
        raise doc.validation_error(exc) from None
    out: dict[str, Target] = {}
    for i, spec in enumerate(parsed.targets):
        if not NAME.match(spec.name):
            raise doc.error(("targets", i, "name"), f"{spec.name!r} is not a valid target name: lowercase letters, "
                                                   "digits and _ (it becomes the `target` label)")
        if spec.name == FLEET_LABEL:
            raise doc.error(("targets", i, "name"), f"{FLEET_LABEL!r} is reserved: it is the `target` label of what runs "
                                                   "once for the whole fleet (name the database otherwise, e.g. fleet_db)")
        if spec.name in out:
            raise doc.error(("targets", i, "name"), f"{spec.name!r} is named twice (also at {out[spec.name].where})")
        for j, pack in enumerate(spec.packs):
            if pack not in known_packs:
                raise doc.error(("targets", i, "packs", j), f"no pack {pack!r} (known: {', '.join(sorted(known_packs))})")
        if spec.queue is not None and not QUEUE.match(spec.queue):
            raise doc.error(("targets", i, "queue"), f"{spec.queue!r} is not a queue name (letters, digits, _ . -)")
        for key in spec.labels:
            if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", key) or key == "target":
                raise doc.error(("targets", i, "labels", key), f"{key!r} cannot be a label name here"
                                                               " (a name like team_name; `target` is the target's own)")
        url = _expand(doc, ("targets", i, "url"), spec.url, env)
        maint = _expand(doc, ("targets", i, "maintenance_url"), spec.maintenance_url, env) if spec.maintenance_url else None
        out[spec.name] = Target(spec.name, tuple(dict.fromkeys(spec.packs)), url, maint, dict(spec.labels), spec.queue,
                                doc.where(("targets", i, "name")))
    return out


def _expand(doc: YamlDoc, loc: tuple, text: str, env: Any) -> str:
    """`${VAR}` from the environment, every one set; a URL written out is taken as it is (a password in
    it stays in the YAML: the README says to use a variable)."""
    missing = [m.group(1) for m in _VAR.finditer(text) if not env.get(m.group(1))]
    if missing:
        raise doc.error(loc, f"${{{missing[0]}}} is not set: export it where the workers and the beat run "
                             "(a database URL stays in the environment, never in the YAML)")
    value = _VAR.sub(lambda m: env[m.group(1)], text).strip()
    if not value:
        raise ConfigError(f"{doc.where(loc)}: {'.'.join(str(p) for p in loc)}: empty")
    return value
