"""`opsfleet silence`, `opsfleet notify test|dead|retry` and `opsfleet digest`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from worker.cli.common import console, emit_json, settings, table
from worker.fleet.errors import ArgumentError, OpsfleetError

silence_app = typer.Typer(no_args_is_help=True, help="Silences: mute notifications for a check or labels.")
notify_app = typer.Typer(no_args_is_help=True, help="Notifications.")
digest_app = typer.Typer(no_args_is_help=True, help="The daily digest.")


@silence_app.command("add")
def silence_add(
    check: Annotated[str | None, typer.Option(help="check name")] = None,
    label: Annotated[list[str] | None, typer.Option(help="k=v, repeatable")] = None,
    target: Annotated[str | None, typer.Option(help="only this target's alerts (the label target=NAME)")] = None,
    for_: Annotated[str, typer.Option("--for", help="how long, e.g. 2h")] = "1h",
    comment: Annotated[str, typer.Option(help="why")] = "",
    author: Annotated[str | None, typer.Option(help="who; default $USER")] = None,
) -> None:
    """Silence notifications matching a check and labels for a while (they are recorded as suppressed)."""
    import getpass

    from worker.config import get_config
    from worker.fleet.db import fleet_engine
    from worker.fleet.timeutil import parse_duration
    from worker.notify import silences

    settings()
    labels = {}
    for item in label or []:
        if "=" not in item:
            raise OpsfleetError(f"--label {item!r}: use key=value")
        k, v = item.split("=", 1)
        labels[k.strip()] = v.strip()
    if target is not None:
        if target not in get_config().targets or not get_config().targets_declared:
            raise OpsfleetError(f"--target {target!r}: not a target of targets.yaml ({', '.join(get_config().targets)})")
        labels["target"] = target
    if check and check not in get_config().checks:
        raise OpsfleetError(f"--check: {get_config().unknown_check(check)} (`opsfleet checks list`)")
    try:
        duration = parse_duration(for_)
        sid = silences.add(fleet_engine(), check=check, labels=labels, duration=duration, comment=comment,
                           author=author or getpass.getuser(), now=datetime.now(UTC))
    except ValueError as exc:
        raise OpsfleetError(str(exc)) from None
    console.print(f"silence {sid} until {(datetime.now(UTC) + duration):%Y-%m-%d %H:%M} UTC")


SILENCE_FIELDS = ("id", "check", "labels", "starts_at", "ends_at", "author", "comment")


@silence_app.command("list")
def silence_list(json_out: Annotated[bool, typer.Option("--json", help="a JSON list: " + ", ".join(SILENCE_FIELDS))] = False
                 ) -> None:
    """Active silences (an id, or a unique start of one, is what `silence expire` takes)."""
    from worker.fleet.db import fleet_engine
    from worker.notify import silences

    settings()
    records = [{"id": str(r.id), "check": r.matchers.get("check"), "labels": r.matchers.get("labels", {}),
                "starts_at": r.starts_at, "ends_at": r.ends_at, "author": r.author, "comment": r.comment}
               for r in silences.active(fleet_engine(), datetime.now(UTC))]
    if json_out:
        emit_json(records)
        return
    t = table("id", "check", "labels", "ends (UTC)", "author", "comment")
    for r in records:
        t.add_row(r["id"], r["check"] or "*", ", ".join(f"{k}={v}" for k, v in r["labels"].items()),
                  r["ends_at"].strftime("%Y-%m-%d %H:%M"), r["author"], r["comment"])
    console.print(t)


@silence_app.command("expire")
def silence_expire(silence_id: Annotated[str, typer.Argument(help="the id, or a unique start of it")]) -> None:
    """End a silence now."""
    from worker.fleet.db import fleet_engine
    from worker.notify import silences

    settings()
    now = datetime.now(UTC)
    try:
        full = silences.resolve(fleet_engine(), silence_id, now)
        ok = silences.expire(fleet_engine(), full, now)
    except ValueError as exc:
        raise OpsfleetError(str(exc)) from None
    if not ok:
        raise OpsfleetError(f"no active silence {silence_id}")
    console.print(f"silence {full} expired")


@notify_app.command("test")
def notify_test(channel: Annotated[str | None, typer.Option(help="one channel from routing.yaml")] = None) -> None:
    """Send a "Test Alert" through the real pipeline; report what each provider answered."""
    import uuid

    from worker.config import get_config
    from worker.fleet.db import fleet_engine, maintenance_engine
    from worker.notify import outbox
    from worker.notify.delivery import deliver

    s = settings()
    routing = get_config().routing
    if routing is None:
        raise OpsfleetError("no routing.yaml in the config folder: there are no channels to test")
    deliverable = [n for n, c in routing.channels.items() if c.kind != "digest"]
    names = [channel] if channel else deliverable
    for n in names:
        if n not in deliverable:
            raise OpsfleetError(f"--channel {n!r}: not a deliverable channel in routing.yaml ({', '.join(deliverable)})")
    now = datetime.now(UTC)
    fleet = fleet_engine()
    t = table("channel", "result", "provider answer")
    failed = False
    for n in names:
        payload = {"check": "system_test", "severity": "info", "status": "test", "title": "Test Alert",
                   "summary": "This is a test alert from the monitoring system",
                   "description": "Testing alert delivery (opsfleet notify test).", "labels": {"category": "system_test"}}
        with fleet.begin() as conn:
            nid = outbox.insert(conn, channel=n, check="system_test", transition="test", payload=payload,
                                dedup_key=f"test:{n}:{uuid.uuid4()}", due=now)
        r = deliver(nid, fleet=fleet, settings=s, routing=routing, now=now, monitored=maintenance_engine())
        failed |= r.status != "sent"
        t.add_row(n, r.status, r.provider_id or r.error or "")
    console.print(t)
    if failed:
        raise typer.Exit(1)


def _channel_named(given: str | None) -> str | None:
    """`--channel`: a channel of routing.yaml; ArgumentError (one line, exit 2) naming them when not."""
    from worker.config import get_config

    routing = get_config().routing
    names = [n for n, c in (routing.channels.items() if routing else ()) if c.kind != "digest"]
    if given is not None and given not in names:
        raise ArgumentError(f"--channel {given!r}: not a channel of routing.yaml ({', '.join(names) or 'none'})")
    return given


DEAD_FIELDS = ("id", "channel", "check", "transition", "attempts", "dead_at", "error", "refused")


@notify_app.command("dead")
def notify_dead(
    channel: Annotated[str | None, typer.Option(help="only this channel's (routing.yaml)")] = None,
    since: Annotated[str | None, typer.Option(help="only those dead within this long, e.g. 24h")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="a JSON list: " + ", ".join(DEAD_FIELDS)
                                           + " (refused: why `notify retry` would not send it; null: it would)")] = False,
) -> None:
    """Dead notifications, newest first: the provider's last error, and whether `opsfleet notify retry`
    would send it again (or why not)."""
    from worker.fleet.db import fleet_engine, fleet_now
    from worker.fleet.timeutil import parse_duration
    from worker.notify import recover

    settings()
    channel = _channel_named(channel)
    try:
        span = parse_duration(since) if since is not None else None
    except ValueError as exc:
        raise ArgumentError(f"--since {since!r}: {exc}") from None
    now = fleet_now()
    with fleet_engine().connect() as conn:
        records = [d.record() for d in recover.dead(conn, now, channel=channel, since=now - span if span else None)]
    if json_out:
        emit_json(records)
        return
    if not records:
        console.print("no dead notifications" + (f" on {channel}" if channel else ""))
        return
    t = table("id", "channel", "check", "transition", "dead (UTC)", "attempts", "error", "retry")
    for r in records:
        t.add_row(r["id"], r["channel"], r["check"] or "-", r["transition"],
                  r["dead_at"].strftime("%Y-%m-%d %H:%M") if r["dead_at"] else "-", str(r["attempts"]),
                  (r["error"] or "")[:200], f"refused: {r['refused']}" if r["refused"] else "yes")
    console.print(t)


RETRY_FIELDS = ("id", "channel", "check", "transition", "result", "detail")


@notify_app.command("retry")
def notify_retry(
    ids: Annotated[list[str] | None, typer.Argument(help="dead notifications' ids, or their first 8+ characters "
                                                     "(`opsfleet notify dead`)", show_default=False, metavar="ID")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="every dead notification (of --channel)")] = False,
    channel: Annotated[str | None, typer.Option(help="only this channel's (routing.yaml)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="a JSON list: " + ", ".join(RETRY_FIELDS))] = False,
) -> None:
    """Send dead notifications again once their channel is fixed: each is requeued as it was (the same
    dedup key and idempotency key, so a provider that got an earlier attempt does not send twice) and
    delivered now through the real pipeline; prints what the provider answered. A firing notice whose
    alert has resolved since, and a resolved one whose channel was never told it fired, are refused
    with the reason. Exit 1 when one did not go out (or, named by id, was refused)."""
    from worker.config import get_config
    from worker.fleet.db import fleet_engine, fleet_now, maintenance_engine
    from worker.notify import recover
    from worker.notify.delivery import deliver

    s = settings()
    if ids and all_dead:
        raise ArgumentError("give dead notifications' ids or --all-dead, not both")
    if not ids and not all_dead:
        raise ArgumentError("give the ids of dead notifications (`opsfleet notify dead`) or --all-dead")
    channel = _channel_named(channel)
    fleet = fleet_engine()
    with fleet.begin() as conn:  # every id is checked before any row is requeued
        try:
            done = recover.retry(conn, fleet_now(fleet), ids=ids, channel=channel, all_dead=all_dead)
        except ValueError as exc:
            raise ArgumentError(str(exc)) from None
    records, failed = [], False
    for r in done:
        result, detail = "refused", r.reason
        if r.requeued:
            out = deliver(r.id, fleet=fleet, settings=s, routing=get_config().routing, now=fleet_now(fleet),
                          monitored=maintenance_engine())
            result, detail = out.status, out.provider_id or out.error or _AFTER.get(out.status, "")
            failed |= out.status in ("dead", "retrying")
        else:
            failed |= not all_dead
        records.append({"id": r.id, "channel": r.channel, "check": r.check, "transition": r.transition,
                        "result": result, "detail": detail})
    if json_out:
        emit_json(records)
    elif not records:
        console.print("no dead notifications" + (f" on {channel}" if channel else ""))
    else:
        t = table(*RETRY_FIELDS)
        for rec in records:
            t.add_row(rec["id"], rec["channel"], rec["check"] or "-", rec["transition"], rec["result"], rec["detail"] or "")
        console.print(t)
    if failed:
        raise typer.Exit(1)


_AFTER = {"skipped": "a worker took it and delivers it", "throttled": "waits for the channel's rate limit: a worker "
          "sends it", "early": "waits for its firing notice", "suppressed": "held back (a silence or an inhibition)"}


@digest_app.command("send")
def digest_send(preview: Annotated[bool, typer.Option("--preview", help="print the text part, send nothing")] = False) -> None:
    """Queue today's digest now (or print it)."""
    from worker.config import get_config
    from worker.fleet.db import fleet_engine
    from worker.notify import digest
    from worker.reports import queries

    settings()
    now = datetime.now(UTC)
    summaries = queries.sources(get_config())  # DATABASE_URL, or each target with the confirmations pack
    if preview:
        console.print(digest.render(digest.collect(fleet_engine(), summaries, now))["text"], highlight=False)
        return
    routing = get_config().routing
    channel = routing.digest.channel if routing and routing.digest else "email"
    nid = digest.enqueue(fleet_engine(), summaries, channel, now)
    if nid is None:
        console.print("today's digest was already queued")
        return
    from worker.app import app as celery_app

    celery_app.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")
    console.print(f"digest queued: notification {nid}")
