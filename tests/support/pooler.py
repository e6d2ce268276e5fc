"""A real PgBouncer in transaction mode, started in a temp dir from the installed binary (Debian's
`pgbouncer` package), in front of the test Postgres: what Supabase's pooler and most PgBouncer
deployments do. `default_pool_size = 1`: every client of a database shares one server connection, so
what one client leaves on it (a named prepared statement) is what the next one meets."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import sqlalchemy as sa

from ops.devkit.servers import free_port, port_open
from worker.fleet.db import normalize_url

SKIP = "pgbouncer is not installed (apt-get install pgbouncer): the transaction-pooler test is skipped"


def pgbouncer_binary() -> str | None:
    """The installed pgbouncer (Debian puts it in /usr/sbin, which a user's PATH may lack), or None."""
    return shutil.which("pgbouncer") or next((p for p in ("/usr/sbin/pgbouncer",) if os.path.exists(p)), None)


class PgBouncer:
    """`start()` it, `url(direct)` is the direct URL's database through it, `stop()` it. As root it runs as
    postgres (it refuses root), so `run_dir` must be reachable by that user (not under pytest's tmp_path)."""

    def __init__(self, run_dir: Path, upstream: str, pool_size: int = 1, pools: dict[str, int] | None = None) -> None:
        """`pool_size`: server connections per database (and user); `pools`: another size for a database
        (a fleet database beside the monitored one: a check run holds its fleet transaction while it reads
        the monitored database, so the two must not wait on one pool of one connection)."""
        self.run_dir, self.port, self.pool_size, self.pools = Path(run_dir), free_port(), pool_size, pools or {}
        self.upstream = sa.make_url(normalize_url(upstream))
        self._proc: subprocess.Popen | None = None

    def url(self, direct: str) -> str:
        """`direct` (a database of the upstream server) through the pooler."""
        return sa.make_url(normalize_url(direct)).set(host="127.0.0.1", port=self.port) \
            .render_as_string(hide_password=False)

    def start(self) -> PgBouncer:
        binary = pgbouncer_binary()
        if binary is None:
            raise FileNotFoundError(SKIP)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        up = self.upstream
        server = f"host={up.host or '127.0.0.1'} port={up.port or 5432}" + \
            (f" user={up.username}" if up.username else "") + (f" password={up.password}" if up.password else "")
        (self.run_dir / "userlist.txt").write_text(f'"{up.username or "postgres"}" ""\n')
        lines = ["[databases]", *(f"{db} = {server} dbname={db} pool_size={n}" for db, n in self.pools.items()),
                 f"* = {server}", "[pgbouncer]", "listen_addr = 127.0.0.1",
                 f"listen_port = {self.port}", "unix_socket_dir =", "auth_type = trust",
                 f"auth_file = {self.run_dir / 'userlist.txt'}", "pool_mode = transaction",
                 f"default_pool_size = {self.pool_size}", "min_pool_size = 0", "reserve_pool_size = 0",
                 "max_client_conn = 200",
                 "query_wait_timeout = 30",  # a client waiting longer for a server connection fails (default 120 s)
                 "ignore_startup_parameters = extra_float_digits,options",
                 f"logfile = {self.run_dir / 'pgbouncer.log'}", f"pidfile = {self.run_dir / 'pgbouncer.pid'}"]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root: it switches to `user` after start
            user = pwd.getpwnam("postgres")
            lines.append(f"user = {user.pw_name}")
            for p in [self.run_dir, *self.run_dir.iterdir()]:
                os.chown(p, user.pw_uid, user.pw_gid)
        ini = self.run_dir / "pgbouncer.ini"
        ini.write_text("\n".join(lines) + "\n")
        with open(self.run_dir / "stderr.log", "w") as err:
            self._proc = subprocess.Popen([binary, str(ini)], stdout=subprocess.DEVNULL,  # noqa: S603
                                          stderr=err, start_new_session=True)
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port, 0.2):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                logs = [f for f in ("pgbouncer.log", "stderr.log") if (self.run_dir / f).exists()]
                raise RuntimeError("pgbouncer did not start: " + " ".join(
                    (self.run_dir / f).read_text()[-1000:] for f in logs))
            time.sleep(0.05)
        return self

    def log_tail(self, chars: int = 3000) -> str:
        """The end of PgBouncer's log (what a failing test shows: waits, timeouts, closed clients)."""
        log = self.run_dir / "pgbouncer.log"
        return log.read_text()[-chars:] if log.exists() else "(no pgbouncer.log)"

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None
