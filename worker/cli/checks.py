"""`opsfleet checks` (list, run, backtest) and `opsfleet alerts`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from worker.cli.common import console, emit_json, err, labels_text, settings, table
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


CHECK_FIELDS = ("name", "pack", "schedule", "severity", "enabled", "states", "last_run_at", "last_status",
                "last_error", "last_note")


@checks_app.command("list")
def checks_list(json_out: Annotated[bool, typer.Option("--json", help="a JSON list: " + ", ".join(CHECK_FIELDS))] = False
                ) -> None:
    """Every check of the enabled packs: schedule, severity, whether enabled, alert states, last run."""
    from worker.checks import store
    from worker.config import get_config
    from worker.fleet.db import fleet_engine

    settings()
    cfg = get_config()
    with fleet_engine().connect() as conn:
        last, states = store.last_runs(conn), store.states_by_check(conn)
    records = []
    for name, c in sorted(cfg.checks.items()):
        r = last.get(name)
        records.append({"name": name, "pack": cfg.check_pack.get(name), "schedule": c.schedule.text,
                        "severity": c.severity, "enabled": c.enabled,
                        "states": sorted(states[name].split(",")) if name in states else [],
                        "last_run_at": r.started_at if r else None, "last_status": r.status if r else None,
                        "last_error": r.error if r else None, "last_note": r.note if r else None})
    if json_out:
        emit_json(records)
        return
    t = table("check", "pack", "schedule", "severity", "state", "last run", "status")
    for r in records:
        t.add_row(r["name"] if r["enabled"] else f"[dim]{r['name']} (disabled)[/]", r["pack"] or "-", r["schedule"],
                  r["severity"], ",".join(r["states"]) or "-",
                  r["last_run_at"].strftime("%Y-%m-%d %H:%M:%S") if r["last_run_at"] else "-",
                  (r["last_status"] or "-") + (f" ({r['last_note']})" if r["last_note"] else ""))
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
    t = table("labels", "value", f"condition {check.condition}", "state", "would become")
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
    t = table("at", "labels", "transition", "value", title=f"{name}: condition {check.condition}, for "
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


ALERT_FIELDS = ("check", "severity", "state", "since", "value", "labels", "summary", "fingerprint", "acked_at",
                "acked_by", "ack_comment", "keep_firing_since")
HISTORY_FIELDS = ("at", "kind", "check", "severity", "labels", "fingerprint", "what", "value", "channel", "status",
                  "detail")  # worker.notify.history.FIELDS


@alerts_app.command("list")
def alerts_list(state: Annotated[str | None, typer.Option(help="pending, firing, resolved, inactive")] = None,
                json_out: Annotated[bool, typer.Option("--json", help="a JSON list: " + ", ".join(ALERT_FIELDS))] = False
                ) -> None:
    """Current alert instances."""
    from worker.checks import store
    from worker.fleet.db import fleet_engine

    settings()
    if state is not None and state not in ("pending", "firing", "resolved", "inactive"):
        raise OpsfleetError(f"--state {state!r}: one of pending, firing, resolved, inactive")
    with fleet_engine().connect() as conn:
        records = [{"check": r.check_name, "severity": r.severity, "state": r.state, "since": r.since,
                    "value": r.last_value, "labels": r.labels, "summary": r.summary, "fingerprint": r.fingerprint,
                    "acked_at": r.acked_at, "acked_by": r.acked_by, "ack_comment": r.ack_comment,
                    "keep_firing_since": r.keep_firing_since}
                   for r in store.alerts(conn, state)]
    if json_out:
        emit_json(records)
        return
    t = table("check", "severity", "state", "since", "value", "labels", "summary", "fingerprint")
    for r in records:
        state_text = r["state"]
        if r["acked_at"]:
            state_text += f" (acked by {r['acked_by']})"
        elif r["keep_firing_since"]:
            state_text += " (kept: condition false)"
        t.add_row(r["check"], r["severity"], state_text, r["since"].strftime("%Y-%m-%d %H:%M:%S"),
                  "-" if r["value"] is None else f"{r['value']:g}", labels_text(r["labels"]), r["summary"] or "",
                  r["fingerprint"][:12])
    console.print(t)


@alerts_app.command("ack")
def alerts_ack(
    alert: Annotated[str, typer.Argument(help="a check name (all its firing alerts), or a fingerprint or its first "
                                              "6+ characters (`opsfleet alerts list`)")],
    comment: Annotated[str, typer.Option(help="what you are doing about it")] = "",
    author: Annotated[str | None, typer.Option(help="who; default $USER")] = None,
) -> None:
    """Acknowledge firing alerts: no more repeats until they resolve or fire anew; one kept firing
    (keep_firing_for) resolves as soon as its condition is false."""
    import getpass

    from worker.checks import store
    from worker.fleet.db import fleet_engine

    settings()
    try:
        with fleet_engine().begin() as conn:
            rows = store.acknowledge(conn, alert, author=author or getpass.getuser(), comment=comment,
                                     now=datetime.now(UTC))
    except ValueError as exc:
        raise OpsfleetError(str(exc)) from None
    for r in rows:
        console.print(f"acknowledged {r.check_name} {labels_text(r.labels)} ({r.fingerprint[:12]}): {r.summary or ''}")


@alerts_app.command("history")
def alerts_history(
    since: Annotated[str, typer.Option(help="how far back, e.g. 24h, 7d")] = "24h",
    check: Annotated[str | None, typer.Option(help="one check only")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
    json_out: Annotated[bool, typer.Option("--json", help="a JSON object: entries (each " + ", ".join(HISTORY_FIELDS)
                                           + "), sent (channel -> status -> n), held_back (reason -> channel -> n)")]
    = False,
) -> None:
    """Every transition (pending, firing, resolved, ...) and every notification decided for it (sent to
    which channel, or held back and why) since then, newest first; then what was held back in all."""
    from worker.config import get_config
    from worker.fleet.db import fleet_engine
    from worker.fleet.timeutil import parse_duration
    from worker.notify import history

    settings()
    if check is not None and check not in get_config().checks:
        raise OpsfleetError(f"--check {check!r}: no such check (see `opsfleet checks list`)")
    try:
        start = datetime.now(UTC) - parse_duration(since)
    except ValueError as exc:
        raise OpsfleetError(f"--since: {exc}") from None
    with fleet_engine().connect() as conn:
        entries = history.timeline(conn, start, check, limit)
        sent, held = history.sent_per_channel(conn, start, check), history.held_back(conn, start, check)
    if json_out:
        emit_json({"entries": entries, "sent": sent, "held_back": held})
        return
    t = table("at", "check", "labels", "what", "value", "channel", "outcome", title=f"history since {since} ago")
    for e in entries:
        outcome = e["status"] or ""
        if e["detail"]:
            outcome = f"{outcome}: {e['detail']}" if outcome else e["detail"]
        t.add_row(e["at"].strftime("%Y-%m-%d %H:%M:%S"), e["check"], labels_text(e["labels"]),
                  e["what"] if e["kind"] == "transition" else f"notice ({e['what']})",
                  "-" if e["value"] is None else f"{e['value']:g}", e["channel"] or "", outcome)
    console.print(t)
    for channel, counts in sent.items():
        console.print(f"{channel}: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    for reason, counts in held.items():
        console.print(f"held back ({reason}): " + ", ".join(f"{n} on {ch}" for ch, n in counts.items()))
