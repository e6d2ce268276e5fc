"""The dead-man's switch (worker/heartbeat.py): pings only while the fleet is well, against a loopback
receiver in healthchecks.io's style; through a real worker and beat, the pings stop within two
intervals of beat's death."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from ops.devkit.process import start_beat, start_worker, wait_until
from tests.conftest import REPO
from worker.beat import build_schedule
from worker.config import load_config
from worker.fleet.settings import Settings
from worker.heartbeat import Verdict, beat_entries, ping, verdict

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


class Receiver:
    """Records each ping: (monotonic time, path, body)."""

    def __init__(self) -> None:
        self.pings: list[tuple[float, str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # noqa: ANN002
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                receiver.pings.append((time.monotonic(), self.path, body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/3f1c"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def fleet(clean_fleet):
    return clean_fleet


def run_at(conn, check: str, at: datetime) -> None:
    conn.execute(sa.text("INSERT INTO fleet.check_runs (check_name, slot, started_at, status) VALUES (:c, :at, :at, 'ok')"),
                 {"c": check, "at": at})


def note(conn, channel: str, status: str, *, attempts: int = 0, sent_at=None, dead_at=None, due=NOW,
         throttled=False) -> None:
    conn.execute(sa.text(
        """INSERT INTO fleet.notifications (channel, transition, payload, dedup_key, status, attempts, next_attempt_at,
                                            sent_at, dead_at, throttled, last_error)
           VALUES (:ch, 'firing', '{}', gen_random_uuid()::text, :st, :a, :due, :sent, :dead, :thr,
                   CASE WHEN :st IN ('retrying', 'dead') THEN 'server_error: HTTP 503' END)"""),
        {"ch": channel, "st": status, "a": attempts, "due": due, "sent": sent_at, "dead": dead_at, "thr": throttled})


def test_a_check_that_missed_its_slots_makes_the_fleet_unwell_and_is_named(fleet):
    cfg = load_config(REPO / "config")
    every_5m = next(n for n, c in cfg.checks.items() if c.enabled and c.schedule.longest_gap() == timedelta(minutes=5))
    with fleet.begin() as conn:
        for name, c in cfg.checks.items():  # every check ran in its last slot...
            run_at(conn, name, NOW - min(c.schedule.longest_gap(), timedelta(minutes=1)))
    assert verdict(fleet, cfg, NOW, 60).healthy
    with fleet.begin() as conn:  # ...but one has not run for its gap plus two intervals
        conn.execute(sa.text("DELETE FROM fleet.check_runs WHERE check_name = :c"), {"c": every_5m})
        run_at(conn, every_5m, NOW - timedelta(minutes=5, seconds=121))
    v = verdict(fleet, cfg, NOW, 60)
    assert v.reasons == [f"1 check(s) missed their slots: {every_5m} (is a worker consuming the checks queue? "
                         "is beat up?)"]
    assert verdict(fleet, cfg, NOW - timedelta(seconds=2), 60).healthy  # two seconds earlier it was not late yet


def test_a_stuck_outbox_and_a_channel_that_only_fails_make_the_fleet_unwell(fleet):
    cfg = load_config(REPO / "config")
    with fleet.begin() as conn:
        note(conn, "email", "pending", due=NOW - timedelta(minutes=4))  # due, not yet stuck
        note(conn, "slack", "retrying", attempts=1)  # one failure is a hiccup
        note(conn, "slack", "retrying", attempts=5, throttled=True)  # a 429 is pacing, not a fault
    assert verdict(fleet, cfg, NOW, 60).healthy
    with fleet.begin() as conn:
        note(conn, "email", "pending", due=NOW - timedelta(minutes=6))
        note(conn, "slack", "retrying", attempts=2)
    assert verdict(fleet, cfg, NOW, 60).reasons == [
        "1 notification(s) due for over 5 min (is a worker consuming the notify queue?)",
        "channel slack keeps failing and sent nothing in 15 min: server_error: HTTP 503"]
    with fleet.begin() as conn:  # slack delivered something since: it is flaky, not broken
        note(conn, "slack", "sent", sent_at=NOW - timedelta(minutes=1))
        conn.execute(sa.text("DELETE FROM fleet.notifications WHERE channel = 'email'"))
        note(conn, "pagerduty", "dead", attempts=1, dead_at=NOW - timedelta(minutes=3))
    assert verdict(fleet, cfg, NOW, 60).reasons == [
        "channel pagerduty keeps failing and sent nothing in 15 min: server_error: HTTP 503"]


def test_ping_when_well_fail_signal_or_silence_when_not(receiver):
    s = Settings(heartbeat_url=receiver.url)
    assert ping(s, Verdict()) == "pinged"
    assert ping(s, Verdict(["1 check(s) missed their slots: x"])) == "withheld"
    assert ping(Settings(heartbeat_url=receiver.url, heartbeat_fail=True), Verdict(["outbox stuck", "slack down"])) \
        == "failed"
    assert [(p, b) for _, p, b in receiver.pings] == [("/ping/3f1c", "opsfleet ok"),
                                                      ("/ping/3f1c/fail", "outbox stuck\nslack down")]
    assert Settings(heartbeat_url="https://hc-ping.com/abc").heartbeat_signals_fail  # its receiver knows /fail
    receiver.close()
    assert ping(s, Verdict()) == "not_delivered"  # a receiver that is down: logged, never raised


def test_the_heartbeat_is_scheduled_only_with_a_url_and_expires_after_one_interval(monkeypatch):
    assert beat_entries(Settings()) == {}
    entry = beat_entries(Settings(heartbeat_url="https://hc-ping.com/abc", heartbeat_interval="30s"))["notify:heartbeat"]
    assert (entry["task"], entry["schedule"], entry["options"]) == ("notify.heartbeat", 30.0,
                                                                     {"queue": "notify", "expires": 30.0})
    monkeypatch.setenv("HEARTBEAT_URL", "https://hc-ping.com/abc")
    from worker.fleet.settings import reload_settings

    reload_settings()
    try:
        assert "notify:heartbeat" in build_schedule(load_config(REPO / "config"))
    finally:
        monkeypatch.delenv("HEARTBEAT_URL")
        reload_settings()


@pytest.mark.slow  # a worker and a beat: about 20 s
def test_through_a_real_worker_and_beat_the_pings_stop_within_two_intervals_of_beats_death(env, fleet, receiver,
                                                                                           tmp_path):
    env = {**env, "HEARTBEAT_URL": receiver.url, "HEARTBEAT_INTERVAL": "2s"}
    worker = start_worker(env, tmp_path, queues="notify", name="hb")
    beat = start_beat(env, tmp_path, "hbbeat")
    try:
        assert wait_until(lambda: len(receiver.pings) >= 3, timeout=40), beat.output()[-2000:] + worker.output()[-2000:]
        assert {p for _, p, _ in receiver.pings} == {"/ping/3f1c"}
        beat.kill()
        killed = time.monotonic()
        time.sleep(6)  # three intervals: any ping after two of them would be a lie
        assert all(at <= killed + 4 for at, _, _ in receiver.pings), [round(at - killed, 1) for at, _, _ in receiver.pings]
    finally:
        beat.kill()
        worker.kill()


@pytest.mark.slow  # a worker and a beat for about 20 s
def test_no_worker_on_the_checks_queue_and_checks_missed_is_delivered_by_email(env, fleet, sink, tmp_path):
    """The evaluation ledger end to end: beat records its schedule (the checks', and the jobs' for
    maintenance_job_health), nobody consumes the checks queue, and checks_missed (a fleet check, run by
    the notify worker) names the check and its queue by email."""
    import shutil

    import yaml

    cfg_dir = tmp_path / "config"
    (cfg_dir / "app").mkdir(parents=True)
    shutil.copytree(REPO / "config" / "fleet", cfg_dir / "fleet", ignore=shutil.ignore_patterns("tests"))
    fleet_checks = yaml.safe_load((cfg_dir / "fleet" / "checks.yaml").read_text())
    for c in fleet_checks["checks"]:
        c["schedule"] = "2s" if c["name"] == "checks_missed" else "1h"  # the ledger often, the rest out of the way
        c.pop("runbook", None)  # relative to the shipped config, not this copy
    (cfg_dir / "fleet" / "checks.yaml").write_text(yaml.safe_dump(fleet_checks))
    (cfg_dir / "packs.yaml").write_text("enabled: [fleet, app]\n")
    (cfg_dir / "app" / "pack.yaml").write_text("description: a test app\n")
    (cfg_dir / "app" / "checks.yaml").write_text(yaml.safe_dump({"checks": [{
        "name": "tick", "description": "seed 000: a check every 2 s", "schedule": "2s", "query": "SELECT 1 AS value",
        "condition": "> 5", "severity": "warning", "summary": "never fires"}]}))
    (cfg_dir / "app" / "backlogs.yaml").write_text(yaml.safe_dump({"backlogs": [{
        "name": "confirmations", "task": "backlog.reprocess_confirmations", "schedule": "5m", "kwargs": {"limit": 10}}]}))
    (cfg_dir / "routing.yaml").write_text(yaml.safe_dump({
        "channels": {"email": {"kind": "email"}}, "routes": [{"match": {}, "channels": ["email"], "group_wait": "0s"}]}))
    env = {**env, "OPSFLEET_CONFIG_DIR": str(cfg_dir), "OPSFLEET_PACKS": "fleet,app", "OPSFLEET_PACKS_DIR": str(cfg_dir),
           "RESEND_API_KEY": "re_test_key_0123456789", "RESEND_API_URL": sink.resend_api_url,
           "ALERT_EMAIL_RECIPIENTS": "ops@example.com"}
    worker = start_worker(env, tmp_path, queues="notify", name="ledger")  # no consumer of the checks queue
    beat = start_beat(env, tmp_path, "ledgerbeat")
    try:
        if not wait_until(lambda: any("Check tick has not run" in e["subject"] for e in sink.emails), timeout=60):
            with fleet.connect() as conn:
                state = [dict(r._mapping) for r in conn.execute(sa.text(
                    "SELECT check_name, state, last_value FROM fleet.alerts WHERE check_name = 'checks_missed'"))]
                sched = [tuple(r) for r in conn.execute(sa.text("SELECT * FROM fleet.check_schedule"))]
            raise AssertionError(f"no checks_missed email: alerts {state}, schedule {sched}, {len(sink.emails)} "
                                 f"emails\n{worker.output()[-1500:]}")
        mail = next(e for e in sink.emails if "Check tick has not run" in e["subject"])
        assert mail["subject"].startswith("[HIGH]") and "checks queue" in mail["subject"]
        assert "[HIGH] checks_missed" in mail["text"] and "check_name=tick, queue=checks" in mail["text"]
        with fleet.connect() as conn:
            queues = dict(conn.execute(sa.text("SELECT check_name, queue FROM fleet.check_schedule")).all())
            ran = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT check_name FROM fleet.check_runs"))}
            jobs = {tuple(r) for r in conn.execute(sa.text(
                "SELECT family, job, queue, longest_gap_s, enabled FROM fleet.job_schedule"))}
        # the job ledger maintenance_job_health reads (config/fleet/tests/maintenance_job_health.yaml):
        # a backlog by the name its runs have, a duration schedule's gap, a daily cron's
        assert jobs == {("maintenance", "fleet_history_retention", "maintenance", 86400.0, True),
                        ("backlog", "reprocess_confirmations", "backlog", 300.0, True)}
        assert queues["tick"] == "checks" and queues["checks_missed"] == "notify"
        assert "tick" not in ran and "checks_missed" in ran  # the ledger ran where the stuck queue could not starve it
    finally:
        beat.kill()
        worker.kill()
