"""The fleet itself: `opsfleet db`, `opsfleet config`, `opsfleet ping`, `opsfleet metrics`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.common import console, err, settings, table
from worker.fleet.errors import OpsfleetError, ServiceUnavailable

db_app = typer.Typer(no_args_is_help=True, help="The fleet's own state (schema fleet).")
config_app = typer.Typer(no_args_is_help=True, help="config/: checks, routing, maintenance, backlogs.")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate schema `fleet` (idempotent; safe from several containers at once)."""
    from worker.fleet import migrate
    from worker.fleet.db import create, ping

    url = settings().require_fleet_database_url()
    engine = create(url)
    ping(engine, "the fleet database (FLEET_DATABASE_URL or DATABASE_URL)")
    engine.dispose()
    migrate.upgrade(url)
    console.print(f"fleet schema at revision {migrate.current(url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the fleet schema's migration revision."""
    from worker.fleet import migrate

    console.print(migrate.current(settings().require_fleet_database_url()) or "not migrated")


@config_app.command("validate")
def config_validate(
    path: Annotated[Path | None, typer.Argument(help="config folder")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="the files only: do not check the maintenance jobs' "
                                                            "tables, columns and functions against DATABASE_URL")] = False,
) -> None:
    """Validate every file under config/ (exit 2 with file:line and field on the first error), then,
    against DATABASE_URL when it is set, what the enabled packs, checks and jobs need of it (one line
    per missing table or function, per check whose query does not plan, per job naming what is not
    there)."""
    from worker.beat import build_schedule
    from worker.config import load_config
    from worker.fleet.db import safe_url
    from worker.startup import catalog_problems

    s = settings()
    cfg = load_config(path or s.opsfleet_config_dir)
    sched = build_schedule(cfg)
    if offline or not s.database_url:
        against = "not checked against a database" + ("" if offline else " (DATABASE_URL is not set)")
    else:
        try:
            errors = catalog_problems(cfg, s)
        except ServiceUnavailable as exc:
            raise ServiceUnavailable(f"{exc}; `opsfleet config validate --offline` checks the files only") from None
        if errors:
            for e in errors:
                err.print(f"opsfleet: error: {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        against = f"packs, checks and jobs checked against {safe_url(s.database_url)}"
    packs = ", ".join(cfg.packs) or "none"
    console.print(f"ok: packs {packs}; {len(cfg.checks)} checks, {len(cfg.maintenance)} maintenance jobs, "
                  f"{len(cfg.backlogs)} backlogs, {len(cfg.routing.routes) if cfg.routing else 0} routes, "
                  f"{len(sched)} beat entries ({cfg.root}); {against}", soft_wrap=True)


@config_app.command("env")
def config_env() -> None:
    """List the environment variables opsfleet reads and whether each is set (never the values)."""
    from worker.fleet.settings import DOCS, environ_summary

    t = table("variable", "set", "meaning")
    for name, is_set in environ_summary().items():
        t.add_row(name, "yes" if is_set else "-", DOCS[name])
    console.print(t)


def ping() -> None:
    """Check that the databases, the broker and Redis answer (one line each)."""
    from worker.fleet.db import create, safe_url
    from worker.fleet.db import ping as db_ping
    from worker.fleet.logs import mask_text
    from worker.startup import check_broker, check_redis

    s = settings()
    for what, url in (("DATABASE_URL", s.require_database_url()),
                      ("fleet database", s.require_fleet_database_url())):
        engine = create(url)
        try:
            db_ping(engine, what)
        finally:
            engine.dispose()
        console.print(f"ok: {what} {safe_url(url)}")
    props = check_broker(s)
    product = props.get("product", b"")
    product = product.decode() if isinstance(product, bytes) else str(product or "")
    console.print(f"ok: broker {mask_text(s.broker_url())}" + (f" ({product})" if product else ""))
    check_redis(s)
    console.print(f"ok: redis {mask_text(s.redis())}")


def metrics(port: Annotated[int, typer.Option(help="port to serve /metrics on")] = 9808,
            host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1") -> None:
    """Serve Prometheus metrics of the fleet (read from its state on each scrape), behind
    OPSFLEET_METRICS_AUTH when it is set (and /health, open)."""
    from prometheus_client import CollectorRegistry

    from worker.config import get_config
    from worker.fleet.db import fleet_engine, ping
    from worker.watch.metrics import FleetCollector
    from worker.web.server import Fleet, make_server

    s = settings()
    ping(fleet_engine(), "the fleet database")
    cfg = get_config()
    registry = CollectorRegistry()
    registry.register(FleetCollector(fleet_engine(), cfg))
    server = make_server(Fleet(s, cfg, registry), host, port)
    console.print(f"serving metrics on http://{host}:{server.server_address[1]}/metrics "
                  + _metrics_auth_note(s), soft_wrap=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


def _metrics_auth_note(s) -> str:
    if s.opsfleet_metrics_auth:
        return "(" + ("bearer token" if s.opsfleet_metrics_auth.startswith("Bearer ") else "basic auth") + \
            ": OPSFLEET_METRICS_AUTH)"
    return "(open: set OPSFLEET_METRICS_AUTH, its labels come from your checks' query columns)"


_STATE_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "off": "dim"}


def health(json_out: Annotated[bool, typer.Option("--json", help="one JSON document, stable field names")] = False,
           probe: Annotated[bool, typer.Option("--probe", help="also make each provider's harmless call "
                                                              "(Slack auth.test, Resend GET /domains)")] = False,
           timeout: Annotated[float, typer.Option(min=0.5, max=30, help="seconds per probe")] = 3.0) -> None:
    """Every dependency with its state and latency: databases, broker, Redis, the workers of each
    queue, beat, the channels, the outbox, checks in error, stale jobs; and each target (does its
    database answer, when did its checks last run), with a line per target down. Exit 0 when nothing
    fails, 1 when something does; a target down is its own alert, not the fleet's failure (exit 0)."""
    import json as jsonlib

    from worker.config import get_config
    from worker.watch import health as fleet_health

    s = settings()
    cfg = get_config()
    probes = fleet_health.run_all(s, cfg, probe=probe, timeout=timeout)
    status = fleet_health.overall(probes)
    if json_out:
        print(jsonlib.dumps({"status": status, "probes": [p.as_dict() for p in probes],
                             "targets": fleet_health.target_entries(probes)}, indent=2, default=str))
    else:
        t = table("dependency", "state", "ms", "detail", title=f"opsfleet health: {status}")
        for p in probes:
            t.add_row(p.name, f"[{_STATE_STYLE[p.state]}]{p.state}[/]",
                      "-" if p.latency_ms is None else f"{p.latency_ms:g}", p.detail)
        console.print(t)
        for p in fleet_health.down_targets(probes):
            console.print(f"{p.name} is down: {p.detail.removeprefix('down: ')} (its alert, not the fleet's failure)",
                          highlight=False, soft_wrap=True, markup=False)
    if status == "unhealthy":
        raise typer.Exit(1)


def serve(port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
          host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1") -> None:
    """Serve /health (and /health/database, /redis, /broker, /workers, /email, /slack) for load balancers
    and uptime checkers, /metrics for Prometheus, and the status page (/) with its JSON API (/api/),
    behind OPSFLEET_UI_AUTH."""
    from prometheus_client import CollectorRegistry

    from worker.config import get_config
    from worker.fleet.db import fleet_engine
    from worker.watch.metrics import FleetCollector
    from worker.web.server import Fleet, make_server

    s = settings()
    cfg = get_config()
    registry = CollectorRegistry()
    engine = fleet_engine()
    registry.register(FleetCollector(engine, cfg))
    server = make_server(Fleet(s, cfg, registry, engine=engine), host, port)
    base = f"http://{host}:{server.server_address[1]}"
    console.print(f"serving {base}/health and /metrics {_metrics_auth_note(s)}; the status page at {base}/ "
                  + ("(basic auth: OPSFLEET_UI_AUTH)" if s.opsfleet_ui_auth else "(off: set OPSFLEET_UI_AUTH=user:password)"),
                  soft_wrap=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


STARTER = Path(__file__).resolve().parent.parent / "starter"


def init(directory: Annotated[Path, typer.Argument(help="the config folder to create")] = Path("opsfleet-config"),
         force: Annotated[bool, typer.Option("--force", help="overwrite files that are there")] = False) -> None:
    """Write a starter config for your own application: packs.yaml (postgres, fleet and your app),
    targets.yaml (one target, DATABASE_URL), routing.yaml, and app/ with an example check. Point
    OPSFLEET_CONFIG_DIR at it."""
    import shutil

    files = sorted(p for p in STARTER.rglob("*.yaml"))
    there = [directory / p.relative_to(STARTER) for p in files if (directory / p.relative_to(STARTER)).exists()]
    if there and not force:
        raise OpsfleetError(f"{there[0]} is there already: choose another folder, or --force to overwrite "
                            f"({len(there)} file(s))")
    for src in files:
        dest = directory / src.relative_to(STARTER)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        console.print(f"wrote {dest}", highlight=False)
    console.print(f"next: export OPSFLEET_CONFIG_DIR={directory.resolve()}; opsfleet config validate", soft_wrap=True,
                  highlight=False)


TASK_VALUE_MAX = 300  # characters of a result or kwargs shown; --json prints them whole


def task_lines(task_id: str, doc: dict) -> list[str]:
    """`opsfleet task show`: one `field: value` line each, a result or kwargs as JSON, cut after
    TASK_VALUE_MAX characters with a pointer to --json (a progress result holds thousands)."""
    import json

    out = [f"task {task_id}"]
    for key in ("state", "name", "kwargs", "date_done", "result", "error"):
        value = doc[key]
        if value in (None, {}):
            continue
        if key == "state" and value == "PENDING":
            value = "PENDING: not started, or unknown (a wrong id, a notify task, or older than 24 h)"
        text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
        text = " ".join(text.split())  # one line: a traceback's or a message's newlines are spaces
        if len(text) > TASK_VALUE_MAX:
            text = f"{text[:TASK_VALUE_MAX]} ... ({len(text):,} characters; `opsfleet task show {task_id} --json` has it all)"
        out.append(f"{key + ':':<10} {text}")
    return out


task_app = typer.Typer(no_args_is_help=True, help="Tasks sent with `celery call` (which prints only an id).")


@task_app.command("show")
def task_show(task_id: Annotated[str, typer.Argument(help="the id `celery call` printed")],
              json_out: Annotated[bool, typer.Option("--json", help="one JSON document")] = False) -> None:
    """A task's state (PENDING, STARTED, PROGRESS, SUCCESS, FAILURE), its result or error, from the result
    backend (kept 24 h; notify tasks keep none)."""
    from worker.app import app as celery_app

    settings()
    result = celery_app.AsyncResult(task_id)
    state = result.state
    info = result.info
    doc = {"id": task_id, "state": state, "name": getattr(result, "name", None),
           "kwargs": getattr(result, "kwargs", None), "date_done": result.date_done,
           "result": info if state in ("SUCCESS", "PROGRESS") else None,
           "error": f"{type(info).__name__}: {info}" if state == "FAILURE" else None}
    if json_out:
        from worker.cli.common import emit_json

        emit_json(doc)
    else:
        for line in task_lines(task_id, doc):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    if state == "FAILURE":
        raise typer.Exit(1)
