"""/metrics carries check labels (their values come from query columns): with OPSFLEET_METRICS_AUTH it
answers only to those credentials, as Prometheus sends them (`basic_auth`, or `authorization` with a
bearer token), over real HTTP, on `opsfleet metrics` and `opsfleet serve` alike; /health stays open;
the secret is compared in constant time."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from tests.support import REPO
from worker.config import load_config
from worker.fleet.settings import Settings

BASIC = "prom:Scrape-Me-0123"
TOKEN = "tok-0123456789abcdef"


def _get(url: str, authorization: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - a loopback URL of the test's own
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def test_opsfleet_metrics_asks_for_basic_auth_and_health_stays_open(env):
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "metrics", "--port", "0"],  # noqa: S603
                            env={**env, "OPSFLEET_METRICS_AUTH": BASIC}, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"serving metrics on (http://127\.0\.0\.1:\d+)/metrics \(basic auth", line)
        assert m, line + (proc.stdout.read() if proc.poll() is not None else "")
        base = m.group(1)
        assert _get(f"{base}/metrics") == 401
        assert _get(f"{base}/metrics", _basic("prom:wrong")) == 401
        assert _get(f"{base}/metrics", f"Bearer {BASIC}") == 401  # the right secret in the wrong scheme
        assert _get(f"{base}/metrics", _basic(BASIC)) == 200
        assert _get(f"{base}/health/database") == 200  # open, no credentials
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def served(fleet_db):
    from worker.fleet.db import create
    from worker.watch.metrics import FleetCollector
    from worker.web.server import Fleet, make_server

    def start(auth: str | None):
        from prometheus_client import CollectorRegistry

        settings = Settings(database_url=fleet_db, opsfleet_metrics_auth=auth)
        cfg = load_config(REPO / "config")
        engine = create(fleet_db)
        registry = CollectorRegistry()
        registry.register(FleetCollector(engine, cfg))
        server = make_server(Fleet(settings, cfg, registry, engine=engine, probe=lambda groups: []), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append((server, engine))
        return f"http://127.0.0.1:{server.server_address[1]}"

    started: list = []
    yield start
    for server, engine in started:
        server.shutdown()
        server.server_close()
        engine.dispose()


def test_serve_asks_for_the_bearer_token_and_compares_it_in_constant_time(served, monkeypatch):
    import worker.web.server as server_mod

    compared: list[tuple[bytes, bytes]] = []
    real = server_mod.hmac.compare_digest
    monkeypatch.setattr(server_mod.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    base = served(f"Bearer {TOKEN}")
    assert _get(f"{base}/metrics") == 401
    assert _get(f"{base}/metrics", "Bearer nope") == 401
    assert _get(f"{base}/metrics", _basic(f"x:{TOKEN}")) == 401
    assert _get(f"{base}/metrics", f"Bearer {TOKEN}") == 200
    assert _get(f"{base}/health") in (200, 503) and _get(f"{base}/health", "Bearer nope") != 401
    assert (TOKEN.encode(), TOKEN.encode()) in compared  # the accepted request went through compare_digest
    assert all(b == TOKEN.encode() for _, b in compared)


def test_without_metrics_auth_metrics_stay_open_as_before(served):
    assert _get(f"{served(None)}/metrics") == 200


@pytest.mark.parametrize(("value", "needle"), [("Bearer ", "needs one token"), ("JustASecret0123", "user:password"),
                                               (":Secret0123", "user:password")])
def test_a_malformed_metrics_auth_is_one_line_naming_the_variable(value, needle, env):
    out = subprocess.run([sys.executable, "-m", "worker.cli", "metrics", "--port", "0"], env={  # noqa: S603
        **env, "OPSFLEET_METRICS_AUTH": value}, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "OPSFLEET_METRICS_AUTH" in out.stderr and needle in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Secret0123" not in out.stderr  # the value is not echoed

