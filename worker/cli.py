"""The `opsfleet` command."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from worker.errors import OpsfleetError, ServiceUnavailable

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="opsfleet: a Celery worker fleet that watches and repairs a Postgres database.")
db_app = typer.Typer(no_args_is_help=True, help="The fleet's own state (schema fleet).")
config_app = typer.Typer(no_args_is_help=True, help="config/: checks, routing, maintenance, backlogs.")
sample_app = typer.Typer(no_args_is_help=True, help="The sample application (ops/sample_app/).")
checks_app = typer.Typer(no_args_is_help=True, help="Checks (SQL alert rules).")
alerts_app = typer.Typer(no_args_is_help=True, help="Alert state.")
maint_app = typer.Typer(no_args_is_help=True, help="Maintenance jobs.")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(sample_app, name="sample-app")
app.add_typer(checks_app, name="checks")
app.add_typer(alerts_app, name="alerts")
app.add_typer(maint_app, name="maintenance")
silence_app = typer.Typer(no_args_is_help=True, help="Silences: mute notifications for a check or labels.")
notify_app = typer.Typer(no_args_is_help=True, help="Notifications.")
digest_app = typer.Typer(no_args_is_help=True, help="The daily digest.")
app.add_typer(silence_app, name="silence")
app.add_typer(notify_app, name="notify")
app.add_typer(digest_app, name="digest")
backlog_app = typer.Typer(no_args_is_help=True, help="Backlog reprocessing (seed 000's confirmation recovery).")
app.add_typer(backlog_app, name="backlog")

console = Console()
err = Console(stderr=True)


def _settings():
    from worker.logs import configure_logging
    from worker.settings import get_settings

    s = get_settings()
    configure_logging()
    return s


# -- db ----------------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate schema `fleet` (idempotent; safe from several containers at once)."""
    from worker import migrate
    from worker.db import create, ping

    url = _settings().require_fleet_database_url()
    engine = create(url)
    ping(engine, "the fleet database (FLEET_DATABASE_URL or DATABASE_URL)")
    engine.dispose()
    migrate.upgrade(url)
    console.print(f"fleet schema at revision {migrate.current(url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the fleet schema's migration revision."""
    from worker import migrate

    console.print(migrate.current(_settings().require_fleet_database_url()) or "not migrated")


# -- config ------------------------------------------------------------------------------------------
@config_app.command("validate")
def config_validate(
    path: Annotated[Path | None, typer.Argument(help="config folder")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="the files only: do not check the maintenance jobs' "
                                                            "tables, columns and functions against DATABASE_URL")] = False,
) -> None:
    """Validate every file under config/ (exit 2 with file:line and field on the first error), then the
    tables, columns and functions the maintenance jobs name against DATABASE_URL when it is set."""
    from worker.beat import build_schedule
    from worker.config import load_config
    from worker.db import safe_url
    from worker.maintenance import check_config_catalog

    settings = _settings()
    cfg = load_config(path or settings.opsfleet_config_dir)
    sched = build_schedule(cfg)
    if offline or not settings.database_url:
        against = "not checked against a database" + ("" if offline else " (DATABASE_URL is not set)")
    else:
        try:
            errors = check_config_catalog(cfg, settings.database_url)
        except ServiceUnavailable as exc:
            raise ServiceUnavailable(f"{exc}; `opsfleet config validate --offline` checks the files only") from None
        if errors:
            for e in errors:
                err.print(f"opsfleet: error: {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        against = f"maintenance jobs checked against {safe_url(settings.database_url)}"
    console.print(f"ok: {len(cfg.checks)} checks, {len(cfg.maintenance)} maintenance jobs, "
                  f"{len(cfg.backlogs)} backlogs, {len(cfg.routing.routes) if cfg.routing else 0} routes, "
                  f"{len(sched)} beat entries ({cfg.root}); {against}", soft_wrap=True)


@config_app.command("env")
def config_env() -> None:
    """List the environment variables opsfleet reads and whether each is set (never the values)."""
    from worker.settings import DOCS, environ_summary

    t = Table("variable", "set", "meaning")
    for name, is_set in environ_summary().items():
        t.add_row(name, "yes" if is_set else "-", DOCS[name])
    console.print(t)


# -- sample app --------------------------------------------------------------------------------------
@sample_app.command("init")
def sample_init() -> None:
    """Create the sample application's tables and functions in DATABASE_URL (idempotent)."""
    from ops import sample_app as sa_mod
    from worker.db import monitored_engine, ping

    engine = monitored_engine()
    ping(engine, "DATABASE_URL")
    sa_mod.init(engine)
    console.print("sample app schema ready")


@sample_app.command("seed")
def sample_seed(scale: Annotated[int, typer.Option(min=100, help="number of registrations")] = 10_000,
                seed: Annotated[int, typer.Option(help="random seed")] = 42) -> None:
    """Write realistic data with planted problems (streams in batches)."""
    from ops import sample_app as sa_mod
    from worker.db import monitored_engine, ping

    engine = monitored_engine()
    ping(engine, "DATABASE_URL")
    sa_mod.init(engine)
    counts = seed_with_progress(engine, scale, seed)
    console.print(f"seeded: {sum(counts.values()):,} rows in {len(counts)} tables")


def seed_with_progress(engine, scale: int, rng_seed: int = 42, now: datetime | None = None) -> dict[str, int]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ops.sample_app.seed import seed as do_seed

    with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=False) as progress:
        bars: dict[str, int] = {}

        def report(table: str, done: int, total: int) -> None:
            if table not in bars:
                bars[table] = progress.add_task(table, total=total)
            progress.update(bars[table], completed=done, total=total)

        return do_seed(engine, scale, now=now, progress=report, rng_seed=rng_seed)


# -- checks and alerts -------------------------------------------------------------------------------
@checks_app.command("list")
def checks_list() -> None:
    """Every check: schedule, severity, alert state and last run."""
    import sqlalchemy as sa

    from worker.config import get_config
    from worker.db import fleet_engine

    _settings()
    cfg = get_config()
    with fleet_engine().connect() as conn:
        last = {r.check_name: r for r in conn.execute(sa.text(
            "SELECT DISTINCT ON (check_name) check_name, started_at, status, error FROM fleet.check_runs "
            "ORDER BY check_name, started_at DESC"))}
        states = {r.check_name: r.states for r in conn.execute(sa.text(
            "SELECT check_name, string_agg(DISTINCT state, ',') AS states FROM fleet.alerts GROUP BY check_name"))}
    t = Table("check", "schedule", "severity", "state", "last run", "status")
    for name, c in sorted(cfg.checks.items()):
        r = last.get(name)
        t.add_row(name, c.schedule.text, c.severity, states.get(name, "-"),
                  r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r else "-", (r.status if r else "-"))
    console.print(t)


@checks_app.command("run")
def checks_run(name: str, dry_run: Annotated[bool, typer.Option("--dry-run", help="evaluate, change nothing")] = False) -> None:
    """Evaluate one check now and print its rows, the condition and the transition it makes."""
    import sqlalchemy as sa

    from worker.checking import CheckError, _active, collect, fingerprint, next_state, run_check
    from worker.config import get_config
    from worker.db import checks_engine, fleet_engine

    settings = _settings()
    cfg = get_config()
    check = cfg.checks.get(name)
    if check is None:
        raise OpsfleetError(f"unknown check {name!r}: `opsfleet checks list` shows the names")
    now = datetime.now(UTC)
    source = checks_engine(check.database)
    try:
        samples = collect(check, source, now, redis_url=settings.celery_broker_url)
    except CheckError as exc:
        raise OpsfleetError(str(exc)) from None
    with fleet_engine().connect() as conn:
        states = {r.fingerprint: r for r in conn.execute(
            sa.text("SELECT fingerprint, state, active_at FROM fleet.alerts WHERE check_name = :c"), {"c": name})}
    t = Table("labels", "value", f"condition {check.condition}", "state", "would become")
    for s in samples:
        fp = fingerprint(name, s.labels)
        row = states.get(fp)
        active = None if s.value is None else check.condition.holds(s.value)
        cur = row.state if row else "inactive"
        nxt = next_state(cur, _active(check, s.value), row.active_at if row else None, now, check.for_)
        t.add_row(", ".join(f"{k}={v}" for k, v in s.labels.items()) or "-", "NULL" if s.value is None else f"{s.value:g}",
                  "-" if active is None else str(active), cur, nxt)
    console.print(t)
    if not samples:
        console.print(f"no rows (no_data: {check.no_data})")
    if dry_run:
        return
    out = run_check(check, monitored=checks_engine("monitored"), fleet=fleet_engine(), fleet_queries=checks_engine("fleet"),
                    now=now, routing=cfg.routing, slot=now, redis_url=settings.celery_broker_url)
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

    from worker.backtest import backtest
    from worker.config import get_config
    from worker.db import checks_engine
    from worker.timeutil import format_duration, parse_duration

    _settings()
    cfg = get_config()
    check = cfg.checks.get(name)
    if check is None:
        raise OpsfleetError(f"unknown check {name!r}: `opsfleet checks list` shows the names")
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
        t.add_row(e.at.strftime("%Y-%m-%d %H:%M"), ", ".join(f"{k}={v}" for k, v in e.labels.items()) or "-",
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
    import sqlalchemy as sa

    from worker.db import fleet_engine

    _settings()
    q = "SELECT * FROM fleet.alerts WHERE (CAST(:s AS text) IS NULL OR state = :s) ORDER BY state, check_name"
    t = Table("check", "severity", "state", "since", "value", "labels", "summary")
    with fleet_engine().connect() as conn:
        for r in conn.execute(sa.text(q), {"s": state}):
            t.add_row(r.check_name, r.severity, r.state, r.since.strftime("%Y-%m-%d %H:%M:%S"),
                      "-" if r.last_value is None else f"{r.last_value:g}",
                      ", ".join(f"{k}={v}" for k, v in r.labels.items()), (r.summary or "")[:80])
    console.print(t)


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

    from worker import silences
    from worker.config import get_config
    from worker.db import fleet_engine
    from worker.timeutil import parse_duration

    _settings()
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


@silence_app.command("list")
def silence_list() -> None:
    """Active silences."""
    from worker import silences
    from worker.db import fleet_engine

    _settings()
    t = Table("id", "check", "labels", "ends (UTC)", "author", "comment")
    for r in silences.active(fleet_engine(), datetime.now(UTC)):
        t.add_row(str(r.id), r.matchers.get("check") or "*", ", ".join(f"{k}={v}" for k, v in r.matchers.get("labels", {}).items()),
                  r.ends_at.strftime("%Y-%m-%d %H:%M"), r.author, r.comment)
    console.print(t)


@silence_app.command("expire")
def silence_expire(silence_id: str) -> None:
    """End a silence now."""
    from worker import silences
    from worker.db import fleet_engine

    _settings()
    try:
        ok = silences.expire(fleet_engine(), silence_id, datetime.now(UTC))
    except ValueError as exc:
        raise OpsfleetError(str(exc)) from None
    if not ok:
        raise OpsfleetError(f"no active silence {silence_id}")
    console.print(f"silence {silence_id} expired")


@notify_app.command("test")
def notify_test(channel: Annotated[str | None, typer.Option(help="one channel from routing.yaml")] = None) -> None:
    """Send seed 001's "Test Alert" through the real pipeline; report what each provider answered."""
    import json
    import uuid

    import sqlalchemy as sa

    from worker.config import get_config
    from worker.db import fleet_engine, monitored_engine
    from worker.delivery import deliver

    settings = _settings()
    routing = get_config().routing
    if routing is None:
        raise OpsfleetError("no routing.yaml in the config folder: there are no channels to test")
    names = [channel] if channel else [n for n, c in routing.channels.items() if c.kind != "digest"]
    for n in names:
        if n not in routing.channels or routing.channels[n].kind == "digest":
            raise OpsfleetError(f"--channel {n!r}: not a deliverable channel in routing.yaml "
                                f"({', '.join(c for c in routing.channels if routing.channels[c].kind != 'digest')})")
    now = datetime.now(UTC)
    fleet = fleet_engine()
    t = Table("channel", "result", "provider answer")
    failed = False
    for n in names:
        payload = {"check": "system_test", "severity": "info", "status": "test", "title": "Test Alert",
                   "summary": "This is a test alert from the monitoring system",
                   "description": "Testing alert delivery (opsfleet notify test).", "labels": {"category": "system_test"}}
        with fleet.begin() as conn:
            nid = str(conn.execute(sa.text(
                """INSERT INTO fleet.notifications (channel, check_name, transition, payload, dedup_key, next_attempt_at)
                   VALUES (:ch, 'system_test', 'test', CAST(:p AS jsonb), :k, :now) RETURNING id"""),
                {"ch": n, "p": json.dumps(payload), "k": f"test:{n}:{uuid.uuid4()}", "now": now}).scalar())
        r = deliver(nid, fleet=fleet, settings=settings, routing=routing, now=now, monitored=monitored_engine())
        failed |= r.status != "sent"
        t.add_row(n, r.status, r.provider_id or r.error or "")
    console.print(t)
    if failed:
        raise typer.Exit(1)


@digest_app.command("send")
def digest_send(preview: Annotated[bool, typer.Option("--preview", help="print the text part, send nothing")] = False) -> None:
    """Queue today's digest now (or print it)."""
    from worker import digest
    from worker.config import get_config
    from worker.db import fleet_engine, monitored_engine

    _settings()
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


@backlog_app.command("status")
def backlog_status() -> None:
    """Pending confirmations, waiting or failed emails, and the backlog runs in progress."""
    from worker.backlog import backlog_status as status
    from worker.db import fleet_engine, monitored_engine

    _settings()
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

    from worker.backlog import confirmation_channel, reprocess
    from worker.db import fleet_engine, monitored_engine
    from worker.timeutil import parse_duration

    settings = _settings()
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
            result = reprocess(monitored_engine(), fleet_engine(), None if dry_run else confirmation_channel(settings),
                               limit=limit, batch_size=batch_size, dry_run=dry_run, older_than=age, progress=report)
        except ValueError as exc:
            raise OpsfleetError(str(exc)) from None
    summary = result.as_dict()
    console.print(", ".join(f"{k} {v}" for k, v in summary.items() if not isinstance(v, (dict, list))))
    if result.status == "error":
        raise typer.Exit(1)


@maint_app.command("run")
def maintenance_run(job: str) -> None:
    """Run one maintenance job now, in this process."""
    from worker.config import get_config
    from worker.db import fleet_engine, monitored_engine
    from worker.maintenance import run_job

    _settings()
    spec = get_config().maintenance.get(job)
    if spec is None:
        raise OpsfleetError(f"unknown maintenance job {job!r}; known: {', '.join(sorted(get_config().maintenance))}")
    r = run_job(spec, monitored=monitored_engine(), fleet=fleet_engine(), now=datetime.now(UTC))
    console.print(f"{job}: {r.status}, {r.rows} rows in {r.batches} batches" + (f" ({r.error})" if r.error else ""))
    if r.status == "error":
        raise typer.Exit(1)


@app.command()
def ping() -> None:
    """Check that the databases and the broker answer (one line each)."""
    from worker.db import create, safe_url
    from worker.db import ping as db_ping
    from worker.servers import redis_answers

    settings = _settings()
    for what, url in (("DATABASE_URL", settings.require_database_url()),
                      ("fleet database", settings.require_fleet_database_url())):
        engine = create(url)
        try:
            db_ping(engine, what)
        finally:
            engine.dispose()
        console.print(f"ok: {what} {safe_url(url)}")
    broker = settings.celery_broker_url
    if broker.startswith("redis") and not redis_answers(broker):
        from worker.logs import mask_text

        raise ServiceUnavailable(f"cannot reach the broker at {mask_text(broker)} (is Redis running? CELERY_BROKER_URL)")
    console.print("ok: broker")


@app.command()
def metrics(port: Annotated[int, typer.Option(help="port to serve /metrics on")] = 9808,
            host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1") -> None:
    """Serve Prometheus metrics of the fleet (read from its state on each scrape)."""
    import time

    from prometheus_client import REGISTRY, start_http_server

    from worker.config import get_config
    from worker.db import fleet_engine, ping
    from worker.metrics import FleetCollector

    _settings()
    ping(fleet_engine(), "the fleet database")
    REGISTRY.register(FleetCollector(fleet_engine(), get_config()))
    start_http_server(port, addr=host)
    console.print(f"serving metrics on http://{host}:{port}/metrics")
    while True:
        time.sleep(3600)


# -- demo --------------------------------------------------------------------------------------------
@app.command()
def demo(duration: Annotated[float | None, typer.Option(help="stop after S seconds (default: until Ctrl-C)")] = None,
         scale: Annotated[int, typer.Option(help="registrations to seed")] = 20_000,
         run_dir: Annotated[Path | None, typer.Option(help="folder for the embedded servers and logs")] = None) -> None:
    """Run the whole fleet on an embedded Postgres and Redis with sample data and planted problems."""
    from worker.demo import run_demo

    run_demo(duration=duration, scale=scale, run_dir=run_dir)


def main() -> None:
    import sqlalchemy.exc

    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except OpsfleetError as exc:
        err.print(f"opsfleet: error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except sqlalchemy.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        err.print(f"opsfleet: error: {ServiceUnavailable.__name__}: the database did not answer: {reason}",
                  highlight=False, soft_wrap=True)
        sys.exit(3)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
