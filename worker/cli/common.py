"""What every command group shares: stdout for results, stderr for progress and errors, settings."""

from __future__ import annotations

from rich.console import Console

from worker.fleet.logs import configure_logging
from worker.fleet.settings import Settings, get_settings

console = Console()
err = Console(stderr=True)


def settings() -> Settings:
    """The environment's settings (one clear line on a bad variable), with logging set up."""
    s = get_settings()
    configure_logging()
    return s


def labels_text(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "-"
