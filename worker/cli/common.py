"""What every command group shares: stdout for results (tables, or JSON with --json), stderr for
progress, errors and log lines (WARNING and above unless `opsfleet -v`), settings.

A command imports what it runs: the settings (pydantic, and celery's schedules through the durations)
and logging (structlog) are imported by `settings()`, which every command that needs them calls first,
not by `opsfleet --help` (tests/fleet/test_imports.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from worker.fleet.settings import Settings

# Where stdout is not a terminal (a pipe, a file, a CI log) a table is never cut to 80 columns: names
# and ids are printed whole, for grep and for people alike.
console = Console(width=None if sys.stdout.isatty() else 4096)
err = Console(stderr=True, markup=False)  # errors name fields as checks[name]: never markup
VERBOSITY = {"level": "WARNING"}  # `opsfleet -v`: INFO, `-vv`: DEBUG


def settings() -> Settings:
    """The environment's settings (one clear line on a bad variable), with logging set up: log lines
    go to stderr, at WARNING and above unless -v."""
    from worker.fleet.logs import configure_logging
    from worker.fleet.settings import get_settings

    s = get_settings()
    configure_logging(level=VERBOSITY["level"])
    return s


def target_named(given: str | None, option: str = "--target") -> Any:
    """The target `--target` names (worker.targets.Target), None when not given; ArgumentError (one line,
    exit 2) naming the option and the targets when it names none."""
    from worker.config import get_config
    from worker.fleet.errors import ArgumentError

    if given is None:
        return None
    targets = get_config().targets
    if given not in targets:
        raise ArgumentError(f"{option} {given!r}: no such target (targets: {', '.join(targets)}; "
                            "`opsfleet targets list`)")
    return targets[given]


def labels_text(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "-"


def table(*columns: str, title: str | None = None) -> Table:
    """A table whose cells wrap instead of being cut with an ellipsis."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def emit_json(data: Any) -> None:
    """One JSON document on stdout (datetimes as ISO 8601)."""
    sys.stdout.write(json.dumps(data, indent=2, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v))
                     + "\n")


def rows(records: Iterable[Any], fields: Sequence[str]) -> list[dict[str, Any]]:
    """Records (mappings or objects) as dicts of exactly `fields`, in order: the JSON shape of a list."""
    out = []
    for r in records:
        get = r.get if isinstance(r, dict) else (lambda k, r=r: getattr(r, k, None))
        out.append({f: get(f) for f in fields})
    return out
