"""bench/peer.py's pieces: the Prometheus stack and an opsfleet fleet as processes, each with the same
four rules, the breaches both watch for, process and server sampling, and reading the Slack fake."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import psycopg
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ops.devkit.process import CELERY, Proc  # noqa: E402
from ops.devkit.servers import RedisServer, free_port  # noqa: E402
from worker.fleet.migrate import upgrade  # noqa: E402

BINARIES = {"prometheus": "prometheus", "prometheus-postgres-exporter": "prometheus-postgres-exporter",
            "prometheus-sql-exporter": "prometheus-sql-exporter", "prometheus-alertmanager": "prometheus-alertmanager"}
EVAL_S, GROUP_WAIT, GROUP_INTERVAL, REPEAT = 15, "30s", "5m", "4h"
IDLE_S, BLOCKED_S, CONN_LIMIT, CONN_PCT, CONN_FOR = 60, 60, 20, 90, "30s"
KINDS = ["peer_idle_in_transaction", "peer_connections_near_limit", "peer_blocked_sessions", "peer_double_booking"]
SCHEMA = ["CREATE TABLE seat_reservation_audit_log (id bigserial PRIMARY KEY, event_type text NOT NULL, "
          "error_message text, created_at timestamptz NOT NULL DEFAULT now())",
          "CREATE TABLE peer_lock (id int PRIMARY KEY, v int NOT NULL)", "INSERT INTO peer_lock VALUES (1, 0)"]
DOUBLE_BOOKING_WHERE = ("event_type = 'failed' AND error_message LIKE '%constraint%' "
                        "AND created_at > {now} - interval '5 minutes' AND created_at <= {now}")
# opsfleet: the postgres pack's queries (config/postgres/checks.yaml) kept to the monitored database
# (other databases of the server are other people's), and the ticketing pack's double booking.
OPS_CHECKS = [
    {"name": "peer_idle_in_transaction", "condition": f"> {IDLE_S}", "query": (
        "SELECT a.pid::text AS pid, a.usename AS \"user\", COALESCE(NULLIF(a.application_name, ''), '-') AS application, "
        "round(EXTRACT(EPOCH FROM (:now - a.state_change))::numeric, 0) AS value FROM pg_stat_activity a "
        "WHERE a.datname = current_database() AND a.backend_type = 'client backend' "
        "AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')")},
    {"name": "peer_connections_near_limit", "condition": f"> {CONN_PCT}", "for": CONN_FOR, "query": (
        "SELECT round(100.0 * count(*) / max(d.datconnlimit), 2) AS value FROM pg_stat_activity a "
        "JOIN pg_database d ON d.datname = a.datname WHERE a.datname = current_database()")},
    {"name": "peer_blocked_sessions", "condition": f"> {BLOCKED_S}", "query": (
        "SELECT w.pid::text AS pid, array_to_string(w.blockers, ',') AS blocked_by, "
        "round(EXTRACT(EPOCH FROM (:now - w.query_start))::numeric, 0) AS value "
        "FROM (SELECT a.*, pg_blocking_pids(a.pid) AS blockers FROM pg_stat_activity a "
        "WHERE a.datname = current_database() AND a.wait_event_type = 'Lock' AND a.pid <> pg_backend_pid()) w "
        "WHERE cardinality(w.blockers) > 0")},
    {"name": "peer_double_booking", "condition": "> 0", "query": (
        "SELECT COUNT(*) AS value FROM seat_reservation_audit_log WHERE " + DOUBLE_BOOKING_WHERE.format(now=":now"))},  # noqa: S608
]
SQL_EXPORTER_QUERIES = [  # justwatchcom/sql_exporter (Debian's prometheus-sql-exporter): sql_<name>{col=...}
    {"name": "peer_blocked", "help": "sessions waiting for a lock another session holds", "values": ["sessions", "max_wait"],
     "query": "SELECT count(*)::float AS sessions, COALESCE(max(EXTRACT(EPOCH FROM now() - query_start)), 0)::float "
              "AS max_wait FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
              "AND cardinality(pg_blocking_pids(pid)) > 0"},
    {"name": "peer_double_booking", "help": "failed reservations stopped by a constraint, last 5 minutes",
     "values": ["value"],
     "query": "SELECT count(*)::float AS value FROM seat_reservation_audit_log WHERE " + DOUBLE_BOOKING_WHERE.format(now="now()")},  # noqa: S608
]


def prom_rules(db: str) -> list[dict]:
    return [
        {"alert": "peer_idle_in_transaction",
         "expr": f'max by (datname) (pg_stat_activity_max_tx_duration{{datname="{db}",state=~"idle in transaction.*"}}) > {IDLE_S}'},
        {"alert": "peer_connections_near_limit", "for": CONN_FOR,
         "expr": f'100 * sum by (datname) (pg_stat_activity_count{{datname="{db}"}}) / {CONN_LIMIT} > {CONN_PCT}'},
        {"alert": "peer_blocked_sessions", "expr": f'sql_peer_blocked{{col="max_wait"}} > {BLOCKED_S}'},
        {"alert": "peer_double_booking", "expr": 'sql_peer_double_booking{col="value"} > 0'},
    ]


def missing_packages() -> list[str]:
    return [pkg for binary, pkg in BINARIES.items() if not shutil.which(binary)]


def version(binary: str) -> str:
    """The Debian package's version (sql_exporter's own --version is empty)."""
    import subprocess
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", BINARIES[binary]], capture_output=True,  # noqa: S607
                         text=True, check=False)
    return out.stdout.strip() or "?"


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback
            return r.status == 200
    except OSError:
        return False


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
        return json.loads(r.read())


def wait_until(fn, timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(every)
    return bool(fn())


def pg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


class PromStack:
    """prometheus + postgres_exporter (default collectors) + sql_exporter + alertmanager on free ports."""

    def __init__(self, root: Path, name: str, app_url: str, sink_url: str) -> None:
        self.dir, self.name, self.db = root / name, name, app_url.rsplit("/", 1)[1]
        self.dir.mkdir(parents=True)
        self.path = f"/services/TPEER/B{name.upper()}/alertmanager"
        self.ports = {k: free_port() for k in ("prom", "pge", "sqle", "am")}
        p, dsn = self.ports, pg_dsn(app_url) + "?sslmode=disable"
        (self.dir / "sql.yml").write_text(yaml.safe_dump({"jobs": [{
            "name": "peer", "interval": f"{EVAL_S}s", "connections": [dsn.replace("postgresql://", "postgres://", 1)],
            "queries": SQL_EXPORTER_QUERIES}]}))
        (self.dir / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "peer", "rules": prom_rules(self.db)}]}))
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": f"{EVAL_S}s", "evaluation_interval": f"{EVAL_S}s"},
            "rule_files": [str(self.dir / "rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{p['am']}"]}]}]},
            "scrape_configs": [{"job_name": "postgres", "static_configs": [{"targets": [f"127.0.0.1:{p['pge']}"]}]},
                               {"job_name": "sql", "static_configs": [{"targets": [f"127.0.0.1:{p['sqle']}"]}]}]}))
        (self.dir / "alertmanager.yml").write_text(yaml.safe_dump({
            "route": {"receiver": "slack", "group_by": ["alertname"], "group_wait": GROUP_WAIT,
                      "group_interval": GROUP_INTERVAL, "repeat_interval": REPEAT},
            "receivers": [{"name": "slack", "slack_configs": [
                {"api_url": sink_url + self.path, "channel": "#alerts", "send_resolved": True}]}]}))
        self.env = {"PATH": "/usr/bin:/bin", "HOME": str(self.dir), "DATA_SOURCE_NAME": dsn}
        self.procs: dict[str, Proc] = {}
        self.ready_s: dict[str, float] = {}

    def _start(self, name: str) -> None:
        d, p = self.dir, self.ports
        args = {"postgres_exporter": ["prometheus-postgres-exporter", f"--web.listen-address=127.0.0.1:{p['pge']}"],
                "sql_exporter": ["prometheus-sql-exporter", "-config.file", str(d / "sql.yml"),
                                 "-web.listen-address", f"127.0.0.1:{p['sqle']}"],
                "alertmanager": ["prometheus-alertmanager", f"--config.file={d / 'alertmanager.yml'}",
                                 f"--storage.path={d / 'am-data'}", f"--web.listen-address=127.0.0.1:{p['am']}",
                                 "--cluster.listen-address="],
                "prometheus": ["prometheus", f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{p['prom']}"]}[name]
        ready = {"postgres_exporter": f"http://127.0.0.1:{p['pge']}/metrics",
                 "sql_exporter": f"http://127.0.0.1:{p['sqle']}/metrics",
                 "alertmanager": f"http://127.0.0.1:{p['am']}/-/ready", "prometheus": f"http://127.0.0.1:{p['prom']}/-/ready"}
        t0 = time.monotonic()
        self.procs[name] = proc = Proc(args, self.env, d / f"{name}.log")
        if not wait_until(lambda: http_ok(ready[name]) or proc.p.poll() is not None, 60) or proc.p.poll() is not None:
            raise RuntimeError(f"{name} did not start:\n{proc.output()[-2000:]}")
        self.ready_s[name] = time.monotonic() - t0

    def start(self) -> PromStack:
        for name in ("postgres_exporter", "sql_exporter", "alertmanager", "prometheus"):
            self._start(name)
        return self

    def restart_alerting(self, sig: int) -> None:
        self.procs["alertmanager"].kill(sig)
        self._start("alertmanager")

    def query(self, promql: str) -> list:
        from urllib.parse import quote
        return get_json(f"http://127.0.0.1:{self.ports['prom']}/api/v1/query?query={quote(promql)}")["data"]["result"]

    def evaluating(self) -> bool:
        """Every rule evaluated healthy, and both exporters' series of this database are in."""
        rules = get_json(f"http://127.0.0.1:{self.ports['prom']}/api/v1/rules")["data"]["groups"]
        ok = all(r["health"] == "ok" for g in rules for r in g["rules"]) and sum(len(g["rules"]) for g in rules) == 4
        return ok and bool(self.query(f'pg_stat_activity_count{{datname="{self.db}"}}')) and bool(
            self.query("sql_peer_blocked")) and bool(self.query("sql_peer_double_booking"))

    def groups(self) -> dict[str, list[int]]:
        return {n: [p.p.pid] for n, p in self.procs.items()}

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.stop()


class OpsStack:
    """One worker (-Q checks,notify -c 2) and beat of this checkout, with a redis-server of its own as broker
    and a config folder: the four peer checks (every 15 s, Slack, group_wait 30 s) and `packs`."""

    def __init__(self, root: Path, name: str, app_url: str, fleet_url: str, sink, packs: list[str]) -> None:
        self.dir, self.name = root / name, name
        self.dir.mkdir(parents=True)
        self.path = f"/services/TPEER/B{name.upper()}/opsfleet"
        self.redis = RedisServer(self.dir / "redis").start()
        cfg = self.dir / "config"
        (cfg / "checks").mkdir(parents=True)
        checks = [{"name": c["name"], "description": "bench/peer.py: the rule Prometheus evaluates beside it",
                   "schedule": f"{EVAL_S}s", "query": c["query"], "condition": c["condition"],
                   **({"for": c["for"]} if "for" in c else {}), "severity": "warning", "labels": {"system": "peer"},
                   "summary": "{{ check }} {{ value }}"} for c in OPS_CHECKS]
        (cfg / "checks" / "peer.yaml").write_text(yaml.safe_dump({"checks": checks}, sort_keys=False))
        (cfg / "packs.yaml").write_text(yaml.safe_dump({"enabled": packs}))
        route = {"channels": ["slack"], "group_wait": GROUP_WAIT, "repeat_interval": REPEAT, "send_resolved": True}
        (cfg / "routing.yaml").write_text(yaml.safe_dump({
            "channels": {"slack": {"kind": "slack"}, "other": {"kind": "webhook"}},  # the packs' alerts, apart
            "routes": [{"match": {"system": "peer"}, **route}, {"match": {}, **route, "channels": ["other"]}]}))
        upgrade(fleet_url)
        import os
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OPSFLEET_", "RESEND_", "SLACK_", "ALERT_"))},
                    "DATABASE_URL": app_url, "FLEET_DATABASE_URL": fleet_url, "CELERY_BROKER_URL": self.redis.url,
                    "REDIS_URL": self.redis.url, "OPSFLEET_CONFIG_DIR": str(cfg), "OPSFLEET_PACKS_DIR": str(REPO / "config"),
                    "ALERT_SLACK_WEBHOOK_URL": sink.url + self.path, "ALERT_WEBHOOK_URL": sink.url + f"/hooks/{name}",
                    "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
        self.worker: Proc | None = None
        self.beat: Proc | None = None
        self.starts = 0

    def worker_args(self, name: str, extra: tuple[str, ...] = ()) -> list[str]:
        # the compose file's worker command (-l INFO, mingle and gossip on), both queues on one worker
        return [*CELERY, "worker", "-Q", "checks,notify", "-c", "2", "-n", f"{name}@%h", "-l", "INFO", *extra]

    def start(self) -> OpsStack:
        self.starts += 1
        self.worker = Proc(self.worker_args(f"{self.name}{self.starts}"), self.env, self.dir / f"worker{self.starts}.log")
        if not self.worker.wait_for(" ready.", 120):
            raise RuntimeError(f"{self.name} worker did not start:\n{self.worker.output()[-3000:]}")
        self.beat = Proc([*CELERY, "beat", "-l", "INFO", "-s", str(self.dir / "beat-schedule")], self.env,
                         self.dir / f"beat{self.starts}.log")
        return self

    def restart_alerting(self, sig: int) -> None:
        for p in (self.beat, self.worker):
            p.kill(sig)
        self.start()

    def groups(self) -> dict[str, list[int]]:
        return {"worker": [self.worker.p.pid], "beat": [self.beat.p.pid], "redis (broker)": [self.redis._proc.pid]}

    def stop_procs(self) -> None:
        for p in (self.beat, self.worker):
            if p is not None:
                p.stop()

    def stop(self) -> None:
        self.stop_procs()
        self.redis.stop()

    def readiness(self, n: int, extra: tuple[str, ...]) -> list[float]:
        """Spawn -> ` ready.` in the log, `n` times (this stack's own worker is stopped)."""
        out = []
        for i in range(n):
            t0 = time.monotonic()
            p = Proc(self.worker_args(f"ready{i}{len(extra)}", extra), self.env, self.dir / f"ready{i}{len(extra)}.log")
            ok = wait_until(lambda p=p: " ready." in p.output() or p.p.poll() is not None, 120, 0.02)
            dt = time.monotonic() - t0
            p.stop()
            if not ok or p.p.returncode not in (None, 0, -15):
                raise RuntimeError(f"readiness worker did not start:\n{p.output()[-2000:]}")
            out.append(dt)
        return out


# --- sampling -------------------------------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_s(pids: list[int]) -> float:
    """CPU seconds of each process and its descendants, the reaped ones included (children_*)."""
    total = 0.0
    for pid in pids:
        for p in tree(pid):
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
    return total


def memory(pids: list[int]) -> tuple[float, float, int]:
    """RSS sum, PSS sum (bytes) and the process count of the trees."""
    rss = pss = n = 0
    for pid in pids:
        for p in tree(pid):
            try:
                m = p.memory_full_info()
                rss, pss, n = rss + m.rss, pss + m.pss, n + 1
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
    return rss, pss, n


class BackendCPU(threading.Thread):
    """Every 2 s: the server's backends per database (pg_stat_activity) and each one's CPU seconds (psutil):
    what the sessions of a database cost the server, for backends alive at two samples at least."""

    def __init__(self, admin_dsn: str, dbs: list[str]) -> None:
        super().__init__(daemon=True)
        self.dsn, self.dbs, self.stop = admin_dsn, dbs, threading.Event()
        self.first: dict[int, tuple[str, float]] = {}
        self.last: dict[int, float] = {}
        self.t0 = time.time()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                rows = conn.execute("SELECT pid, datname, extract(epoch FROM backend_start) FROM pg_stat_activity "
                                    "WHERE datname = ANY(%s)", (self.dbs,)).fetchall()
                for pid, db, started in rows:
                    try:
                        t = psutil.Process(pid).cpu_times()
                    except psutil.NoSuchProcess:
                        continue
                    if pid not in self.first:  # a backend born inside the window counts from its fork
                        self.first[pid] = (db, 0.0 if float(started) >= self.t0 else t.user + t.system)
                    self.last[pid] = t.user + t.system
                self.stop.wait(2)

    def per_db(self) -> dict[str, float]:
        out = dict.fromkeys(self.dbs, 0.0)
        for pid, (db, first) in self.first.items():
            out[db] += self.last.get(pid, first) - first
        return out


def db_stats(conn, dbs: list[str]) -> dict[str, dict[str, int]]:
    rows = conn.execute("SELECT datname, xact_commit + xact_rollback, tup_returned, tup_fetched, tup_inserted + "
                        "tup_updated + tup_deleted, sessions FROM pg_stat_database WHERE datname = ANY(%s)",
                        (dbs,)).fetchall()
    return {r[0]: dict(zip(("xacts", "tup_returned", "tup_fetched", "tup_written", "sessions"), r[1:], strict=True))
            for r in rows}


# --- the Slack fake ---------------------------------------------------------------------------------

AM_RE = re.compile(r"\[(FIRING|RESOLVED)(?::\d+)?\] (peer_[a-z_]+)")
OPS_RE = re.compile(r"\[([A-Z]+)\] \*?(peer_[a-z_]+)\b")


def told(sink, path: str) -> list[tuple[float, str, bool, int]]:
    """(sink clock, check, firing?, message index) of every alert row of the messages posted to `path`:
    Alertmanager's title `[FIRING:1] peer_x ...`, opsfleet's rows `[WARNING] peer_x` / `[RESOLVED] peer_x`."""
    out = []
    for i, m in enumerate(sink.slack_messages):
        if m["webhook"] != path:
            continue
        if "alertmanager" in path:
            titles = " ".join(a.get("title", "") for a in (m["payload"].get("attachments") or []))
            out += [(m["at"], name, tag == "FIRING", i) for tag, name in AM_RE.findall(titles)]
        else:
            rows = set(OPS_RE.findall(json.dumps(m.get("blocks")) + " " + (m.get("text") or "")))
            out += [(m["at"], name, tag != "RESOLVED", i) for tag, name in rows]
    return out


# --- breaches: each returns (the breach instant, how to undo it) ----------------------------------


def breach_idle(dsn: str, admin) -> tuple[float, object]:
    conn = psycopg.connect(dsn, application_name="peer_breach")
    conn.execute("SELECT 1")  # BEGIN; SELECT 1; and the session sits idle in its transaction
    t = time.time()
    return t + IDLE_S, lambda: (conn.rollback(), conn.close())


def breach_connections(dsn: str, admin) -> tuple[float, object]:
    db = dsn.rsplit("/", 1)[1]
    have = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db,)).fetchone()[0]
    need = CONN_LIMIT * CONN_PCT // 100 + 1  # > 90% of 20: 19
    conns, at = [], None
    for _ in range(max(1, CONN_LIMIT - have)):
        conns.append(psycopg.connect(dsn, autocommit=True, application_name="peer_breach"))
        if at is None and have + len(conns) >= need:
            at = time.time()
    return at or time.time(), lambda: [c.close() for c in conns]


def breach_blocked(dsn: str, admin) -> tuple[float, object]:
    blocker = psycopg.connect(dsn, application_name="peer_breach_blocker")
    blocker.execute("UPDATE peer_lock SET v = v + 1 WHERE id = 1")
    bpid = blocker.info.backend_pid
    waiter = psycopg.connect(dsn, application_name="peer_breach_waiter")
    wpid = waiter.info.backend_pid

    def run(conn, sql):
        try:
            conn.execute(sql)
        except psycopg.Error:
            pass

    threads = [threading.Thread(target=run, args=(blocker, "SELECT pg_sleep(3600)"), daemon=True),  # active, not idle
               threading.Thread(target=run, args=(waiter, "UPDATE peer_lock SET v = v + 1 WHERE id = 1"), daemon=True)]
    for t in threads:
        t.start()
    started = None
    while started is None:
        row = admin.execute("SELECT extract(epoch FROM query_start) FROM pg_stat_activity WHERE pid = %s "
                            "AND wait_event_type = 'Lock'", (wpid,)).fetchone()
        started = float(row[0]) if row else time.sleep(0.02)

    def undo() -> None:
        admin.execute("SELECT pg_terminate_backend(%s)", (bpid,))
        for t in threads:
            t.join(10)
        for c in (waiter, blocker):
            try:
                c.rollback()
            except psycopg.Error:
                pass
            c.close()
    return started + BLOCKED_S, undo


def breach_double_booking(dsn: str, admin) -> tuple[float, object]:
    """A failed reservation naming a constraint, and another every minute until undone: the rule's 5-minute
    window would otherwise resolve it by itself while a stack is still to tell it."""
    stop = threading.Event()

    def attempt() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("INSERT INTO seat_reservation_audit_log (event_type, error_message) VALUES ('failed', "
                      "'duplicate key value violates unique constraint \"seat_reservations_event_seat_key\"')")
    attempt()
    t = time.time()
    again = threading.Thread(target=lambda: [attempt() for _ in iter(lambda: stop.wait(60), True)], daemon=True)
    again.start()

    def undo() -> None:
        stop.set()
        again.join(10)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("DELETE FROM seat_reservation_audit_log")
    return t, undo


BREACHES = dict(zip(KINDS, (breach_idle, breach_connections, breach_blocked, breach_double_booking), strict=True))
SIGNALS = {"term": signal.SIGTERM, "kill": signal.SIGKILL}
