"""`opsfleet silence`, `opsfleet notify test` and `opsfleet digest`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from worker.cli.common import console, emit_json, settings, table
from worker.fleet.errors import OpsfleetError

silence_app = typer.Typer(no_args_is_help=True, help="Silences: mute notifications for a check or labels.")
notify_app = typer.Typer(no_args_is_help=True, help="Notifications.")
digest_app = typer.Typer(no_args_is_help=True, help="The daily digest.")


@silence_app.command("add")
def silence_add(
    check: Annotated[str | None, typer.Option(help="check name")] = None,
    label: Annotated[list[str] | None, typer.Option(help="k=v, repeatable")] = None,
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
    if check and check not in get_config().checks:
        raise OpsfleetError(f"--check {check!r}: no such check (`opsfleet checks list`)")
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


@digest_app.command("send")
def digest_send(preview: Annotated[bool, typer.Option("--preview", help="print the text part, send nothing")] = False) -> None:
    """Queue today's digest now (or print it)."""
    from worker.config import get_config
    from worker.fleet.db import fleet_engine, monitored_engine
    from worker.notify import digest

    settings()
    now = datetime.now(UTC)
    if preview:
        console.print(digest.render(digest.collect(fleet_engine(), monitored_engine(), now))["text"], highlight=False)
        return
    routing = get_config().routing
    channel = routing.digest.channel if routing and routing.digest else "email"
    nid = digest.enqueue(fleet_engine(), monitored_engine(), channel, now)
    if nid is None:
        console.print("today's digest was already queued")
        return
    from worker.app import app as celery_app

    celery_app.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")
    console.print(f"digest queued: notification {nid}")
