"""A worker cut off from the network mid-delivery, for real: a Celery worker in its own network
namespace (ops/devkit/netns.py) reaches the fleet Postgres, Redis and the providers only across a veth
link. It takes an email and a Slack message, both reach the provider, and the link goes down before
the answers come back. The lease runs out (its 120 s, moved back by an UPDATE); a worker on the host
delivers both; the link heals. Then:
- email: one email at the provider (the retry carried the row's Idempotency-Key and was replayed);
- Slack: two messages, the documented duplicate window of a lost answer (docs/guarantees.md), and no
  third: the cut-off worker, back on the network, finds its lease gone and records nothing (before
  stop 17's fix it put the sent rows back to `retrying`, and the next attempt sent them again);
- both rows `sent` with the host worker's provider id, nothing left due.
Skipped with one line where the test cannot create network namespaces (root with CAP_SYS_ADMIN)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery import Celery

from ops.devkit.netns import Partition
from ops.devkit.process import CELERY, Proc, start_worker, wait_until
from ops.devkit.servers import RedisServer
from ops.devkit.sink import ProviderSink, Reply
from tests.support.backlog import KEY
from tests.support.notify import due
from tests.support.restarts import fleet_env, one, rows
from worker.fleet.db import create
from worker.fleet.migrate import upgrade
from worker.notify import outbox

ROUTING_YAML = """\
channels:
  email: {kind: email, rate_limit: 500, burst: 500}
  slack: {kind: slack, rate_limit: 500, burst: 500}
routes:
  - match: {severity: critical}
    channels: [email, slack]
    repeat_interval: 4h
    group_wait: 0s
"""
REQUEST_TIMEOUT = 10.0  # a channel request's timeout in a worker (worker/notify/delivery.py)
HANG = 40.0  # the provider's answers to the first attempts come this late (after the cut: never)


@pytest.fixture(scope="module")
def partition_possible():
    reason = Partition.available()
    if reason:
        pytest.skip(f"network partition test: {reason}")


def write_pair(fleet) -> dict[str, str]:
    payload = {"check": "partition", "severity": "critical", "status": "test", "title": "partition",
               "summary": "a worker cut off mid-send", "labels": {}}
    now = datetime.now(UTC)
    with fleet.begin() as conn:
        return {ch: outbox.insert(conn, channel=ch, check="partition", transition="test", due=now, payload=payload,
                                  dedup_key=f"partition:{ch}:{uuid.uuid4()}") for ch in ("email", "slack")}


def across(url: str, net: Partition) -> str:
    """`url` (a service on 127.0.0.1) as the namespace reaches it: the host end, through a forwarder."""
    parsed = sa.make_url(url)
    return parsed.set(host=net.host_ip, port=net.forward(parsed.port)).render_as_string(hide_password=False)


def test_a_worker_cut_off_mid_send_sends_nothing_twice_once_healed(partition_possible, fresh_database, tmp_path: Path):
    fleet_url = fresh_database()
    upgrade(fleet_url)
    fleet = create(fleet_url)
    redis = RedisServer(tmp_path / "redis").start()
    sink = ProviderSink(resend_api_keys=[KEY]).start()
    host_env = fleet_env(tmp_path, database_url=fleet_url, fleet_url=fleet_url, redis_url=redis.url, sink=sink)
    (tmp_path / "config" / "routing.yaml").write_text(ROUTING_YAML)
    host_env["ALERT_SLACK_WEBHOOK_URL"] = sink.slack_webhook_url
    client = Celery(broker=redis.url)
    procs: list[Proc] = []
    with Partition() as net:
        try:
            sink_port = sink.port_number
            cut_env = dict(host_env, DATABASE_URL=across(fleet_url, net), FLEET_DATABASE_URL=across(fleet_url, net))
            broker = f"redis://{net.host_ip}:{net.forward(redis.port)}/0"
            reach = f"http://{net.host_ip}:{net.forward(sink_port)}"
            cut_env.update(CELERY_BROKER_URL=broker, REDIS_URL=broker, CELERY_RESULT_BACKEND=broker,
                           RESEND_API_URL=reach,
                           ALERT_SLACK_WEBHOOK_URL=sink.slack_webhook_url.replace(sink.url, reach))
            cut_off = Proc([*net.exec_prefix, *CELERY, "worker", "-Q", "notify", "-c", "2", "-n", "cutoff@%h",
                            "--without-mingle", "--without-gossip", "-l", "INFO"], cut_env, tmp_path / "cutoff.log")
            procs.append(cut_off)
            assert cut_off.wait_for("ready", 60), cut_off.output()[-3000:]

            sink.script("resend.emails", [Reply(hang=HANG)])
            sink.script("slack.webhook", [Reply(hang=HANG)])
            ids = write_pair(fleet)
            for nid in ids.values():
                client.send_task("notify.deliver", kwargs={"notification_id": nid}, queue="notify")
            assert wait_until(lambda: len(sink.requests_for("resend.emails")) == 1
                              and len(sink.requests_for("slack.webhook")) == 1, 30), cut_off.output()[-3000:]
            net.cut()  # both providers have the request; neither answer will get back

            host = start_worker(host_env, tmp_path, queues="notify", concurrency=2, name="host")
            procs.append(host)
            with fleet.begin() as conn:  # the lease's 120 s, elapsed
                taken = conn.execute(sa.text("UPDATE fleet.notifications SET lease_until = now() - interval '1 second' "
                                             "WHERE status = 'sending'")).rowcount
            assert taken == 2
            client.send_task("notify.sweep", queue="notify")
            assert wait_until(lambda: one(fleet, "SELECT count(*) FROM fleet.notifications WHERE status = 'sent'")
                              == 2, 30), host.output()[-3000:]

            # the link stays down past the cut-off worker's request timeout: its attempts fail, and
            # recording that failure waits on a fleet connection across the dead link
            sent_at = max(r.at for r in sink.requests_for("resend.emails") + sink.requests_for("slack.webhook"))
            assert wait_until(lambda: time.time() > sent_at + REQUEST_TIMEOUT + 2, 30)
            assert "notification_lease_lost" not in cut_off.output()
            net.heal()
            assert wait_until(lambda: cut_off.output().count("succeeded in") >= 2, 90), cut_off.output()[-4000:]
            stale = cut_off.output()
        finally:
            for proc in procs:
                proc.kill()
    try:
        emails = sink.emails
        assert [e["idempotency_key"] for e in emails] == [ids["email"]]  # one email: the retry was replayed
        assert [r.replayed for r in sink.requests_for("resend.emails")] == [False, True]
        assert len(sink.slack_messages) == 2  # the lost answer's duplicate, and no third
        assert rows(fleet, "SELECT channel, status, last_error FROM fleet.notifications ORDER BY channel") == [
            ("email", "sent", None), ("slack", "sent", None)]
        assert one(fleet, "SELECT provider_id FROM fleet.notifications WHERE channel = 'email'") == emails[0]["id"]
        assert not set(due(fleet, datetime(2100, 1, 1, tzinfo=UTC))) & set(ids.values())
        assert stale.count("notification_lease_lost") == 2 and stale.count("'status': 'skipped'") == 2, stale[-4000:]
    finally:
        fleet.dispose()
        sink.stop()
        redis.stop()


pytestmark = [pytest.mark.reliability, pytest.mark.slow]
