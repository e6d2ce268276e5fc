"""`opsfleet report weekly|monthly`: seed 000's weekly performance review or monthly growth analysis,
rendered here into one HTML file (charts inline as data: URIs), the same report the beat emails."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.common import settings
from worker.fleet.logs import get_logger

report_app = typer.Typer(no_args_is_help=True, help="The confirmation system's reports (weekly performance, monthly growth) as HTML files.")
log = get_logger("worker.cli.report")


def _instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 date or time (e.g. 2026-11-23T08:00:00Z)") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


NowOption = Annotated[str | None, typer.Option(
    "--now", callback=_instant, help="the report's moment, ISO 8601 (UTC unless it names a zone); default now. The weekly "
                  "report covers the 7 days before that day, the monthly the 12 months before that month")]
OutOption = Annotated[Path | None, typer.Option(
    "--out", dir_okay=False, help="the HTML file to write; default ./opsfleet-report-<kind>-<period>.html")]


def _write(kind: str, out: Path | None, now: datetime | None) -> None:
    from worker.fleet.db import monitored_engine, ping
    from worker.reports import queries, render

    at = now or datetime.now(UTC)  # (a bad --now was refused by its callback, before any setting is read)
    settings()
    engine = monitored_engine()
    ping(engine, "the monitored database (DATABASE_URL)")
    data = queries.collect(kind, engine, at)
    path = out or Path.cwd() / f"opsfleet-report-{kind}-{queries.period(data)}.html"
    render.write_file(data, path)
    log.info("report_written", report=kind, period=queries.period(data), path=str(path))
    typer.echo(str(path))


@report_app.command("weekly")
def weekly(out: OutOption = None, now: NowOption = None) -> None:
    """The weekly performance review with its charts, as one HTML file."""
    _write("weekly", out, now)


@report_app.command("monthly")
def monthly(out: OutOption = None, now: NowOption = None) -> None:
    """The monthly growth analysis with its chart, as one HTML file."""
    _write("monthly", out, now)
