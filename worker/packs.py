"""Packs: one folder of checks, maintenance jobs and backlogs per system (config/<pack>/: pack.yaml,
checks.yaml, maintenance.yaml, backlogs.yaml), enabled by name in config/packs.yaml or
OPSFLEET_PACKS. A name resolves to the config folder's own <name>/ first, then to the packs opsfleet
ships (the repository's config/), so a starter config from `opsfleet init` can enable `postgres`
and `fleet` without copying them.

A pack says what it needs of the monitored database (`requires`: tables, views, functions);
`missing()` names what a database lacks, so a pack for an application that is not there is refused
at start with one line per missing object, instead of every one of its checks failing forever.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import Connection

from worker.fleet.errors import ConfigError
from worker.fleet.fields import Identifier, Name, Strict
from worker.fleet.settings import REPO_CONFIG_DIR
from worker.fleet.sqltext import quote_ident
from worker.fleet.yamlfile import YamlDoc

PACKS_FILE = "packs.yaml"
PACK_FILE = "pack.yaml"
ENV = "OPSFLEET_PACKS"  # comma-separated names, or `all`: overrides packs.yaml (the demo and the tests: all)


class Requires(Strict):
    tables: list[Identifier] = Field(default_factory=list)  # tables or views
    functions: list[Identifier] = Field(default_factory=list)


class PackSpec(Strict):
    description: str
    requires: Requires = Field(default_factory=Requires)


class PacksFile(Strict):
    enabled: list[Name] = Field(default_factory=list)


@dataclass
class Pack:
    name: str
    folder: Path
    spec: PackSpec
    doc: YamlDoc  # pack.yaml, to point at it


def shipped() -> Path:
    """Where the packs opsfleet ships are: OPSFLEET_PACKS_DIR (the image sets it), else the repository's config/."""
    return Path(os.environ.get("OPSFLEET_PACKS_DIR") or REPO_CONFIG_DIR)


def _search(root: Path) -> list[Path]:
    return [root] if root.resolve() == shipped().resolve() else [root, shipped()]


def available(root: Path) -> dict[str, Path]:
    """Every pack folder there is: the config folder's own, then the shipped ones (first wins)."""
    found: dict[str, Path] = {}
    for base in _search(root):
        if base.is_dir():
            for f in sorted(base.iterdir()):
                if (f / PACK_FILE).is_file():
                    found.setdefault(f.name, f)
    return found


def enabled(root: Path, requested: str | Iterable[str] | None, packs_doc: YamlDoc | None,
            packs_file: PacksFile | None) -> list[tuple[str, Path]]:
    """The enabled packs, in order, with their folders. `requested` (or OPSFLEET_PACKS) overrides the
    packs file: names, or `all`."""
    known = available(root)
    source = requested if requested is not None else os.environ.get(ENV) or None
    if source is not None:
        names = [n.strip() for n in (source.split(",") if isinstance(source, str) else source) if n.strip()]
        if names == ["all"]:
            return list(known.items())
        where = f"{ENV}={','.join(names)}" if requested is None else "the packs asked for"
        for n in names:
            if n not in known:
                raise ConfigError(f"{where}: no pack {n!r} (known: {', '.join(known) or 'none'})")
        return [(n, known[n]) for n in dict.fromkeys(names)]
    if packs_file is None:
        return []
    out = []
    for i, n in enumerate(packs_file.enabled):
        if n not in known:
            raise packs_doc.error(("enabled", i), f"no pack {n!r} in {root} or the shipped packs "
                                                  f"(known: {', '.join(known) or 'none'})")
        out.append((n, known[n]))
    return list(dict(out).items())


def missing(pack: Pack, conn: Connection) -> list[str]:
    """One message per object the pack requires that the database behind `conn` lacks."""
    out = []
    for t in pack.spec.requires.tables:
        if not conn.execute(sa.text("SELECT to_regclass(:n) IS NOT NULL"), {"n": quote_ident(t)}).scalar():
            out.append(f"{pack.doc.path}: pack {pack.name} needs table {t!r}, which the monitored database does not have")
    for f in pack.spec.requires.functions:
        if not conn.execute(sa.text("SELECT 1 FROM pg_proc WHERE proname = :f"), {"f": f.split(".")[-1]}).first():
            out.append(f"{pack.doc.path}: pack {pack.name} needs function {f}(), which the monitored database does not have")
    return out
