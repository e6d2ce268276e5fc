"""The sink's HTTP server: ProviderSink (lifecycle, addresses, scripting and inspection, dispatch to
the Resend and Slack routes), and `python -m ops.devkit.sink` to run it standalone."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ops.devkit.sink.base import ROUTES, RecordedRequest, Reply, Response, bearer, best_effort_body, redact
from ops.devkit.sink.paging import PagingRoutes
from ops.devkit.sink.ratelimits import RateLimits, parse_rate_limits
from ops.devkit.sink.replies import default_error, resend_error
from ops.devkit.sink.resend import IDEMPOTENCY_TTL, ResendRoutes
from ops.devkit.sink.slack import DEFAULT_WEBHOOK_PATH, SlackRoutes, slack_channel_id


class ProviderSink(ResendRoutes, SlackRoutes, PagingRoutes, RateLimits):
    """Resend + Slack + PagerDuty's Events API + a webhook receiver on 127.0.0.1. Thread-safe; start() before use, stop() after (or use `with`)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        capture_path: str | Path | None = None,
        resend_api_keys: Iterable[str] | None = None,
        restricted_keys: Iterable[str] = (),
        slack_tokens: Iterable[str] | None = None,
        slack_webhook_paths: Iterable[str] | None = None,
        slack_channels: Iterable[str] | None = None,
        idempotency_ttl: float = IDEMPOTENCY_TTL,
        rate_limits: Mapping[str, float | tuple[float, int]] | None = None,
        pagerduty_routing_keys: Iterable[str] | None = None,
    ) -> None:
        """`resend_api_keys` / `slack_tokens` / `slack_webhook_paths` / `slack_channels`: the valid
        values; None accepts any well-formed one (re_..., xox..., /services/A/B/C, any channel).
        `rate_limits`: {"resend": rate, "slack": (rate, burst)}; None (the default) enforces none."""
        self.host = host
        self.port = port
        self.capture_path = Path(capture_path) if capture_path else None
        self.resend_api_keys = set(resend_api_keys) if resend_api_keys is not None else None
        self.restricted_keys = set(restricted_keys)  # sending-only keys: GET /domains answers 401
        self.slack_tokens = set(slack_tokens) if slack_tokens is not None else None
        self.slack_webhook_paths = set(slack_webhook_paths) if slack_webhook_paths is not None else None
        channels = list(slack_channels) if slack_channels is not None else None
        self.slack_channels = (
            {c.lstrip("#") for c in channels} | {slack_channel_id(c) for c in channels}
            if channels is not None
            else None
        )
        self.pagerduty_routing_keys = set(pagerduty_routing_keys) if pagerduty_routing_keys is not None else None
        self.idempotency_ttl = idempotency_ttl
        self.rate_limits = parse_rate_limits(rate_limits)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._capture_file: Any = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._emails: list[dict[str, Any]] = []
        self._emails_by_id: dict[str, dict[str, Any]] = {}
        self._slack: list[dict[str, Any]] = []
        self._slack_by_ts: dict[tuple[str, str], dict[str, Any]] = {}
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str, deque[Reply]] = {}
        self._idempotency: dict[tuple[str, str], tuple[str, float, Response]] = {}
        self._buckets: dict[tuple[str, str], list[float]] = {}  # (provider, target) -> [tokens, at]
        self._ts_seq = 0
        self._reset_paging()


    def start(self) -> ProviderSink:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.sink = self
        self._server = server
        if self.capture_path is not None:
            self.capture_path.parent.mkdir(parents=True, exist_ok=True)
            self._capture_file = self.capture_path.open("a", encoding="utf-8")
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"provider-sink:{self.port_number}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes hung handlers
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            if self._capture_file is not None:
                self._capture_file.close()
                self._capture_file = None

    def __enter__(self) -> ProviderSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


    @property
    def port_number(self) -> int:
        return self._server.server_address[1] if self._server else self.port

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("ProviderSink is not started")
        return f"http://{self.host}:{self.port_number}"

    @property
    def resend_api_url(self) -> str:
        """For RESEND_API_URL / resend.api_url (the SDK appends /emails)."""
        return self.url

    @property
    def slack_webhook_url(self) -> str:
        path = sorted(self.slack_webhook_paths)[0] if self.slack_webhook_paths else DEFAULT_WEBHOOK_PATH
        return self.url + path

    @property
    def slack_response_url(self) -> str:
        """What an interaction payload gives as its response_url (POST a message there)."""
        return self.url + "/actions/T00000000/1234567890/sinkResponseToken0000001"  # Slack's path shape

    @property
    def slack_api_url(self) -> str:
        """For slack_sdk.WebClient(base_url=...)."""
        return self.url + "/api/"


    def script(self, route: str, replies: Iterable[Reply]) -> None:
        """Replace the upcoming responses of `route` (one of ROUTES) with `replies`, in order."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; known: {', '.join(ROUTES)}")
        with self._lock:
            self._scripts[route] = deque(replies)

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()

    def reset(self) -> None:
        """Forget everything recorded, scripted and every idempotency key."""
        with self._lock:
            self._reset_state()

    @property
    def emails(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._emails)

    @property
    def slack_messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._slack)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, route: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if r.route == route]

    def wait_for(self, *, emails: int = 0, slack: int = 0, timeout: float = 5.0) -> bool:
        """Block until at least `emails` emails and `slack` Slack messages are recorded."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._emails) < emails or len(self._slack) < slack:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True


    def _route(self, method: str, path: str) -> tuple[str | None, str | None]:
        if method == "POST" and path == "/emails":
            return "resend.emails", None
        if method == "POST" and path == "/emails/batch":
            return "resend.emails.batch", None
        if method == "GET" and path.startswith("/emails/"):
            return "resend.emails.get", path[len("/emails/") :]
        if method == "GET" and path == "/domains":
            return "resend.domains", None
        if method == "POST" and path.startswith("/services/"):
            return "slack.webhook", None
        if method == "POST" and path.startswith("/actions/"):
            return "slack.response", None
        if method == "POST" and path == "/v2/enqueue":
            return "pagerduty.enqueue", None
        if method == "POST" and path.startswith("/hooks/"):
            return "webhook", path[len("/hooks/") :]
        if path.startswith("/api/"):
            name = "slack." + path[len("/api/") :]
            return (name if name in ROUTES else None), path[len("/api/") :]
        return None, None

    def _handle(
        self, rec: RecordedRequest, raw: bytes, arg: str | None, token: str | None
    ) -> tuple[Response, float]:
        rec.body = best_effort_body(raw)
        with self._lock:
            self._requests.append(rec)
            reply = None
            if rec.route is not None and self._scripts.get(rec.route):
                reply = self._scripts[rec.route].popleft()
                rec.scripted = True
            if reply is not None and (reply.body is not None or not 200 <= reply.status < 300):
                resp = (
                    Response(reply.status, reply.body)
                    if reply.body is not None
                    else default_error(rec.route or "", reply.status)
                )
            else:
                limited = self._rate_limit(rec, raw, token) if reply is None else None
                resp = limited if limited is not None else self._process(rec, raw, arg, token)
            if reply is not None:
                resp.headers.update(reply.headers)
            rec.status = resp.status
            return resp, (reply.hang if reply else 0.0)

    def _process(self, rec: RecordedRequest, raw: bytes, arg: str | None, token: str | None) -> Response:
        route = rec.route
        if route is None:
            if rec.path.startswith("/api/"):
                return Response(404, {"ok": False, "error": "unknown_method"})
            return resend_error(404, "not_found", "The requested endpoint does not exist.")
        if route.startswith("resend."):
            return self._resend(rec, raw, route, arg, token)
        if route == "pagerduty.enqueue":
            return self._pagerduty(rec, raw)
        if route == "webhook":
            return self._webhook(rec, raw)
        if route == "slack.webhook":
            return self._slack_webhook(rec, raw)
        if route == "slack.response":  # a response_url: Slack answers "ok" to a JSON message
            return Response(200, "ok") if isinstance(rec.body, dict) else Response(400, "invalid_payload")
        return self._slack_api(rec, raw, route, token)


    def _capture(self, kind: str, record: dict[str, Any]) -> None:
        self._changed.notify_all()
        if self._capture_file is None:
            return
        line = {"type": kind, **{k: v for k, v in record.items() if k not in ("request_headers", "payload")}}
        self._capture_file.write(json.dumps(line, default=str) + "\n")
        self._capture_file.flush()

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sink: ProviderSink

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) leaves a broken pipe behind; that is the test, not a bug.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "opsfleet-sink/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        sink = self.server.sink
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        path = urlsplit(self.path).path
        route, arg = sink._route(method, path)
        headers = dict(self.headers.items())
        rec = RecordedRequest(
            route=route, method=method, path=path, headers=redact(headers), body=None, at=time.time()
        )
        resp, hang = sink._handle(rec, raw, arg, bearer(headers))
        if hang > 0:
            sink._stopping.wait(hang)
        body, ctype = resp.encode()
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (ConnectionError, TimeoutError):
            self.close_connection = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.devkit.sink", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--capture", help="append one JSON line per accepted message to this file")
    parser.add_argument("--rate-limit", action="append", default=[], metavar="PROVIDER=RATE[/BURST]",
                        help="enforce a rate limit per provider target, e.g. resend=2 or slack=1/1 (repeatable)")
    args = parser.parse_args(argv)
    limits: dict[str, tuple[float, int] | float] = {}
    for item in args.rate_limit:
        provider, _, spec = item.partition("=")
        rate, _, burst = spec.partition("/")
        try:
            limits[provider.strip()] = (float(rate), int(burst)) if burst else float(rate)
        except ValueError:
            parser.error(f"--rate-limit {item!r}: use PROVIDER=RATE or PROVIDER=RATE/BURST")
    try:
        sink = ProviderSink(args.host, args.port, capture_path=args.capture, rate_limits=limits).start()
    except ValueError as exc:
        parser.error(str(exc))
    print(f"RESEND_API_URL={sink.resend_api_url}", flush=True)
    print(f"ALERT_SLACK_WEBHOOK_URL={sink.slack_webhook_url}", flush=True)
    print(f"SLACK_API_URL={sink.slack_api_url}", flush=True)
    print(f"PAGERDUTY_API_URL={sink.pagerduty_api_url}", flush=True)
    print(f"ALERT_WEBHOOK_URL={sink.webhook_url}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        done.wait()
    finally:
        sink.stop()
    return 0
