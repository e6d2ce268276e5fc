"""`opsfleet serve`: /health (seed 003's shape), /health/database, /health/redis, /health/broker,
/health/email, /health/slack, /metrics (Prometheus), and the status page with its JSON API
(worker/web/ui.py: `/`, `/api/`, behind basic auth), on one small threaded HTTP server. /health stays
open for load balancers and tells no alert text; /metrics carries check labels (values from query
columns) and asks for OPSFLEET_METRICS_AUTH once it is set (basic auth or a bearer token).

A health answer is 200 while nothing fails (healthy or degraded) and 503 when something does, so a
load balancer or an uptime checker needs no parsing. Probes run at most every `cache_s` seconds,
whatever the request rate."""

from __future__ import annotations

import base64
import hmac
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker.config import FleetConfig
from worker.fleet.logs import get_logger, mask_text
from worker.fleet.settings import Settings
from worker.watch import health
from worker.web.ui import MAX_BODY, UI, Answer

# the probe groups each sub-endpoint runs (worker.watch.health.GROUPS), and the probes of them it shows
GROUPS = {"database": {"database"}, "redis": {"redis"}, "broker": {"broker"}, "workers": {"workers"},
          "email": {"channels"}, "slack": {"channels"}}
SUBSETS: dict[str, Callable[[health.Probe], bool]] = {
    "database": lambda p: p.name in ("database", "fleet database"),
    "redis": lambda p: p.name == "redis",
    "broker": lambda p: p.name == "broker",
    "workers": lambda p: p.name.startswith("queue ") or p.name == "beat",
    "email": lambda p: p.name.startswith("channel ") and p.data.get("kind") == "email",
    "slack": lambda p: p.name.startswith("channel ") and p.data.get("kind") == "slack",
}


# /health probes every group but the targets: a monitored database down is that target's alert (the
# status page's targets overview, `opsfleet health`), not a reason to take this server out of a pool,
# and a load balancer's polling should not open a connection to every target
SERVED = set(health.GROUPS) - {"targets"}


class Fleet:
    """What the server answers from: settings, config, a metrics registry, cached probes."""

    def __init__(self, settings: Settings, cfg: FleetConfig, registry: CollectorRegistry | None = None,
                 cache_s: float = 10.0, probe: Callable[[], list[health.Probe]] | None = None,
                 engine: Any = None) -> None:
        self.settings, self.cfg, self.registry, self.cache_s = settings, cfg, registry, cache_s
        self.engine = engine  # the fleet database (the status page); None: /health and /metrics only
        self._probe = probe or (lambda groups: health.run_all(settings, cfg, timeout=2.0,
                                                                   groups=groups or SERVED))
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[float, list[health.Probe]]] = {}

    def probes(self, name: str | None = None) -> list[health.Probe]:
        """The probes of /health (all) or /health/<name> (its groups only: /health/database never waits
        on the workers), run at most every cache_s seconds."""
        key = name or "all"
        with self._lock:
            cached = self._cached.get(key)
            if cached is None or time.monotonic() - cached[0] > self.cache_s:
                cached = self._cached[key] = (time.monotonic(), self._probe(GROUPS.get(name) if name else None))
            return cached[1]


log = get_logger(__name__)


def metrics_allowed(expected: str | None, authorization: str | None) -> bool:
    """Whether a request's Authorization header carries OPSFLEET_METRICS_AUTH (unset: /metrics is open):
    `Bearer TOKEN` as Prometheus's `authorization`, else user:password as its `basic_auth`. Compared in
    constant time (hmac.compare_digest), whatever the scheme given."""
    if not expected:
        return True
    scheme, _, given = (authorization or "").strip().partition(" ")
    given = given.strip()
    if expected.startswith("Bearer "):
        same = hmac.compare_digest(given.encode(), expected[len("Bearer "):].encode())
        return same and scheme.lower() == "bearer"
    try:
        decoded = base64.b64decode(given, validate=True).decode() if scheme.lower() == "basic" else ""
    except (ValueError, UnicodeDecodeError):
        decoded = ""
    return hmac.compare_digest(decoded.encode(), expected.encode())


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "opsfleet"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        fleet = self.server.fleet
        if fleet.engine is not None and path.startswith("/act/"):  # an email's approval link: its token is the key
            self._ui(lambda ui: ui.act_page(path[len("/act/"):]), public=True)
            return
        if fleet.engine is not None and not (path == "/metrics" or path == "/health" or path.startswith("/health/")):
            self._ui(lambda ui: ui.get(path, parse_qs(parts.query)))
            return
        if path == "/metrics" and fleet.registry is not None:
            if not metrics_allowed(fleet.settings.opsfleet_metrics_auth, self.headers.get("Authorization")):
                body = b"credentials required: OPSFLEET_METRICS_AUTH (basic auth or a bearer token)\n"
                self.send_response(401)
                scheme = "Bearer" if (fleet.settings.opsfleet_metrics_auth or "").startswith("Bearer ") else "Basic"
                self.send_header("WWW-Authenticate", f'{scheme} realm="opsfleet metrics"')
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self._send(200, generate_latest(fleet.registry), CONTENT_TYPE_LATEST)
            return
        if path == "/health" or path.startswith("/health/"):
            name = path[len("/health/"):] if path.startswith("/health/") else None
            if name is not None and name not in SUBSETS:
                self._json(404, {"error": f"unknown health endpoint /health/{name}",
                                 "known": ["/health", *(f"/health/{k}" for k in SUBSETS)]})
                return
            probes = fleet.probes(name)
            if name is not None:
                probes = [p for p in probes if SUBSETS[name](p)]
            doc = health.health_document(probes, fleet.settings)
            if name is not None and not probes:
                doc["status"] = "not_configured"
            self._json(503 if doc["status"] == "unhealthy" else 200, doc)
            return
        self._json(404, {"error": f"no such page {path}", "known": ["/health", "/metrics", "/", "/api/status"]})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._send(400, b"a Content-Length that is a whole number, please\n", "text/plain; charset=utf-8")
            return
        if length > MAX_BODY:
            self._send(413, b"request body too large\n", "text/plain; charset=utf-8")
            return
        body = self.rfile.read(length) if length > 0 else b""
        if path == "/slack/interactions":  # Slack's signature is the credential (worker.actions.approve)
            self._ui(lambda ui: ui.slack(body, dict(self.headers.items())), public=True)
            return
        if path.startswith("/act/"):
            self._ui(lambda ui: ui.act_post(path[len("/act/"):], body), public=True)
            return
        self._ui(lambda ui: ui.post(path, body, self.headers.get("Content-Type") or ""))

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib naming
        path = urlsplit(self.path).path.rstrip("/") or "/"
        self._ui(lambda ui: ui.delete(path))

    def _ui(self, answer: Callable[[UI], Answer], public: bool = False) -> None:
        """`public`: a route whose request carries its own proof (a Slack signature, a signed link),
        not the page's basic auth."""
        fleet = self.server.fleet
        if fleet.engine is None:
            self._json(404, {"error": "no status page here (serve without a fleet database)"})
            return
        ui = UI(fleet)
        got = None if public else ui.refuse(self.headers.get("Authorization"))
        if got is None:
            try:
                got = answer(ui)
            except sa.exc.SQLAlchemyError as exc:  # a database that went away: one line, the server keeps serving
                log.warning("status_page_database_error", path=self.path[:200],
                            error=mask_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
                got = Answer(503, b"the fleet database does not answer; see /health\n", "text/plain; charset=utf-8")
            except Exception:  # our bug, not the database's: logged with its stack, one line to the browser
                log.exception("status_page_failed", path=self.path[:200])
                got = Answer(500, b"the status page failed on this request; see the server's log\n",
                             "text/plain; charset=utf-8")
        self.send_response(got.status)
        for k, v in (got.headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", got.ctype)
        self.send_header("Content-Length", str(len(got.body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                                                    "form-action 'self'; frame-ancestors 'none'")
        self.end_headers()
        self.wfile.write(got.body)

    def _json(self, status: int, doc: dict[str, Any]) -> None:
        self._send(status, json.dumps(doc, indent=2).encode(), "application/json; charset=utf-8")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fleet: Fleet


def make_server(fleet: Fleet, host: str = "127.0.0.1", port: int = 8080) -> _Server:
    server = _Server((host, port), _Handler)
    server.fleet = fleet
    return server
