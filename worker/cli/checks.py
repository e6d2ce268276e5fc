"""`opsfleet checks` (list, run, backtest) and `opsfleet alerts`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from worker.cli.common import console, err, labels_text, settings
from worker.fleet.errors import OpsfleetError

checks_app = typer.Typer(no_args_is_help=True, help="Checks (SQL alert rules).")
alerts_app = typer.Typer(no_args_is_help=True, help="Alert state.")


def _check(name: str):
    from worker.config import get_config

    cfg = get_config()
    check = cfg.checks.get(name)
    if check is None:
        raise OpsfleetError(f"unknown check {name!r}: `opsfleet checks list` shows the names")
    return cfg, check


@checks_app.command("list")
def checks_list() -> None:
    """Every check: schedule, severity, alert state and last run."""
    from worker.checks import store
    from worker.config import get_config
    from worker.fleet.db import fleet_engine

    settings()
    cfg = get_config()
    with fleet_engine().connect() as conn:
        last, states = store.last_runs(conn), store.states_by_check(conn)
    t = Table("check", "schedule", "severity", "state", "last run", "status")
    for name, c in sorted(cfg.checks.items()):
        r = last.get(name)
        t.add_row(name, c.schedule.text, c.severity, states.get(name, "-"),
                  r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r else "-", (r.status if r else "-"))
    console.print(t)


@checks_app.command("run")
def checks_run(name: str, dry_run: Annotated[bool, typer.Option("--dry-run", help="evaluate, change nothing")] = False) -> None:
    """Evaluate one check now and print its rows, the condition and the transition it makes."""
    from worker.checks import store
    from worker.checks.collect import CheckError, collect
    from worker.checks.engine import run_check
    from worker.checks.state import advance
    from worker.fleet.db import checks_engine, fleet_engine

    s = settings()
    cfg, check = _check(name)
    now = datetime.now(UTC)
    try:
        samples = collect(check, checks_engine(check.database), now, redis_url=s.celery_broker_url)
    except CheckError as exc:
        raise OpsfleetError(str(exc)) from None
    with fleet_engine().connect() as conn:
        instances = store.load_instances(conn, name, lock=False)
    t = Table("labels", "value", f"condition {check.condition}", "state", "would become")
    for step in advance(check, instances, samples, now):
        holds = None if step.value is None else check.condition.holds(step.value)
        t.add_row(labels_text(step.labels), "NULL" if step.value is None else f"{step.value:g}",
                  "-" if holds is None else str(holds), step.before.state, step.after.state)
    console.print(t)
    if not samples:
        console.print(f"no rows (no_data: {check.no_data})")
    if dry_run:
        return
    out = run_check(check, monitored=checks_engine("monitored"), fleet=fleet_engine(), fleet_queries=checks_engine("fleet"),
                    now=now, routing=cfg.routing, slot=now, redis_url=s.celery_broker_url)
    console.print(f"recorded: {out.status}, {len(out.transitions)} transition(s), "
                  f"{len(out.notification_ids)} notification(s) queued")
    if out.notification_ids:
        from worker.app import app as celery_app

        for nid in out.notification_ids:
            celery_app.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")


@checks_app.command("backtest")
def checks_backtest(
    name: str,
    since: Annotated[str, typer.Option(help="how far back to start, e.g. 7d")] = "7d",
    step: Annotated[str, typer.Option(help="evaluation step, e.g. 5m")] = "5m",
) -> None:
    """Replay a rule over past data: when it would have gone pending, fired and resolved, and how many
    notifications that would have sent. Writes nothing."""
    from rich.progress import Progress

    from worker.checks.backtest import backtest
    from worker.fleet.db import checks_engine
    from worker.fleet.timeutil import format_duration, parse_duration

    settings()
    cfg, check = _check(name)
    if check.kind != "sql":
        raise OpsfleetError(f"check {name} is a {check.kind} probe: only sql checks can be replayed over past data")
    try:
        since_td, step_td = parse_duration(since), parse_duration(step)
    except ValueError as exc:
        raise OpsfleetError(f"--since/--step: {exc}") from None
    end = datetime.now(UTC).replace(microsecond=0)
    engine = checks_engine(check.database)
    with Progress(console=err, transient=True) as progress:
        bar = progress.add_task(f"replaying {name}", total=int(since_td / step_td) + 1)
        result = backtest(check, engine, cfg.routing, start=end - since_td, end=end, step=step_td,
                          progress=lambda done, total: progress.update(bar, completed=done))
    t = Table("at", "labels", "transition", "value", title=f"{name}: condition {check.condition}, for "
              f"{format_duration(check.for_)}, every {step} over {since}")
    for e in result.events:
        t.add_row(e.at.strftime("%Y-%m-%d %H:%M"), labels_text(e.labels),
                  f"{e.from_state} -> {e.to_state}", "NULL" if e.value is None else f"{e.value:g}")
    console.print(t)
    per_channel = ", ".join(f"{c} {n}" for c, n in sorted(result.notifications.items())) or "none"
    console.print(f"{result.steps} evaluations, fired {result.fired} time(s), would have sent "
                  f"{result.total_notifications} notification(s) ({per_channel}), {len(result.errors)} error(s)")
    for at, msg in result.errors[:3]:
        console.print(f"  error at {at:%Y-%m-%d %H:%M}: {msg}")


@alerts_app.command("list")
def alerts_list(state: Annotated[str | None, typer.Option(help="pending, firing, resolved, inactive")] = None) -> None:
    """Current alert instances."""
    from worker.checks import store
    from worker.fleet.db import fleet_engine

    settings()
    t = Table("check", "severity", "state", "since", "value", "labels", "summary")
    with fleet_engine().connect() as conn:
        for r in store.alerts(conn, state):
            t.add_row(r.check_name, r.severity, r.state, r.since.strftime("%Y-%m-%d %H:%M:%S"),
                      "-" if r.last_value is None else f"{r.last_value:g}", labels_text(r.labels), (r.summary or "")[:80])
    console.print(t)
