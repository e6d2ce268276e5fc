"""`opsfleet report weekly|monthly [--target NAME]`: seed 000's weekly performance review or monthly
growth analysis, rendered here into one HTML file (charts inline as data: URIs), the same report the
beat emails: of DATABASE_URL without targets.yaml, else of a target whose packs name the confirmations
pack (--target; needed when several do)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.common import settings

report_app = typer.Typer(no_args_is_help=True, help="The confirmation system's reports (weekly performance, monthly growth) as HTML files.")


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
TargetOption = Annotated[str | None, typer.Option(
    "--target", help="the target whose report it is (config/targets.yaml; one whose packs name the confirmations "
                     "pack); needed when several do")]
OutOption = Annotated[Path | None, typer.Option(
    "--out", dir_okay=False, help="the HTML file to write; default ./opsfleet-report-<kind>-<period>.html")]


def _target(given: str | None):
    """The target the report is of (worker.reports.spec.report_targets); ArgumentError, one line, exit 2,
    for an unknown one, one without the confirmations pack, or none given when several have it."""
    from worker.cli.common import target_named
    from worker.config import get_config
    from worker.fleet.errors import ArgumentError
    from worker.reports import spec

    cfg = get_config()
    if given is not None:
        target_named(given)  # an unknown one: the option, the targets
        try:
            return spec.report_target(cfg, given)
        except ValueError as exc:
            raise ArgumentError(f"--target {given!r}: {exc}") from None
    chosen = spec.report_targets(cfg)
    if len(chosen) != 1:
        with_pack = ", ".join(t.name for t in chosen) or f"none does: add {spec.PACK} to a target's packs"
        raise ArgumentError(f"--target: the reports are of the targets with the {spec.PACK} pack ({with_pack}): "
                            "name one with --target")
    return chosen[0]


def _write(kind: str, out: Path | None, now: datetime | None, target: str | None) -> None:
    from worker.fleet.db import ping
    from worker.fleet.logs import get_logger
    from worker.reports import queries, render

    at = now or datetime.now(UTC)  # (a bad --now was refused by its callback, before any setting is read)
    settings()
    t = _target(target)
    engine = queries.engine_for(t)
    ping(engine, f"the database of target {t.name}" if t.where else "the monitored database (DATABASE_URL)")
    data = queries.collect(kind, engine, at, target=t.name if t.where else None)
    of = f"-{t.name}" if t.where else ""
    path = out or Path.cwd() / f"opsfleet-report-{kind}{of}-{queries.period(data)}.html"
    render.write_file(data, path)
    get_logger("worker.cli.report").info("report_written", report=kind, period=queries.period(data), path=str(path), target=t.name)
    typer.echo(str(path))


@report_app.command("weekly")
def weekly(out: OutOption = None, now: NowOption = None, target: TargetOption = None) -> None:
    """The weekly performance review with its charts, as one HTML file (of one target with --target)."""
    _write("weekly", out, now, target)


@report_app.command("monthly")
def monthly(out: OutOption = None, now: NowOption = None, target: TargetOption = None) -> None:
    """The monthly growth analysis with its chart, as one HTML file (of one target with --target)."""
    _write("monthly", out, now, target)
