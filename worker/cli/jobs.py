"""`opsfleet maintenance` and `opsfleet backlog`: the jobs, run here with progress, and their state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from worker.cli.common import console, emit_json, err, settings, table
from worker.fleet.errors import ArgumentError, OpsfleetError

maint_app = typer.Typer(no_args_is_help=True, help="Maintenance jobs.")
backlog_app = typer.Typer(no_args_is_help=True, help="Backlog reprocessing: paid registrations that never got a confirmation.")
TARGET_HELP = "the target to run it on (config/targets.yaml); needed when it runs on several"


def _target(family: str, job: str, given: str | None):
    """(the target's key, the engine its jobs write with, the target or None), or exit 2 with one line
    naming --target (an unknown target, one the job does not run on, none where it runs on several)."""
    from worker.config import get_config
    from worker.fleet.db import maintenance_engine_at

    off = get_config().pack_off(family, job) if family == "backlog" else None
    if off:
        raise ArgumentError(off)
    try:
        where = get_config().job_target_for(family, job, given)
    except ValueError as exc:
        raise ArgumentError(f"--target: {exc}") from None
    if where is None or not where.where:  # the fleet's own, or the implicit default: as before targets
        return "", maintenance_engine_at(None), where
    return where.key, maintenance_engine_at(where.maintenance_database_url(settings())), where


@maint_app.command("run")
def maintenance_run(job: str, target: Annotated[str | None, typer.Option(help=TARGET_HELP)] = None) -> None:
    """Run one maintenance job now (on one target), in this process."""
    from worker.config import get_config
    from worker.fleet.db import fleet_engine
    from worker.maintenance.jobs import run_job

    settings()
    spec = get_config().maintenance.get(job)
    if spec is None and get_config().pack_off("job", job):
        raise ArgumentError(get_config().pack_off("job", job))
    if spec is None:
        raise OpsfleetError(f"unknown maintenance job {job!r}; known: {', '.join(sorted(get_config().maintenance))}")
    key, engine, where = _target("maintenance", job, target)
    r = run_job(spec, monitored=engine, fleet=fleet_engine(), now=datetime.now(UTC), target=key)
    on = f" on {where.name}" if where is not None and where.where else ""
    console.print(f"{job}{on}: {r.status}, {r.rows} rows in {r.batches} batches" + (f" ({r.error})" if r.error else ""))
    if r.status == "error":
        raise typer.Exit(1)


JOB_FIELDS = ("name", "target", "pack", "kind", "schedule", "enabled", "last_run_at", "last_status", "last_rows",
              "last_error")


@maint_app.command("list")
def maintenance_list(json_out: Annotated[bool, typer.Option("--json", help="a JSON list: " + ", ".join(JOB_FIELDS))] = False
                     ) -> None:
    """Every maintenance job of the enabled packs on each of its targets (none: the fleet's own, once),
    with its last run there."""
    from worker.config import get_config
    from worker.fleet.db import fleet_engine
    from worker.fleet.runs import last_by_job

    settings()
    cfg = get_config()
    last = last_by_job(fleet_engine())
    records = []
    for name, j in sorted(cfg.maintenance.items()):
        for t in cfg.job_targets("maintenance", name) or [""]:
            run = last.get((name, cfg.targets[t].key if t else ""), {})
            records.append({"name": name, "target": t or None, "pack": cfg.job_pack.get(name), "kind": j.kind,
                            "schedule": j.schedule.text, "enabled": j.enabled, "last_run_at": run.get("started_at"),
                            "last_status": run.get("status"), "last_rows": run.get("rows_affected"),
                            "last_error": run.get("error")})
    if json_out:
        emit_json(records)
        return
    t = table("job", "target", "pack", "kind", "schedule", "last run (UTC)", "status", "rows", "error")
    for r in records:
        t.add_row(r["name"] if r["enabled"] else f"[dim]{r['name']} (disabled)[/]", r["target"] or "-", r["pack"] or "-",
                  r["kind"], r["schedule"], r["last_run_at"].strftime("%Y-%m-%d %H:%M:%S") if r["last_run_at"] else "-",
                  r["last_status"] or "-", "-" if r["last_rows"] is None else f"{r['last_rows']:,}", r["last_error"] or "")
    console.print(t)


@backlog_app.command("status")
def backlog_status(json_out: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
                   target: Annotated[str | None, typer.Option(help="the target to look at (config/targets.yaml); "
                                                              "needed when the backlog runs on several")] = None) -> None:
    """Pending confirmations, waiting or failed emails, and the backlog runs in progress (on one target)."""
    from worker.backlog.spec import JOB_REPROCESS
    from worker.backlog.status import backlog_status as status
    from worker.fleet.db import create, fleet_engine, monitored_engine

    s = settings()
    key, _, where = _target("backlog", JOB_REPROCESS, target)
    if where is None or not where.where:
        st = status(monitored_engine(), fleet_engine(), target=key)
    else:
        engine = create(where.database_url(s), pool_size=1)
        try:
            st = {"target": where.name, **status(engine, fleet_engine(), target=key)}
        finally:
            engine.dispose()
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
    target: Annotated[str | None, typer.Option(help=TARGET_HELP)] = None,
) -> None:
    """Reprocess the confirmation backlog (of one target) in this process, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from worker.backlog.confirmations import confirmation_channel
    from worker.backlog.runs import reprocess
    from worker.backlog.spec import JOB_REPROCESS
    from worker.fleet.db import fleet_engine
    from worker.fleet.timeutil import parse_duration

    s = settings()
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise OpsfleetError(f"--older-than: {exc}") from None
    key, engine, where = _target("backlog", JOB_REPROCESS, target)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                  TimeRemainingColumn(), console=err) as bar:
        task_id = bar.add_task("confirmations", total=None, rate="")

        def report(p) -> None:
            bar.update(task_id, completed=p.done, total=p.total or None, rate=f"{p.rate:,.0f}/s")

        try:
            result = reprocess(engine, fleet_engine(), None if dry_run else confirmation_channel(s), limit=limit,
                               batch_size=batch_size, dry_run=dry_run, older_than=age, progress=report, target=key)
        except ValueError as exc:
            raise OpsfleetError(str(exc)) from None
    if json_out:
        emit_json({**result.as_dict(), **({"target": where.name} if where is not None and where.where else {})})
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
