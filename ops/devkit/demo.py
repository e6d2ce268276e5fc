"""`opsfleet demo`: the whole fleet on one machine, with sample data and captured notifications.

Starts (or reuses) Postgres and Redis, creates the fleet's database and one database per seed system
(the five targets of demo_config/targets.yaml, each with the postgres pack and its own), seeds each
with its system's tables and planted problems, runs a worker, beat and the status page, and captures
every email and Slack message in a loopback sink that speaks the Resend and Slack APIs. The checks log
in as MONITOR_ROLE, the README's least-privilege role; what writes (maintenance, backlogs) as the
given role. Ctrl-C or --duration stops every process it started; demo_show prints what happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from ops import sample_app
from ops.devkit import demo_show
from ops.devkit.demo_show import captured
from ops.devkit.process import Proc
from ops.devkit.servers import PostgresServer, RedisServer, postgres_answers
from ops.devkit.sink import ProviderSink
from worker.checks.engine import run_check
from worker.config import load_config
from worker.fleet import migrate
from worker.fleet.db import create, normalize_url
from worker.fleet.errors import ServiceUnavailable
from worker.fleet.redisconn import answers as redis_answers
from worker.fleet.settings import Settings

console = Console(stderr=False)
REPO = Path(__file__).resolve().parents[2]
DEMO_DB = "opsfleet_demo"  # the fleet's own state; each system's database is DEMO_DB_<system>
DEMO_CONFIG = Path(__file__).resolve().parent / "demo_config"  # targets.yaml: the five, from the variables below


MONITOR_ROLE = "opsfleet_demo_monitor"  # the README's least-privilege role (Least privilege): the checks' login
# what the README grants the monitoring role in each database, once its tables exist
_MONITOR_GRANTS = ("GRANT USAGE ON SCHEMA public TO {role}", "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
                   "GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
                   "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}")


def url_variable(system: str) -> str:
    """The variable the demo exports a system's database URL in (demo_config/targets.yaml reads it):
    the monitoring role's, which its checks use."""
    return f"{system.upper()}_DATABASE_URL"


def maintenance_variable(system: str) -> str:
    """The variable of a system's maintenance_url (targets.yaml): the admin's, for what writes there
    (maintenance jobs, backlogs)."""
    return f"{system.upper()}_MAINTENANCE_URL"


class _Stop(Exception):
    pass


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise _Stop()


def _server(stack: contextlib.ExitStack, run_dir: Path) -> str:
    """A Postgres server's URL: DATABASE_URL's when it answers, else an embedded one."""
    given = os.environ.get("DATABASE_URL")
    if given and postgres_answers(given):
        console.print(f"[dim]postgres:[/] using the server of DATABASE_URL, databases {DEMO_DB} and {DEMO_DB}_<system>")
        return given
    if given:
        console.print("[yellow]DATABASE_URL does not answer; starting an embedded Postgres[/]")
    server = PostgresServer(run_dir / "postgres").start()
    stack.callback(server.stop)
    console.print(f"[dim]postgres:[/] embedded on 127.0.0.1:{server.port} (demo only, not for production)")
    return server.url


def _databases(admin: str, names: list[str]) -> dict[str, str]:
    """Each of `names` created afresh on the server of `admin` (dropped first); name -> its URL."""
    engine = sa.create_engine(normalize_url(admin), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return {name: sa.make_url(normalize_url(admin)).set(database=name).render_as_string(hide_password=False)
            for name in names}


def _init_systems(urls: dict[str, str]) -> None:
    """Each seed system's schema in its own database (what a worker checks its targets for at start)."""
    for system, url in urls.items():
        engine = create(url, pool_size=1)
        try:
            sample_app.init(engine, [system])
        finally:
            engine.dispose()


def _monitoring_role(admin: str, urls: dict[str, str], role: str = MONITOR_ROLE) -> dict[str, str]:
    """`role` (MONITOR_ROLE) with a fresh random password (in its URLs: a server with password auth takes it),
    granted as the README says on each of `urls`' databases; each system's URL as that role. A server
    that refuses (the given role may not create roles or grant pg_monitor): `urls`, with one line."""
    password = secrets.token_hex(16)
    engine = sa.create_engine(normalize_url(admin), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            verb = "ALTER" if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                                           {"r": role}).first() else "CREATE"
            # libpq's hash (SCRAM), as psql's \password: the password itself never reaches the server's
            # statement logs or pg_stat_statements, where the checks' pg_monitor could read it
            hashed = conn.connection.driver_connection.pgconn.encrypt_password(password.encode(), role.encode())
            conn.exec_driver_sql(f"{verb} ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                 f"PASSWORD '{hashed.decode()}'")  # (base64 and $: no quote, no bind marker)
            conn.execute(sa.text(f"GRANT pg_monitor TO {role}"))
            for url in urls.values():
                conn.execute(sa.text(f'GRANT CONNECT ON DATABASE "{sa.make_url(url).database}" TO {role}'))
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        console.print(f"[yellow]monitoring role:[/] the server refuses to create {role} ({escape(reason)}); the "
                      "checks run as the given role (`opsfleet health` will warn about it)", soft_wrap=True)
        return dict(urls)
    finally:
        engine.dispose()
    for url in urls.values():
        engine = create(url, pool_size=1)
        try:
            with engine.begin() as conn:
                for grant in _MONITOR_GRANTS:
                    conn.execute(sa.text(grant.format(role=role)))
        finally:
            engine.dispose()
    console.print(f"[dim]checks:[/] as {role}, a read-only monitoring role (README, Least privilege); "
                  "maintenance and backlogs as the given role", soft_wrap=True)
    return {system: sa.make_url(url).set(username=role, password=password).render_as_string(hide_password=False)
            for system, url in urls.items()}


def _seed_systems(urls: dict[str, str], scale: int, now: datetime) -> None:
    """Each seed system's data and planted problems in its own database."""
    for system, url in urls.items():
        engine = create(url, pool_size=1)
        try:
            sample_app.seed_with_progress(engine, scale, now=now, systems=[system], label=f"{system}: ")
        finally:
            engine.dispose()  # closes its connections: their statistics (the dead tuples) are published


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """os.environ as `env` for a moment (the config loads the targets' ${VAR}s from it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _broker(stack: contextlib.ExitStack, run_dir: Path) -> str:
    given = os.environ.get("CELERY_BROKER_URL")
    if given and redis_answers(given):
        console.print("[dim]redis:[/] using CELERY_BROKER_URL")
        return given
    server = RedisServer(run_dir / "redis").start()
    stack.callback(server.stop)
    console.print(f"[dim]redis:[/] embedded at {server.url} (demo only, not for production)")
    return server.url


def _free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else a free port the system picks."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port for the status page")


def _spawn(stack: contextlib.ExitStack, args: list[str], env: dict[str, str], log: Path) -> Proc:
    proc = Proc(args, env, log)
    stack.callback(proc.stop)
    return proc


def run_demo(*, duration: float | None, scale: int, run_dir: Path | None) -> int:
    """Run it; the exit code: 0 when --duration ran out, 130 after Ctrl-C (or SIGTERM)."""
    interrupted = False
    run_dir = (run_dir or Path.cwd() / ".opsfleet-demo").resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.callback(signal.signal, signal.SIGTERM, previous)
        try:
            admin = _server(stack, run_dir)
            made = _databases(admin, [DEMO_DB, *(f"{DEMO_DB}_{system}" for system in sample_app.SYSTEMS)])
            fleet_url = made[DEMO_DB]
            urls = {system: made[f"{DEMO_DB}_{system}"] for system in sample_app.SYSTEMS}
            broker = _broker(stack, run_dir)
            migrate.upgrade(fleet_url)
            engine = create(fleet_url)
            stack.callback(engine.dispose)
            _init_systems(urls)
            monitor = _monitoring_role(admin, urls)  # the checks' URLs; `urls` stay the admin's
            sink = ProviderSink(capture_path=run_dir / "captured.jsonl").start()
            stack.callback(sink.stop)
            cfg_dir = Path(os.environ.get("OPSFLEET_CONFIG_DIR") or DEMO_CONFIG)
            env = {
                **os.environ,
                **{url_variable(system): url for system, url in monitor.items()},
                **{maintenance_variable(system): url for system, url in urls.items()},
                # what is not per target (the system_alerts channel, `opsfleet health`'s database and
                # checks role lines) reads DATABASE_URL / MAINTENANCE_DATABASE_URL: the confirmations database
                "DATABASE_URL": monitor["confirmations"], "MAINTENANCE_DATABASE_URL": urls["confirmations"],
                "FLEET_DATABASE_URL": fleet_url, "CELERY_BROKER_URL": broker,
                "CELERY_RESULT_BACKEND": broker, "REDIS_URL": broker, "OPSFLEET_CONFIG_DIR": str(cfg_dir),
                "RESEND_API_KEY": "re_demo_local_sink_key", "RESEND_API_URL": sink.resend_api_url,
                "ALERT_SLACK_WEBHOOK_URL": sink.slack_webhook_url,
                "ALERT_EMAIL_RECIPIENTS": "ops@example.com,oncall@example.com",
                "FROM_EMAIL": "alerts@opsfleet.example", "FROM_NAME": "opsfleet demo",
                "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
            }
            for name in ("SLACK_BOT_TOKEN", "OPSFLEET_PACKS"):
                env.pop(name, None)
            with _environ(env):
                cfg = load_config(cfg_dir)
            console.print(f"[dim]targets:[/] {', '.join(cfg.targets)} ({cfg_dir / 'targets.yaml'})", soft_wrap=True)
            port, password = _free_port(8080), secrets.token_urlsafe(9)
            env.update(OPSFLEET_UI_AUTH=f"demo:{password}", OPSFLEET_PUBLIC_URL=f"http://127.0.0.1:{port}")
            # the worker and the status page start while the data is written (the beat after it: it
            # would evaluate empty tables); the worker needs only the schemas to start
            celery = [sys.executable, "-m", "celery", "-A", "worker"]
            _spawn(stack, [*celery, "worker", "-Q", "checks,notify,maintenance,backlog,digest", "-c", "2",
                           "-n", "demo@%h", "--without-mingle", "--without-gossip", "-l", "INFO"],
                   env, run_dir / "worker.log")
            _spawn(stack, [sys.executable, "-m", "worker.cli", "serve", "--port", str(port)], env,
                   run_dir / "serve.log")
            now = datetime.now(UTC)
            _seed_systems(urls, scale, now)
            _replay_for_windows(cfg, engine, env["DATABASE_URL"], now)
            _spawn(stack, [*celery, "beat", "-l", "INFO", "-s", str(run_dir / "beat-schedule")], env,
                   run_dir / "beat.log")
            console.print(f"[bold]status page:[/] http://127.0.0.1:{port}/  (user [bold]demo[/], password "
                          f"[bold]{password}[/]; API at /api/status, metrics at /metrics)", soft_wrap=True)
            _kick(env, cfg)
            _watch(engine, sink, duration, started, _Rechecks(env, cfg, engine))
        except (KeyboardInterrupt, _Stop):
            console.print("\n[yellow]stopping...[/]")
            interrupted = True
        except ServiceUnavailable:
            raise
        finally:
            with contextlib.suppress(Exception):
                _summary(engine, sink, run_dir, cfg, env, admin)  # type: ignore[possibly-undefined]
    console.print(f"stopped every process the demo started; logs and captures in {run_dir}")
    return 130 if interrupted else 0


def _replay_for_windows(cfg, fleet: sa.Engine, default_url: str, now: datetime) -> None:
    """Evaluate each check with a `for` window at the window's start, in-process, on each of its
    targets, so rules with `for: 15m` can fire within a minute (the kick at `now` completes them)."""
    engines: dict[str, sa.Engine] = {}
    try:
        for run in cfg.scheduled_checks():
            check = run.check
            if not (check.enabled and check.kind == "sql" and check.for_.total_seconds() > 0):
                continue
            target = cfg.targets.get(run.target) if run.target else None
            url = target.url if target is not None and target.url else default_url
            if url not in engines:
                engines[url] = create(url, pool_size=1)
            past = now - check.for_
            with contextlib.suppress(Exception):
                run_check(check, monitored=engines[url], fleet=fleet, now=past, routing=cfg.routing, slot=past,
                          target=run.key, target_labels=target.alert_labels() if target is not None else None)
    finally:
        for engine in engines.values():
            engine.dispose()


def _kick(env: dict[str, str], cfg) -> None:
    """Run every check once right away on each of its targets, the way an operator would with `celery call`:
    first those of one target (its own system's pack, where most problems are planted), then those
    every target runs (the postgres pack), then the fleet's own."""
    from celery import Celery

    client = Celery(broker=env["CELERY_BROKER_URL"])
    client.conf.broker_transport_options = {"visibility_timeout": 7200}
    runs = sorted(cfg.scheduled_checks(), key=lambda run: (run.key == "", len(cfg.targets_of(run.check.name)) > 1))
    for run in runs:
        if run.check.enabled:
            kwargs = {"name": run.check.name, "slot": datetime.now(UTC).isoformat()}
            if run.target:
                kwargs["target"] = run.target
            client.send_task("checks.run", kwargs=kwargs, queue=run.queue_name)
    client.send_task("notify.sweep", queue="notify")
    client.close()


class _Rechecks:
    """Once a check's remediation has run to the end after its alert fired, that check runs again on its
    target at once (as an operator would after a fix), once: the demo shows the alert resolve."""

    _DONE = sa.text("""SELECT a.target FROM fleet.alerts a WHERE a.check_name = :check AND a.state = 'firing' AND EXISTS (
                         SELECT 1 FROM fleet.job_runs j WHERE j.job = :job AND j.target = a.target AND j.status = 'ok'
                           AND j.started_at >= a.fired_at)""")

    def __init__(self, env: dict[str, str], cfg, engine: sa.Engine) -> None:
        self.env, self.cfg, self.engine, self.done = env, cfg, engine, set()
        self.runs = {(r.check.name, r.key): r for r in cfg.scheduled_checks() if r.check.enabled and r.check.remediate}

    def __call__(self) -> None:
        from celery import Celery

        with self.engine.connect() as conn:
            due = [(name, t) for name in {n for n, _ in self.runs} for t in conn.execute(
                self._DONE, {"check": name, "job": demo_show.remediation_job(self.cfg.checks[name])}).scalars()
                if (name, t) in self.runs and (name, t) not in self.done]
        if due:
            client = Celery(broker=self.env["CELERY_BROKER_URL"])
            for key in due:
                self.done.add(key)
                run = self.runs[key]
                client.send_task("checks.run", queue=run.queue_name, kwargs={
                    "name": run.check.name, "slot": datetime.now(UTC).isoformat(), **({"target": run.target} if run.target else {})})
            client.close()


def _watch(engine, sink, duration: float | None, started: float, recheck: _Rechecks) -> None:
    with Live(demo_show.live_tables(engine, sink), console=console, refresh_per_second=1) as live:
        while duration is None or time.monotonic() - started < duration:
            time.sleep(1)
            recheck()
            live.update(demo_show.live_tables(engine, sink))


def _summary(engine, sink, run_dir: Path, cfg, env: dict[str, str], admin: str) -> None:
    """What fired (then and now), who the checks ran as, the fleet's health, what was captured."""
    with engine.connect() as conn:
        fired = demo_show.fired_alerts(conn, cfg)
    (run_dir / "fired.json").write_text(json.dumps(fired, indent=1, default=str) + "\n")
    demo_show.print_fired(console, fired)
    console.print(demo_show.checks_line(engine, admin), soft_wrap=True)
    with _environ(env):
        settings = Settings()
    console.print(demo_show.health_line(settings, cfg, env["CELERY_BROKER_URL"]), soft_wrap=True, markup=False)
    demo_show.print_messages(console, captured(run_dir), run_dir)
    console.print(f"every alert that fired, with its labels: {run_dir / 'fired.json'}", soft_wrap=True)
    console.print("info alerts go to the daily digest (`opsfleet digest send --preview`); read a captured message "
                  f"whole with `opsfleet demo-show N` (all of them: {run_dir / 'captured.jsonl'})", soft_wrap=True)
