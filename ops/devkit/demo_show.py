"""What `opsfleet demo` shows. While it runs: its tables. When it stops: each alert that fired with
what it said when it fired and its state now (resolved, and after which remediation run), who the
checks ran as, the fleet's health as the status page shows it, and the alert messages apart from the
customers' confirmation emails the backlog recovery sent (the application's own mail, captured by
the same sink). And `opsfleet demo-show N`: one captured message whole."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from worker.checks.templates import render
from worker.fleet.errors import OpsfleetError
from worker.fleet.fields import severity_rank

_TARGET_LABEL = re.compile(r"\btarget=([a-z0-9_]+)")
CHECKS_APP = "opsfleet-checks"  # the application_name of the workers' check connections (worker.fleet.db)


def short(text: str | None, width: int) -> str:
    """At most `width` characters, cut at a word (never mid-word)."""
    return textwrap.shorten(" ".join((text or "").split()), width=width, placeholder=" ...") if text else ""


def target_name(key: str) -> str:
    """A target's name as the fleet's state keys it ("": the fleet's own checks)."""
    return key or "(fleet)"


def targets_of(record: dict) -> list[str]:
    """The targets a captured message is about, in order: the `target=` labels its alerts show (none
    for a message of no alert, such as a customer's confirmation email)."""
    return list(dict.fromkeys(_TARGET_LABEL.findall(json.dumps(record))))


def captured(run_dir: Path) -> list[dict]:
    """Every message the demo's sink captured, in order (email and Slack)."""
    path = run_dir / "captured.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_customer_email(record: dict) -> bool:
    """A confirmation email to a customer (worker/backlog/confirmations.py tags it category=confirmation),
    not an alert."""
    return record.get("type", "email") == "email" and any(
        isinstance(t, dict) and t.get("name") == "category" and t.get("value") == "confirmation"
        for t in record.get("tags") or [])


def _ranges(numbers: list[int]) -> str:
    """1, 2, 3, 7 -> "1-3, 7"."""
    out: list[list[int]] = []
    for n in numbers:
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


_FIRED = sa.text("""
    SELECT a.target, a.check_name, a.severity, a.state, a.labels, a.summary, a.resolved_at,
           e.value AS fired_value, e.labels AS fired_labels, e.at AS fired_at
    FROM fleet.alerts a
    JOIN LATERAL (SELECT value, labels, at FROM fleet.alert_events ev
                  WHERE ev.fingerprint = a.fingerprint AND ev.to_state = 'firing'
                  ORDER BY ev.at DESC LIMIT 1) e ON true
    ORDER BY a.target, a.check_name, a.fingerprint""")
_REMEDIATION = sa.text("""
    SELECT job, status, rows_affected, started_at FROM fleet.job_runs
    WHERE job = :job AND target = :target AND started_at >= :fired AND status <> 'dry_run'
    ORDER BY started_at LIMIT 1""")


def remediation_job(check: Any) -> str | None:
    """The fleet.job_runs name of the task a check's firing enqueues (its `remediate:`), or None."""
    from worker.backlog.spec import JOBS

    if check is None or check.remediate is None:
        return None
    task = check.remediate.task
    return JOBS.get(task) or check.remediate.kwargs.get("job") or task.rsplit(".", 1)[-1]


def live_tables(engine, sink) -> Group:
    """The tables the demo shows while it runs: runs per target, alerts firing or pending, alert messages."""
    with engine.connect() as conn:
        runs = conn.execute(sa.text(
            """SELECT r.target, count(*) AS runs, count(*) FILTER (WHERE r.status = 'error') AS errors,
                      (SELECT count(*) FROM fleet.alerts a WHERE a.target = r.target AND a.state = 'firing') AS firing,
                      (SELECT count(*) FROM fleet.alerts a WHERE a.target = r.target AND a.state = 'pending') AS pending
               FROM fleet.check_runs r GROUP BY r.target ORDER BY r.target = '', r.target""")).all()
        alerts = conn.execute(sa.text(
            "SELECT target, check_name, severity, state, summary FROM fleet.alerts WHERE state IN ('firing', 'pending') "
            "ORDER BY state, severity, target, check_name")).all()
        notes = conn.execute(sa.text("SELECT status, count(*) FROM fleet.notifications GROUP BY status ORDER BY 1")).all()
    t_runs = Table("target", "check runs", "errors", "firing", "pending", title="targets", expand=False)
    for r in runs:
        t_runs.add_row(target_name(r.target), str(r.runs), str(r.errors), str(r.firing), str(r.pending))
    t_alerts = Table("target", "check", "severity", "state", "summary", title="alerts", expand=True)
    for r in alerts[:20]:
        t_alerts.add_row(target_name(r.target), r.check_name, r.severity, r.state, short(r.summary, 70))
    emails = [e for e in sink.emails if isinstance(e, dict)]
    alert_emails = [e for e in emails if not is_customer_email(e)]
    customers = len(emails) - len(alert_emails)
    t_msgs = Table("channel", "message", title=f"alert messages: {len(alert_emails)} emails, {len(sink.slack_messages)} "
                   f"Slack" + (f" (and {customers} customer emails from the backlog recovery)" if customers else ""),
                   expand=True)
    for e in alert_emails[-6:]:
        t_msgs.add_row("email", e.get("subject", ""))
    for m in sink.slack_messages[-6:]:
        t_msgs.add_row("slack", short(m.get("text", "") if isinstance(m, dict) else str(m), 90))
    outbox = ", ".join(f"{s} {n}" for s, n in notes) or "empty"
    return Group(t_runs, t_alerts, t_msgs, Panel(f"outbox: {outbox}", expand=False))


def fired_alerts(conn: sa.Connection, cfg: Any) -> list[dict[str, Any]]:
    """Each alert that fired: what it said when it last fired (its summary rendered with the value and
    labels of its firing event, as the engine rendered it then), its state and summary now, and the
    first run of its remediation after it fired (None when it has none or none ran)."""
    out = []
    for r in conn.execute(_FIRED):
        check = cfg.checks.get(r.check_name)
        fired = (render(check.summary, value=r.fired_value, labels=r.fired_labels, check=r.check_name)
                 if check is not None else r.summary)
        job, ran = remediation_job(check), None
        if job:
            run = conn.execute(_REMEDIATION, {"job": job, "target": r.target, "fired": r.fired_at}).first()
            if run is not None and (r.resolved_at is None or r.state != "resolved" or run.started_at <= r.resolved_at):
                ran = {"job": run.job, "status": run.status, "rows": run.rows_affected,
                       "at": run.started_at.isoformat()}
        out.append({"target": r.target, "check": r.check_name, "severity": r.severity, "state": r.state,
                    "labels": r.labels, "fired_summary": fired, "summary": r.summary, "remediation": ran})
    return out


def _now_text(rows: list[dict[str, Any]]) -> str:
    """An alert group's state now, and the remediation that ran after it fired."""
    states: dict[str, int] = {}
    for a in rows:
        states[a["state"]] = states.get(a["state"], 0) + 1
    text = ", ".join(f"{n} {s}" for s, n in states.items()) if len(rows) > 1 else rows[0]["state"]
    ran = next((a["remediation"] for a in rows if a["remediation"]), None)
    if ran:
        how = f"remediation {ran['job']} ({ran['rows'] or 0} rows{'' if ran['status'] == 'ok' else ', ' + ran['status']})"
        text += f" after {how}" if set(states) == {"resolved"} else f"; {how} ran"
    return text


def print_fired(console: Console, fired: list[dict[str, Any]]) -> None:
    groups: dict[tuple[str, str, str], list] = {}
    for a in fired:
        groups.setdefault((a["target"], a["check"], a["severity"]), []).append(a)
    targets = {a["target"] for a in fired if a["target"]}
    t = Table("target", "check", "severity", "n", "when it fired", "now",
              title=f"alerts that fired: {len(fired)} on {len(targets)} targets")
    for (target, check, severity), rows in sorted(groups.items(), key=lambda g: (g[0][0] == "", g[0][0],
                                                                                 severity_rank(g[0][2]), g[0][1])):
        t.add_row(target_name(target), check, severity, str(len(rows)),
                  short(min(a["fired_summary"] or "" for a in rows), 70), _now_text(rows))
    console.print(t)


def print_messages(console: Console, records: list[dict], run_dir: Path) -> None:
    """The alert messages as a table, the customers' confirmation emails as one line (their numbers)."""
    emails = sum(r["type"] == "email" for r in records)
    console.print(f"messages captured: {emails} emails, {len(records) - emails} Slack")
    customers = [n for n, r in enumerate(records, 1) if is_customer_email(r)]
    alerts = [(n, r) for n, r in enumerate(records, 1) if not is_customer_email(r)]
    mails = sum(r["type"] == "email" for _, r in alerts)
    m = Table("#", "channel", "target", "to", "subject / text",
              title=f"alert messages: {mails} emails, {len(alerts) - mails} Slack")
    for n, record in alerts:
        on = ", ".join(targets_of(record)) or "-"
        if record["type"] == "email":
            to = record.get("to")
            m.add_row(str(n), "email", on, ", ".join(to) if isinstance(to, list) else str(to), record.get("subject", ""))
        else:
            m.add_row(str(n), "slack", on, record.get("channel") or "webhook", short(record.get("text"), 100))
    console.print(m)
    if customers:
        console.print(f"customer emails: {len(customers)} confirmation emails sent to customers by the backlog "
                      f"recovery (the application's mail, not alerts): messages {_ranges(customers)} of "
                      f"{run_dir / 'captured.jsonl'}", soft_wrap=True)


def checks_line(fleet: sa.Engine, admin_url: str | None) -> str:
    """How many check runs, how many in error, and the roles the workers' check connections to the
    targets' databases log in as now (pg_stat_activity, seen with the admin URL)."""
    from worker.fleet.db import create

    with fleet.connect() as conn:
        runs, errors = conn.execute(sa.text(
            "SELECT count(*), count(*) FILTER (WHERE status = 'error') FROM fleet.check_runs")).one()
    roles = "?"
    if admin_url:
        admin = create(admin_url, pool_size=1)
        try:
            with admin.connect() as conn:
                found = conn.execute(sa.text(
                    """SELECT usename, count(DISTINCT datname) FROM pg_stat_activity
                       WHERE application_name = :app AND datname LIKE 'opsfleet\\_demo\\_%'
                       GROUP BY usename ORDER BY usename"""), {"app": CHECKS_APP}).all()
        finally:
            admin.dispose()
        roles = ", ".join(f"{u} (on {n} target databases)" for u, n in found) or "nobody now"
    return f"checks: {runs} runs, {errors} errors; their connections log in as {roles}"


def health_line(settings: Any, cfg: Any, broker: str) -> str:
    """The fleet's health as the status page and `opsfleet health` show it, and what is not ok."""
    from celery import Celery

    from worker.watch import health

    client = Celery(broker=broker)
    try:
        probes = health.run_all(settings, cfg, timeout=2.0, app=client)
    finally:
        client.close()
    bad = [f"{p.name}: {p.state}: {p.detail}" for p in probes if p.state in ("warn", "fail")]
    return f"fleet health: {health.overall(probes)}" + (f" ({'; '.join(bad)})" if bad else "")


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
    on = f"targets: {', '.join(targets_of(r))}\n" if targets_of(r) else ""
    if r["type"] == "email":
        to = ", ".join(r["to"]) if isinstance(r.get("to"), list) else str(r.get("to"))
        return (f"email {n} of {len(records)}\nfrom: {r.get('from')}\nto: {to}\nsubject: {r.get('subject')}\n{on}\n"
                f"{r.get('text') or ''}")
    blocks = "\n".join(_block_text(b) for b in r.get("blocks") or [])
    return f"slack {n} of {len(records)} ({r.get('channel') or 'webhook'})\n{on}\n{blocks or r.get('text') or ''}"


def _block_text(block: dict) -> str:
    parts = [block.get("text", {}).get("text", "") if isinstance(block.get("text"), dict) else ""]
    parts += [f.get("text", "") for f in block.get("fields") or [] if isinstance(f, dict)]
    parts += [e.get("text", "") for e in block.get("elements") or [] if isinstance(e, dict)]
    return "\n".join(p for p in parts if p)
