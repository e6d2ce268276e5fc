"""`opsfleet maintenance` and `opsfleet backlog`: the jobs, run here with progress, and their state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from worker.cli.common import console, err, settings
from worker.fleet.errors import OpsfleetError

maint_app = typer.Typer(no_args_is_help=True, help="Maintenance jobs.")
backlog_app = typer.Typer(no_args_is_help=True, help="Backlog reprocessing (seed 000's confirmation recovery).")


@maint_app.command("run")
def maintenance_run(job: str) -> None:
    """Run one maintenance job now, in this process."""
    from worker.config import get_config
    from worker.fleet.db import fleet_engine, monitored_engine
    from worker.maintenance.jobs import run_job

    settings()
    spec = get_config().maintenance.get(job)
    if spec is None:
        raise OpsfleetError(f"unknown maintenance job {job!r}; known: {', '.join(sorted(get_config().maintenance))}")
    r = run_job(spec, monitored=monitored_engine(), fleet=fleet_engine(), now=datetime.now(UTC))
    console.print(f"{job}: {r.status}, {r.rows} rows in {r.batches} batches" + (f" ({r.error})" if r.error else ""))
    if r.status == "error":
        raise typer.Exit(1)


@backlog_app.command("status")
def backlog_status() -> None:
    """Pending confirmations, waiting or failed emails, and the backlog runs in progress."""
    from worker.backlog.status import backlog_status as status
    from worker.fleet.db import fleet_engine, monitored_engine

    settings()
    st = status(monitored_engine(), fleet_engine())
    age = st["oldest_pending_age_s"]
    t = Table("backlog", "count", title="confirmation backlog")
    t.add_row("pending confirmations", f"{st['pending_confirmations']:,}"
              + (f" (oldest {age / 60:.0f} min)" if age is not None else ""))
    for key in ("emails_pending", "emails_pending_stale", "emails_failed", "emails_bounced"):
        t.add_row(key.replace("_", " "), f"{st[key]:,}")
    console.print(t)
    runs = Table("job", "started (UTC)", "rows", "batches", "worker alive", title="running")
    for r in st["running_jobs"]:
        runs.add_row(r["job"], r["started_at"].strftime("%Y-%m-%d %H:%M:%S"), f"{r['rows_affected']:,}",
                     str(r["batches"]), "yes" if r["alive"] else "no")
    console.print(runs)
    last = Table("job", "status", "finished (UTC)", "rows", "error", title="last runs")
    for r in st["last_runs"]:
        last.add_row(r["job"], r["status"], r["finished_at"].strftime("%Y-%m-%d %H:%M:%S") if r["finished_at"] else "-",
                     f"{r['rows_affected']:,}", (r["error"] or "")[:60])
    console.print(last)


@backlog_app.command("reprocess")
def backlog_reprocess(
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many registrations")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=5000)] = 500,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count and sample, write nothing")] = False,
    older_than: Annotated[str, typer.Option(help="only registrations untouched for this long, e.g. 10m")] = "0s",
) -> None:
    """Reprocess the confirmation backlog in this process, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from worker.backlog.confirmations import confirmation_channel
    from worker.backlog.runs import reprocess
    from worker.fleet.db import fleet_engine, monitored_engine
    from worker.fleet.timeutil import parse_duration

    s = settings()
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise OpsfleetError(f"--older-than: {exc}") from None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                  TimeRemainingColumn(), console=err) as bar:
        task_id = bar.add_task("confirmations", total=None, rate="")

        def report(p) -> None:
            bar.update(task_id, completed=p.done, total=p.total or None, rate=f"{p.rate:,.0f}/s")

        try:
            result = reprocess(monitored_engine(), fleet_engine(), None if dry_run else confirmation_channel(s),
                               limit=limit, batch_size=batch_size, dry_run=dry_run, older_than=age, progress=report)
        except ValueError as exc:
            raise OpsfleetError(str(exc)) from None
    summary = result.as_dict()
    console.print(", ".join(f"{k} {v}" for k, v in summary.items() if not isinstance(v, (dict, list))))
    if result.status == "error":
        raise typer.Exit(1)
