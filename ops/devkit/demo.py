"""`opsfleet demo`: the whole fleet on one machine, with sample data and captured notifications.

Starts (or reuses) Postgres and Redis, migrates, seeds the sample app with planted problems, runs a
worker and beat, and captures every email and Slack message in a loopback sink that speaks the
Resend and Slack APIs. Ctrl-C or --duration stops every process it started.
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
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from ops import sample_app
from ops.devkit.process import Proc
from ops.devkit.servers import PostgresServer, RedisServer, postgres_answers
from ops.devkit.sink import ProviderSink
from worker.checks.engine import run_check
from worker.config import load_config
from worker.fleet import migrate
from worker.fleet.db import create, normalize_url
from worker.fleet.errors import OpsfleetError, ServiceUnavailable
from worker.fleet.fields import severity_rank
from worker.fleet.redisconn import answers as redis_answers

console = Console(stderr=False)
REPO = Path(__file__).resolve().parents[2]
DEMO_DB = "opsfleet_demo"


class _Stop(Exception):
    pass


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise _Stop()


def _database(stack: contextlib.ExitStack, run_dir: Path) -> str:
    given = os.environ.get("DATABASE_URL")
    if given and postgres_answers(given):
        admin = given
        console.print(f"[dim]postgres:[/] using the server of DATABASE_URL, database {DEMO_DB}")
    else:
        if given:
            console.print("[yellow]DATABASE_URL does not answer; starting an embedded Postgres[/]")
        server = PostgresServer(run_dir / "postgres").start()
        stack.callback(server.stop)
        admin = server.url
        console.print(f"[dim]postgres:[/] embedded on 127.0.0.1:{server.port} (demo only, not for production)")
    engine = sa.create_engine(normalize_url(admin), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DEMO_DB}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{DEMO_DB}"'))
    engine.dispose()
    return sa.make_url(normalize_url(admin)).set(database=DEMO_DB).render_as_string(hide_password=False)


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
            db_url = _database(stack, run_dir)
            broker = _broker(stack, run_dir)
            migrate.upgrade(db_url)
            engine = create(db_url)
            stack.callback(engine.dispose)
            sample_app.init(engine)
            now = datetime.now(UTC)
            sample_app.seed_with_progress(engine, scale, now=now)
            sink = ProviderSink(capture_path=run_dir / "captured.jsonl").start()
            stack.callback(sink.stop)
            cfg_dir = Path(os.environ.get("OPSFLEET_CONFIG_DIR") or REPO / "config")
            cfg = load_config(cfg_dir, packs="all")  # every seed system: the sample app has their tables
            env = {
                **os.environ,
                "DATABASE_URL": db_url, "FLEET_DATABASE_URL": db_url, "CELERY_BROKER_URL": broker,
                "CELERY_RESULT_BACKEND": broker, "REDIS_URL": broker, "OPSFLEET_CONFIG_DIR": str(cfg_dir),
                "OPSFLEET_PACKS": "all",
                "RESEND_API_KEY": "re_demo_local_sink_key", "RESEND_API_URL": sink.resend_api_url,
                "ALERT_SLACK_WEBHOOK_URL": sink.slack_webhook_url,
                "ALERT_EMAIL_RECIPIENTS": "ops@example.com,oncall@example.com",
                "FROM_EMAIL": "alerts@opsfleet.example", "FROM_NAME": "opsfleet demo",
                "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
            }
            env.pop("SLACK_BOT_TOKEN", None)
            port, password = _free_port(8080), secrets.token_urlsafe(9)
            env.update(OPSFLEET_UI_AUTH=f"demo:{password}", OPSFLEET_PUBLIC_URL=f"http://127.0.0.1:{port}")
            # Replay each check's `for` window in-process, so rules with `for: 15m` can fire within a minute.
            for check in cfg.checks.values():
                if check.enabled and check.for_.total_seconds() > 0 and check.kind == "sql":
                    past = now - check.for_
                    with contextlib.suppress(Exception):
                        run_check(check, monitored=engine, fleet=engine, now=past, routing=cfg.routing, slot=past)
            celery = [sys.executable, "-m", "celery", "-A", "worker"]
            _spawn(stack, [*celery, "worker", "-Q", "checks,notify,maintenance,backlog,digest", "-c", "2",
                           "-n", "demo@%h", "--without-mingle", "--without-gossip", "-l", "INFO"],
                   env, run_dir / "worker.log")
            _spawn(stack, [*celery, "beat", "-l", "INFO", "-s", str(run_dir / "beat-schedule")], env,
                   run_dir / "beat.log")
            _spawn(stack, [sys.executable, "-m", "worker.cli", "serve", "--port", str(port)], env,
                   run_dir / "serve.log")
            console.print(f"[bold]status page:[/] http://127.0.0.1:{port}/  (user [bold]demo[/], password "
                          f"[bold]{password}[/]; API at /api/status, metrics at /metrics)", soft_wrap=True)
            _kick(env, cfg)
            _watch(engine, sink, duration, started)
        except (KeyboardInterrupt, _Stop):
            console.print("\n[yellow]stopping...[/]")
            interrupted = True
        except ServiceUnavailable:
            raise
        finally:
            with contextlib.suppress(Exception):
                _summary(engine, sink, run_dir)  # type: ignore[possibly-undefined]
    console.print(f"stopped every process the demo started; logs and captures in {run_dir}")
    return 130 if interrupted else 0


def _kick(env: dict[str, str], cfg) -> None:
    """Run every check once right away, the way an operator would with `celery call`."""
    from celery import Celery

    client = Celery(broker=env["CELERY_BROKER_URL"])
    client.conf.broker_transport_options = {"visibility_timeout": 7200}
    for name, check in cfg.checks.items():
        if check.enabled:
            client.send_task("checks.run", kwargs={"name": name, "slot": datetime.now(UTC).isoformat()}, queue="checks")
    client.send_task("notify.sweep", queue="notify")
    client.close()


def _tables(engine, sink) -> Group:
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT status, count(*) FROM fleet.check_runs GROUP BY status ORDER BY 1")).all()
        alerts = conn.execute(sa.text(
            "SELECT check_name, severity, state, summary FROM fleet.alerts WHERE state IN ('firing', 'pending') "
            "ORDER BY state, severity, check_name")).all()
        notes = conn.execute(sa.text("SELECT status, count(*) FROM fleet.notifications GROUP BY status ORDER BY 1")).all()
    t_runs = Table("status", "check runs", title="checks", expand=False)
    for status, n in runs:
        t_runs.add_row(status, str(n))
    t_alerts = Table("check", "severity", "state", "summary", title="alerts", expand=True)
    for r in alerts[:20]:
        t_alerts.add_row(r.check_name, r.severity, r.state, _short(r.summary, 70))
    t_msgs = Table("channel", "message", title=f"captured: {len(sink.emails)} emails, {len(sink.slack_messages)} Slack",
                   expand=True)
    for e in sink.emails[-6:]:
        t_msgs.add_row("email", e.get("subject", "") if isinstance(e, dict) else str(e))
    for m in sink.slack_messages[-6:]:
        t_msgs.add_row("slack", _short(m.get("text", "") if isinstance(m, dict) else str(m), 90))
    outbox = ", ".join(f"{s} {n}" for s, n in notes) or "empty"
    return Group(t_runs, t_alerts, t_msgs, Panel(f"outbox: {outbox}", expand=False))


def _watch(engine, sink, duration: float | None, started: float) -> None:
    with Live(_tables(engine, sink), console=console, refresh_per_second=1) as live:
        while duration is None or time.monotonic() - started < duration:
            time.sleep(1)
            live.update(_tables(engine, sink))


def _summary(engine, sink, run_dir: Path) -> None:
    with engine.connect() as conn:
        fired = conn.execute(sa.text(
            """SELECT a.check_name, a.severity, count(DISTINCT a.fingerprint) AS instances, min(a.summary) AS summary
               FROM fleet.alerts a WHERE EXISTS (SELECT 1 FROM fleet.alert_events e
                                                 WHERE e.fingerprint = a.fingerprint AND e.to_state = 'firing')
               GROUP BY a.check_name, a.severity""")).all()
    t = Table("check", "severity", "instances", "summary", title=f"alerts that fired: {sum(r.instances for r in fired)}")
    for r in sorted(fired, key=lambda r: (severity_rank(r.severity), r.check_name)):
        t.add_row(r.check_name, r.severity, str(r.instances), _short(r.summary, 80))
    console.print(t)
    m = Table("#", "channel", "to", "subject / text", title=f"messages captured: {len(sink.emails)} emails, "
                                                            f"{len(sink.slack_messages)} Slack")
    for n, record in enumerate(captured(run_dir), 1):
        if record["type"] == "email":
            to = record.get("to")
            m.add_row(str(n), "email", ", ".join(to) if isinstance(to, list) else str(to), record.get("subject", ""))
        else:
            m.add_row(str(n), "slack", record.get("channel") or "webhook", _short(record.get("text"), 100))
    console.print(m)
    console.print("info alerts go to the daily digest (`opsfleet digest send --preview`); read a captured message "
                  f"whole with `opsfleet demo-show N` (all of them: {run_dir / 'captured.jsonl'})", soft_wrap=True)


def _short(text: str | None, width: int) -> str:
    """At most `width` characters, cut at a word (never mid-word)."""
    return textwrap.shorten(" ".join((text or "").split()), width=width, placeholder=" ...") if text else ""


def captured(run_dir: Path) -> list[dict]:
    """Every message the demo's sink captured, in order (email and Slack)."""
    path = run_dir / "captured.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def show(n: int | None, run_dir: Path | None = None) -> str:
    """Captured message `n` (1-based; default the last) as text: headers, then the body people read."""
    run_dir = (run_dir or Path.cwd() / ".opsfleet-demo").resolve()
    records = captured(run_dir)
    if not records:
        raise OpsfleetError(f"no captured messages in {run_dir} (run `make demo` first)")
    n = len(records) if n is None else n
    if not 1 <= n <= len(records):
        raise OpsfleetError(f"message {n}: the demo captured {len(records)} (1 to {len(records)})")
    r = records[n - 1]
    if r["type"] == "email":
        to = ", ".join(r["to"]) if isinstance(r.get("to"), list) else str(r.get("to"))
        return f"email {n} of {len(records)}\nfrom: {r.get('from')}\nto: {to}\nsubject: {r.get('subject')}\n\n{r.get('text') or ''}"
    blocks = "\n".join(_block_text(b) for b in r.get("blocks") or [])
    return f"slack {n} of {len(records)} ({r.get('channel') or 'webhook'})\n\n{blocks or r.get('text') or ''}"


def _block_text(block: dict) -> str:
    parts = [block.get("text", {}).get("text", "") if isinstance(block.get("text"), dict) else ""]
    parts += [f.get("text", "") for f in block.get("fields") or [] if isinstance(f, dict)]
    parts += [e.get("text", "") for e in block.get("elements") or [] if isinstance(e, dict)]
    return "\n".join(p for p in parts if p)
