"""`opsfleet maintenance` and `opsfleet backlog`: the jobs, run here with progress, and their state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from worker.cli.common import console, emit_json, err, settings, table
from worker.fleet.errors import OpsfleetError

maint_app = typer.Typer(no_args_is_help=True, help="Maintenance jobs.")
backlog_app = typer.Typer(no_args_is_help=True, help="Backlog reprocessing: paid registrations that never got a confirmation.")


@maint_app.command("run")
def maintenance_run(job: str) -> None:
    """Run one maintenance job now, in this process."""
    from worker.config import get_config
    from worker.fleet.db import fleet_engine, maintenance_engine
    from worker.maintenance.jobs import run_job

    settings()
    spec = get_config().maintenance.get(job)
    if spec is None:
        raise OpsfleetError(f"unknown maintenance job {job!r}; known: {', '.join(sorted(get_config().maintenance))}")
    r = run_job(spec, monitored=maintenance_engine(), fleet=fleet_engine(), now=datetime.now(UTC))
    console.print(f"{job}: {r.status}, {r.rows} rows in {r.batches} batches" + (f" ({r.error})" if r.error else ""))
    if r.status == "error":
        raise typer.Exit(1)


JOB_FIELDS = ("name", "pack", "kind", "schedule", "enabled", "last_run_at", "last_status", "last_rows", "last_error")


@maint_app.command("list")
def maintenance_list(json_out: Annotated[bool, typer.Option("--json", help="a JSON list: " + ", ".join(JOB_FIELDS))] = False
                     ) -> None:
    """Every maintenance job of the enabled packs with its last run."""
    from worker.config import get_config
    from worker.fleet.db import fleet_engine
    from worker.fleet.runs import last_by_job

    settings()
    cfg = get_config()
    last = last_by_job(fleet_engine())
    records = [{"name": name, "pack": cfg.job_pack.get(name), "kind": j.kind, "schedule": j.schedule.text,
                "enabled": j.enabled, "last_run_at": last.get(name, {}).get("started_at"),
                "last_status": last.get(name, {}).get("status"), "last_rows": last.get(name, {}).get("rows_affected"),
                "last_error": last.get(name, {}).get("error")} for name, j in sorted(cfg.maintenance.items())]
    if json_out:
        emit_json(records)
        return
    t = table("job", "pack", "kind", "schedule", "last run (UTC)", "status", "rows", "error")
    for r in records:
        t.add_row(r["name"] if r["enabled"] else f"[dim]{r['name']} (disabled)[/]", r["pack"] or "-", r["kind"],
                  r["schedule"], r["last_run_at"].strftime("%Y-%m-%d %H:%M:%S") if r["last_run_at"] else "-",
                  r["last_status"] or "-", "-" if r["last_rows"] is None else f"{r['last_rows']:,}", r["last_error"] or "")
    console.print(t)


@backlog_app.command("status")
def backlog_status(json_out: Annotated[bool, typer.Option("--json", help="one JSON document")] = False) -> None:
    """Pending confirmations, waiting or failed emails, and the backlog runs in progress."""
    from worker.backlog.status import backlog_status as status
    from worker.fleet.db import fleet_engine, monitored_engine

    settings()
    st = status(monitored_engine(), fleet_engine())
    if json_out:
        emit_json(st)
        return
    age = st["oldest_pending_age_s"]
    t = table("backlog", "count", title="confirmation backlog")
    t.add_row("pending confirmations", f"{st['pending_confirmations']:,}"
              + (f" (oldest {age / 60:.0f} min)" if age is not None else ""))
    for key in ("emails_pending", "emails_pending_stale", "emails_failed", "emails_bounced"):
        t.add_row(key.replace("_", " "), f"{st[key]:,}")
    console.print(t)
    runs = table("job", "started (UTC)", "rows", "batches", "worker alive", title="running")
    for r in st["running_jobs"]:
        runs.add_row(r["job"], r["started_at"].strftime("%Y-%m-%d %H:%M:%S"), f"{r['rows_affected']:,}",
                     str(r["batches"]), "yes" if r["alive"] else "no")
    console.print(runs)
    last = table("job", "status", "finished (UTC)", "rows", "error", title="last runs")
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
    json_out: Annotated[bool, typer.Option("--json", help="the run's figures as one JSON document")] = False,
) -> None:
    """Reprocess the confirmation backlog in this process, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from worker.backlog.confirmations import confirmation_channel
    from worker.backlog.runs import reprocess
    from worker.fleet.db import fleet_engine, maintenance_engine
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
            result = reprocess(maintenance_engine(), fleet_engine(), None if dry_run else confirmation_channel(s),
                               limit=limit, batch_size=batch_size, dry_run=dry_run, older_than=age, progress=report)
        except ValueError as exc:
            raise OpsfleetError(str(exc)) from None
    if json_out:
        emit_json(result.as_dict())
    elif dry_run:
        console.print(f"dry run, nothing written: {result.would_process:,} registration(s) would get a confirmation "
                      f"number and email; {result.conflicts:,} already have their number taken (need a person); "
                      f"{result.stale_pending:,} pending email(s) would be resent.", soft_wrap=True, highlight=False)
        for m in result.sample:
            console.print(f"  {m['id']}  {m['confirmation_number']}  {m['email']}  (updated {m['updated_at']})",
                          highlight=False)
    else:
        console.print(f"{result.status}: {result.claimed:,} numbered, {result.sent:,} emails sent, {result.failed:,} "
                      f"failed, {result.deferred:,} left pending, {result.recovered:,} resent; {result.batches} batches "
                      f"in {result.seconds:.1f} s (job_runs id {result.run_id})" + (f"; {result.error}" if result.error else ""),
                      soft_wrap=True, highlight=False)
    if result.status == "error":
        raise typer.Exit(1)
