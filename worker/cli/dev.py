"""The demo kit's commands: `opsfleet sample-app` and `opsfleet demo`. The only production module that
reaches ops/ (the sample app and the devkit), and only inside its commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.common import console, settings

sample_app = typer.Typer(no_args_is_help=True, help="The sample application (ops/sample_app/).")


@sample_app.command("init")
def sample_init() -> None:
    """Create the sample application's tables and functions in DATABASE_URL (idempotent)."""
    from ops import sample_app as app_schema
    from worker.fleet.db import monitored_engine, ping

    settings()
    engine = monitored_engine()
    ping(engine, "DATABASE_URL")
    app_schema.init(engine)
    console.print("sample app schema ready")


@sample_app.command("seed")
def sample_seed(scale: Annotated[int, typer.Option(min=100, help="number of registrations")] = 10_000,
                seed: Annotated[int, typer.Option(help="random seed")] = 42) -> None:
    """Write realistic data with planted problems (streams in batches)."""
    from ops import sample_app as app_schema
    from worker.fleet.db import monitored_engine, ping

    settings()
    engine = monitored_engine()
    ping(engine, "DATABASE_URL")
    app_schema.init(engine)
    counts = app_schema.seed_with_progress(engine, scale, seed)
    console.print(f"seeded: {sum(counts.values()):,} rows in {len(counts)} tables")


def demo(duration: Annotated[float | None, typer.Option(help="stop after S seconds (default: until Ctrl-C)")] = None,
         scale: Annotated[int, typer.Option(help="registrations to seed")] = 20_000,
         run_dir: Annotated[Path | None, typer.Option(help="folder for the embedded servers and logs")] = None) -> None:
    """Run the whole fleet on an embedded Postgres and Redis with sample data and planted problems."""
    from ops.devkit.demo import run_demo

    code = run_demo(duration=duration, scale=scale, run_dir=run_dir)
    if code:
        raise typer.Exit(code)


def demo_show(n: Annotated[int | None, typer.Argument(help="which message (1-based, as the demo numbers them); "
                                                           "default the last")] = None,
              run_dir: Annotated[Path | None, typer.Option(help="the demo's folder")] = None) -> None:
    """Print a message the demo captured, whole: an email's headers and text part, a Slack message's text."""
    from ops.devkit.demo import show

    console.print(show(n, run_dir), highlight=False, soft_wrap=True, markup=False)
