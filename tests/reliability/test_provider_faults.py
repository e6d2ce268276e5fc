"""Provider faults beyond 5xx/429/hangs (issue 14, section 1): a provider that refuses the connection,
one that resets it mid-body, and a 503 that lasts longer than the retry horizon, after which the
notification is dead and the fleet's own alert about it reaches people on another channel.
Through the real SDKs of every channel; the generated answers are in test_fuzz_providers.py."""

from __future__ import annotations

import socket
import struct
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from ops.devkit.servers import free_port
from ops.devkit.sink import Reply
from tests.support import REPO
from tests.support.channels import make_message
from tests.support.notify import ATTEMPTS, deliver_until_final, email_id, fire, note, settings_for
from worker.channels.base import DeliveryError
from worker.channels.email import EmailChannel
from worker.channels.pagerduty import PagerDutyChannel
from worker.channels.slack import SlackChannel
from worker.channels.webhook import WebhookChannel
from worker.checks.engine import run_check
from worker.config import load_config
from worker.notify.delivery import deliver
from worker.notify.routing import Routing

pytestmark = pytest.mark.reliability  # `-m reliability` runs every test of tests/reliability


class Resetter:
    """A TCP server that reads the request, starts an answer, and resets the connection mid-body."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.served = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"id\": \"x")
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            except OSError:
                pass
            finally:
                self.served += 1
                conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def resetter():
    r = Resetter()
    yield r
    r.close()


def channels(base: str):
    return {
        "email": EmailChannel("re_test_key_0123456789", "alerts@example.com", None, ["ops@example.com"],
                              api_url=base, timeout=3),
        "slack webhook": SlackChannel(webhook_url=f"{base}/services/T0/B0/x", timeout=3),
        "slack api": SlackChannel(bot_token="xoxb-test-token", channel="#alerts", api_url=f"{base}/api/", timeout=3),
        "pagerduty": PagerDutyChannel("0123456789abcdef0123456789abcdef", api_url=base, timeout=3),
        "webhook": WebhookChannel(f"{base}/hook", timeout=3),
    }


@pytest.mark.parametrize("kind", ["email", "slack webhook", "slack api", "pagerduty", "webhook"])
def test_a_refused_connection_is_a_transient_connection_error(kind):
    port = free_port()  # nothing listens there
    with pytest.raises(DeliveryError) as err:
        channels(f"http://127.0.0.1:{port}")[kind].send(make_message())
    assert err.value.reason == "connection" and err.value.transient, repr(err.value)


@pytest.mark.parametrize("kind", ["email", "slack webhook", "slack api", "pagerduty", "webhook"])
def test_a_connection_reset_mid_body_is_transient_never_sent(kind, resetter):
    with pytest.raises(DeliveryError) as err:
        channels(f"http://127.0.0.1:{resetter.port}")[kind].send(make_message())
    assert err.value.transient and err.value.reason in ("connection", "server_error", "timeout"), repr(err.value)
    assert resetter.served >= 1


def test_a_503_past_the_retry_horizon_goes_dead_and_the_fleet_alert_reaches_slack(db, sink):
    nid = email_id(db, fire(db))
    sink.script("resend.emails", [Reply(503, headers={"Retry-After": "1"})] * ATTEMPTS)
    statuses, now = deliver_until_final(db, sink, nid)
    assert statuses[-1] == "dead" and note(db, nid).last_error.startswith("server_error")
    # the fleet's notifications_dead, routed as the shipped routing does (high -> email + Slack): email is
    # the channel that is down, Slack tells
    cfg = load_config(REPO / "config", packs="all")
    r = Routing.model_validate({"channels": {"email": {"kind": "email"}, "slack": {"kind": "slack"}},
                                "routes": [{"match": {"severity": "high"}, "channels": ["email", "slack"],
                                            "group_wait": "0s"}]})
    out = run_check(cfg.checks["notifications_dead"], monitored=db, fleet=db, fleet_queries=db,
                    now=now + timedelta(minutes=1), routing=r)
    assert [t.to_state for t in out.transitions] == ["firing"]
    sink.script("resend.emails", [Reply(503)] * 3)  # still down
    s = settings_for(sink)
    results = {note(db, n).channel: deliver(n, fleet=db, settings=s, routing=r, now=now + timedelta(minutes=1)).status
               for n in out.notification_ids}
    assert results == {"email": "retrying", "slack": "sent"}
    [msg] = sink.slack_messages  # (with the original alert's Slack notice, folded in: it waited too)
    assert "notifications_dead" in str(msg["blocks"]) and "could not be delivered" in str(msg["blocks"])
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM fleet.notifications WHERE status = 'dead'")).scalar() == 1
