"""`opsfleet checks` (list, run, backtest) and `opsfleet alerts`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from worker.cli.common import console, emit_json, err, labels_text, settings, table, target_named
from worker.fleet.errors import ArgumentError, OpsfleetError

checks_app = typer.Typer(no_args_is_help=True, help="Checks (SQL alert rules).")
alerts_app = typer.Typer(no_args_is_help=True, help="Alert state.")


def _check(name: str):
    from worker.config import get_config

    cfg = get_config()
    check = cfg.checks.get(name)
    if check is None and cfg.pack_off("check", name):
        raise ArgumentError(cfg.pack_off("check", name))
    if check is None:
        raise OpsfleetError(f"{cfg.unknown_check(name)}: `opsfleet checks list` shows the names")
    return cfg, check


CHECK_FIELDS = ("name", "pack", "targets", "schedule", "severity", "enabled", "states", "last_run_at", "last_status",
                "last_error", "last_note")
TargetOption = Annotated[str | None, typer.Option(help="only this target's (config/targets.yaml; `opsfleet targets list`)")]


def _targets_text(on: list[str] | None) -> str:
    return "fleet (once)" if on is None else ", ".join(on) or "- (no target)"


@checks_app.command("list")
def checks_list(target: Annotated[str | None, typer.Option(help="only the checks that run on this target, with its "
                                                           "states and runs (config/targets.yaml)")] = None,
                json_out: Annotated[bool, typer.Option("--json", help="a JSON list: " + ", ".join(CHECK_FIELDS)
                                                       + " (targets: the names of the targets it runs on; null for "
                                                       "the fleet's own checks, which run once)")] = False
                ) -> None:
    """Every check of the enabled packs: the targets it runs on, schedule, severity, whether enabled,
    alert states, last run (of one target with --target)."""
    from worker.checks import store
    from worker.config import get_config
    from worker.fleet.db import fleet_engine
    from worker.targets import FLEET

    settings()
    cfg = get_config()
    only = target_named(target)
    key = only.key if only is not None else None
    with fleet_engine().connect() as conn:
        last, states = store.last_runs(conn, key), store.states_by_check(conn, key)
    records = []
    for name, c in sorted(cfg.checks.items()):
        on: list[str] | None = cfg.targets_of(name)
        on = None if on == [FLEET] else on
        if only is not None and only.name not in (on or []):
            continue
        r = last.get(name)
        records.append({"name": name, "pack": cfg.check_pack.get(name), "targets": on, "schedule": c.schedule.text,
                        "severity": c.severity, "enabled": c.enabled,
                        "states": sorted(states[name].split(",")) if name in states else [],
                        "last_run_at": r.started_at if r else None, "last_status": r.status if r else None,
                        "last_error": r.error if r else None, "last_note": r.note if r else None})
    if json_out:
        emit_json(records)
        return
    t = table("check", "pack", "targets", "schedule", "severity", "state", "last run", "status")
    for r in records:
        t.add_row(r["name"] if r["enabled"] else f"[dim]{r['name']} (disabled)[/]", r["pack"] or "-",
                  _targets_text(r["targets"]), r["schedule"], r["severity"], ",".join(r["states"]) or "-",
                  r["last_run_at"].strftime("%Y-%m-%d %H:%M:%S") if r["last_run_at"] else "-",
                  (r["last_status"] or "-") + (f" ({r['last_note']})" if r["last_note"] else ""))
    console.print(t)


@checks_app.command("run")
def checks_run(name: str, dry_run: Annotated[bool, typer.Option("--dry-run", help="evaluate, change nothing")] = False,
               target: Annotated[str | None, typer.Option(help="the target to run it on (config/targets.yaml); "
                                                          "needed when the check runs on several")] = None) -> None:
    """Evaluate one check now (on one target) and print its rows, the condition and the transition it makes."""
    from worker.checks import store
    from worker.checks.collect import CheckError, Sample, collect
    from worker.checks.engine import run_check
    from worker.checks.state import advance
    from worker.fleet.db import checks_engine, fleet_engine

    s = settings()
    cfg, check = _check(name)
    try:
        where = cfg.target_for(name, target)
    except ValueError as exc:
        raise ArgumentError(f"--target: {exc}") from None
    declared = where is not None and bool(where.where)
    monitored = checks_engine(url=where.database_url(s)) if declared else checks_engine("monitored")
    key, labels = (where.key, where.alert_labels()) if where is not None else ("", {})
    now = datetime.now(UTC)
    try:
        source = checks_engine("fleet") if check.database == "fleet" else monitored
        samples = [Sample({**x.labels, **labels}, x.value, x.reason)
                   for x in collect(check, source, now, redis_url=s.celery_broker_url)]
    except CheckError as exc:
        raise OpsfleetError(str(exc)) from None
    with fleet_engine().connect() as conn:
        instances = store.load_instances(conn, name, lock=False, target=key)
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
    out = run_check(check, monitored=monitored, fleet=fleet_engine(), fleet_queries=checks_engine("fleet"),
                    now=now, routing=cfg.routing, slot=now, redis_url=s.celery_broker_url, target=key,
                    target_labels=labels)
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
    target: Annotated[str | None, typer.Option(help="the target whose database to replay it on (config/targets.yaml); "
                                               "needed when the check runs on several")] = None,
) -> None:
    """Replay a rule over past data (of one target's database): when it would have gone pending, fired
    and resolved, and how many notifications that would have sent. Writes nothing."""
    from rich.progress import Progress

    from worker.checks.backtest import backtest
    from worker.fleet.db import checks_engine
    from worker.fleet.timeutil import format_duration, parse_duration

    s = settings()
    cfg, check = _check(name)
    target_named(target)  # an unknown --target is named as such, whatever the check
    if check.kind != "sql":
        raise OpsfleetError(f"check {name} is a {check.kind} probe: only sql checks can be replayed over past data")
    try:
        since_td, step_td = parse_duration(since), parse_duration(step)
    except ValueError as exc:
        raise OpsfleetError(f"--since/--step: {exc}") from None
    try:
        where = cfg.target_for(name, target)  # None: the fleet's own check, on the fleet's database
    except ValueError as exc:
        raise ArgumentError(f"--target: {exc}") from None
    declared = where is not None and bool(where.where) and check.database != "fleet"
    engine = checks_engine(url=where.database_url(s)) if declared else checks_engine(check.database)
    end = datetime.now(UTC).replace(microsecond=0)
    with Progress(console=err, transient=True) as progress:
        bar = progress.add_task(f"replaying {name}", total=int(since_td / step_td) + 1)
        result = backtest(check, engine, cfg.routing, start=end - since_td, end=end, step=step_td,
                          labels=where.alert_labels() if where is not None else None,
                          progress=lambda done, total: progress.update(bar, completed=done))
    on = f" on target {where.name}" if declared else ""
    t = table("at", "labels", "transition", "value", title=f"{name}{on}: condition {check.condition}, for "
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


ALERT_FIELDS = ("check", "target", "severity", "state", "since", "value", "labels", "summary", "fingerprint",
                "acked_at", "acked_by", "ack_comment", "keep_firing_since")
HISTORY_FIELDS = ("at", "kind", "check", "severity", "labels", "fingerprint", "what", "value", "channel", "status",
                  "detail")  # worker.notify.history.FIELDS


@alerts_app.command("list")
def alerts_list(state: Annotated[str | None, typer.Option(help="pending, firing, resolved, inactive")] = None,
                target: TargetOption = None,
                json_out: Annotated[bool, typer.Option("--json", help="a JSON list: " + ", ".join(ALERT_FIELDS))] = False
                ) -> None:
    """Current alert instances (of one target with --target)."""
    from worker.checks import store
    from worker.config import get_config
    from worker.fleet.db import fleet_engine

    settings()
    if state is not None and state not in ("pending", "firing", "resolved", "inactive"):
        raise OpsfleetError(f"--state {state!r}: one of pending, firing, resolved, inactive")
    only = target_named(target)
    names = {t.key: t.name for t in get_config().targets.values()}
    with fleet_engine().connect() as conn:
        records = [{"check": r.check_name, "target": names.get(r.target) or None,
                    "severity": r.severity, "state": r.state, "since": r.since,
                    "value": r.last_value, "labels": r.labels, "summary": r.summary, "fingerprint": r.fingerprint,
                    "acked_at": r.acked_at, "acked_by": r.acked_by, "ack_comment": r.ack_comment,
                    "keep_firing_since": r.keep_firing_since}
                   for r in store.alerts(conn, state, only.key if only is not None else None)]
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


ALERT_SHOW_FIELDS = ("fingerprint", "check", "severity", "state", "labels", "value", "condition", "summary", "since",
                     "target", "history", "evidence", "actions")  # worker.web.status.alert; evidence: {gathered_at, reason,
# sections}; actions: [{id, kind, params, dry_run, state, auto, proposed_at, approved_by, approved_via, result, events}]


@alerts_app.command("show")
def alerts_show(
    alert: Annotated[str, typer.Argument(help="a fingerprint or its first 6+ characters (`opsfleet alerts list`)")],
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object: " + ", ".join(ALERT_SHOW_FIELDS)
                                           + "; each evidence section has name, title, columns, rows, lines, "
                                           "truncated, error; each action id, kind, params, dry_run, state, "
                                           "approved_by, result, events")] = False,
) -> None:
    """One alert: its state, its labels, the actions it proposed, the evidence gathered when it fired
    (every row) and its history."""
    import sqlalchemy as sa

    from worker.config import get_config
    from worker.fleet.db import fleet_engine
    from worker.web import status

    settings()
    if len(alert) < 6 or not all(c in "0123456789abcdef" for c in alert.lower()):
        raise OpsfleetError(f"ALERT {alert!r}: give a fingerprint or its first 6+ hex characters (`opsfleet alerts list`)")
    now = datetime.now(UTC)
    with fleet_engine().connect() as conn:
        found = conn.execute(sa.text("SELECT fingerprint FROM fleet.alerts WHERE fingerprint LIKE :p LIMIT 3"),
                             {"p": alert.lower() + "%"}).scalars().all()
        if len(found) != 1:
            raise OpsfleetError(f"ALERT {alert!r}: " + ("no such alert (`opsfleet alerts list`)" if not found else
                                                        "more than one alert starts so: give more characters"))
        doc = status.alert(conn, get_config(), found[0], now)
    if json_out:
        emit_json(doc)
        return
    console.print(f"[bold]{doc['check']}[/] {doc['severity']} {doc['state']} since {doc['since']}: {doc['summary'] or ''}",
                  soft_wrap=True, markup=True, highlight=False)
    console.print(f"labels {labels_text(doc['labels'])} · value {doc['value']} · fingerprint {doc['fingerprint']}",
                  soft_wrap=True, markup=False, highlight=False)
    for x in doc.get("actions") or []:
        console.print(f"action {x['id']} {x['state']}: {x['dry_run']}"
                      + (f" (approved by {x['approved_by']})" if x["approved_by"] else "")
                      + (f": {x['result']}" if x["result"] else ""), markup=False, soft_wrap=True)
    found_ev = doc.get("evidence")
    if not found_ev:
        console.print("no evidence gathered (the check declares none, or it has not fired since)", markup=False)
        return
    console.print(f"evidence gathered {found_ev['gathered_at']} ({found_ev['reason']}):", markup=False)
    for section in found_ev["sections"]:
        if section["error"]:
            console.print(f"{section['title']}: could not be gathered: {section['error']}", markup=False, soft_wrap=True)
            continue
        t = table(*section["columns"], title=section["title"])
        for row in section["rows"]:
            t.add_row(*("-" if row[c] is None else str(row[c]) for c in section["columns"]))
        console.print(t)


@alerts_app.command("ack")
def alerts_ack(
    alert: Annotated[str, typer.Argument(help="a check name (all its firing alerts), or a fingerprint or its first "
                                              "6+ characters (`opsfleet alerts list`)")],
    comment: Annotated[str, typer.Option(help="what you are doing about it")] = "",
    author: Annotated[str | None, typer.Option(help="who; default $USER")] = None,
    target: Annotated[str | None, typer.Option(help="only this target's firing alerts (config/targets.yaml)")] = None,
) -> None:
    """Acknowledge firing alerts (of one target with --target): no more repeats until they resolve or
    fire anew; one kept firing (keep_firing_for) resolves as soon as its condition is false."""
    import getpass

    from worker.checks import store
    from worker.fleet.db import fleet_engine

    settings()
    only = target_named(target)
    try:
        with fleet_engine().begin() as conn:
            rows = store.acknowledge(conn, alert, author=author or getpass.getuser(), comment=comment,
                                     now=datetime.now(UTC), target=only.key if only is not None else None)
    except ValueError as exc:
        raise OpsfleetError(str(exc)) from None
    for r in rows:
        console.print(f"acknowledged {r.check_name} {labels_text(r.labels)} ({r.fingerprint[:12]}): {r.summary or ''}")


@alerts_app.command("history")
def alerts_history(
    since: Annotated[str, typer.Option(help="how far back, e.g. 24h, 7d")] = "24h",
    check: Annotated[str | None, typer.Option(help="one check only")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
    target: Annotated[str | None, typer.Option(help="only this target's alerts (config/targets.yaml)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="a JSON object: entries (each " + ", ".join(HISTORY_FIELDS)
                                           + "), sent (channel -> status -> n), held_back (reason -> channel -> n; "
                                           "null with --target: those counts are per check, not per target)")]
    = False,
) -> None:
    """Every transition (pending, firing, resolved, ...) and every notification decided for it (sent to
    which channel, or held back and why) since then, newest first (of one target's alerts with
    --target); then what was held back in all."""
    from worker.config import get_config
    from worker.fleet.db import fleet_engine
    from worker.fleet.timeutil import parse_duration
    from worker.notify import history

    settings()
    only = target_named(target)
    key = only.key if only is not None else None
    if check is not None and check not in get_config().checks:
        raise OpsfleetError(f"--check: {get_config().unknown_check(check)} (see `opsfleet checks list`)")
    try:
        start = datetime.now(UTC) - parse_duration(since)
    except ValueError as exc:
        raise OpsfleetError(f"--since: {exc}") from None
    with fleet_engine().connect() as conn:
        entries = history.timeline(conn, start, check, limit, target=key)
        sent = history.sent_per_channel(conn, start, check, target=key)
        held = history.held_back(conn, start, check) if only is None else None
    if json_out:
        emit_json({"entries": entries, "sent": sent, "held_back": held})
        return
    of = f" of target {only.name}" if only is not None else ""
    t = table("at", "check", "labels", "what", "value", "channel", "outcome", title=f"history{of} since {since} ago")
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
    if held is None:
        console.print("held back (deduplicated repeats): counted per check, not per target: "
                      "`opsfleet alerts history` without --target shows them")
        return
    for reason, counts in held.items():
        console.print(f"held back ({reason}): " + ", ".join(f"{n} on {ch}" for ch, n in counts.items()))
