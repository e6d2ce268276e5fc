"""The dead-man's switch (worker/heartbeat.py): pings only while the fleet is well, against a loopback
receiver in healthchecks.io's style; through real workers and beat, the pings stop within two
intervals of beat's death, of the checks missing their slots once their worker is gone, and of every
channel failing."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from ops.devkit.process import start_beat, start_worker, wait_until
from ops.devkit.sink import Reply
from tests.support import REPO, targets_metrics
from worker.beat import build_schedule
from worker.config import load_config
from worker.fleet.settings import Settings
from worker.watch.heartbeat import Verdict, beat_entries, ping, verdict

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def run_at(conn, check: str, at: datetime) -> None:
    conn.execute(sa.text("INSERT INTO fleet.check_runs (check_name, slot, started_at, status) VALUES (:c, :at, :at, 'ok')"),
                 {"c": check, "at": at})


def note(conn, channel: str, status: str, *, attempts: int = 0, sent_at=None, dead_at=None, due=NOW,
         throttled=False) -> None:
    conn.execute(sa.text(
        """INSERT INTO fleet.notifications (channel, transition, payload, dedup_key, status, attempts, next_attempt_at,
                                            sent_at, dead_at, throttled, last_error)
           VALUES (:ch, 'firing', '{}', gen_random_uuid()::text, :st, :a, :due, :sent, :dead, :thr,
                   CASE WHEN :st IN ('retrying', 'dead') OR (:st = 'sending' AND :a > 1)
                        THEN 'server_error: HTTP 503' END)"""),
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


def test_a_channel_that_keeps_failing_is_unwell_while_its_next_retry_is_in_flight(fleet):
    """A retry being sent is no sign of health: a provider that hangs holds it there for the channel's
    whole timeout (10 s), every attempt, and a single channel's outage must not ping meanwhile."""
    cfg = load_config(REPO / "config")
    with fleet.begin() as conn:
        note(conn, "email", "sending", attempts=2)  # its second attempt: one failure before it, a hiccup
    assert verdict(fleet, cfg, NOW, 60).healthy
    with fleet.begin() as conn:  # its third: two failed before it
        conn.execute(sa.text("UPDATE fleet.notifications SET attempts = 3"))
    assert verdict(fleet, cfg, NOW, 60).reasons == [
        "channel email keeps failing and sent nothing in 15 min: server_error: HTTP 503"]
    with fleet.begin() as conn:  # paced by a 429 last time (its attempts not counting it): not a fault
        conn.execute(sa.text("UPDATE fleet.notifications SET throttled = true"))
    assert verdict(fleet, cfg, NOW, 60).healthy


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


# -- every target judged on its own runs (tests/support/targets_metrics.py: targets a and b) -----------
def _all_ran(conn, cfg, at) -> None:
    for run in cfg.scheduled_checks():
        targets_metrics.run_at(conn, run.check.name, run.key, at - min(run.check.schedule.longest_gap(),
                                                                        timedelta(minutes=1)))


def test_a_target_whose_checks_stopped_is_named_though_another_targets_same_checks_run(fleet, tmp_path,
                                                                                       monkeypatch):
    cfg = targets_metrics.load_two_targets(tmp_path, monkeypatch, queue_b="checks_b")
    with fleet.begin() as conn:
        _all_ran(conn, cfg, NOW)
    assert verdict(fleet, cfg, NOW, 60).healthy
    with fleet.begin() as conn:  # b's checks stopped 8 minutes ago; a's (the same checks) go on
        conn.execute(sa.text("DELETE FROM fleet.check_runs WHERE target = 'b'"))
        for check in ("app_up", "app_rows"):
            targets_metrics.run_at(conn, check, "b", NOW - timedelta(minutes=8))
    assert verdict(fleet, cfg, NOW, 60).reasons == [
        "target=b: no check run for 8m 00s (2 check(s) late) (is a worker consuming the checks_b queue? is beat up?)"]
    with fleet.begin() as conn:  # b's 5-minute check ran since: only its 1-minute one is late
        targets_metrics.run_at(conn, "app_rows", "b", NOW - timedelta(minutes=1))
    assert verdict(fleet, cfg, NOW, 60).reasons == [
        "target=b: 1 of its 2 check(s) missed their slots: app_up (is a worker consuming the checks_b queue? "
        "is beat up?)"]
    with fleet.begin() as conn:  # and the fleet's own checks, run once, are judged as target `fleet`
        conn.execute(sa.text("DELETE FROM fleet.check_runs WHERE check_name = 'checks_missed'"))
        targets_metrics.run_at(conn, "checks_missed", "", NOW - timedelta(minutes=4))
    assert verdict(fleet, cfg, NOW, 60).reasons[0].startswith("target=b: 1 of its 2")
    assert verdict(fleet, cfg, NOW, 60).reasons[1].startswith(
        "target=fleet: 1 of its ") and "checks_missed (is a worker consuming the notify queue?" in \
        verdict(fleet, cfg, NOW, 60).reasons[1]


def test_a_target_that_never_ran_is_late_only_after_its_gap_from_when_beat_scheduled_it(fleet, tmp_path,
                                                                                        monkeypatch):
    from worker.checks.store import record_schedule

    cfg = targets_metrics.load_two_targets(tmp_path, monkeypatch)
    with fleet.begin() as conn:
        _all_ran(conn, cfg, NOW + timedelta(minutes=1))  # every check of a and of the fleet ran at NOW
        targets_metrics.run_at(conn, "app_up", "a", NOW - timedelta(hours=1))  # the fleet has run for an hour
        conn.execute(sa.text("DELETE FROM fleet.check_runs WHERE target = 'b'"))
    v = verdict(fleet, cfg, NOW, 60)
    assert v.reasons == ["target=b: none of its 2 check(s) has ever run (is a worker consuming the checks queue? "
                         "is beat up?)"]
    with fleet.begin() as conn:  # beat began scheduling b a minute ago: not late yet
        record_schedule(conn, cfg.scheduled_checks(), NOW - timedelta(minutes=1))
    assert verdict(fleet, cfg, NOW + timedelta(minutes=1, seconds=59), 60).healthy
    assert verdict(fleet, cfg, NOW + timedelta(minutes=2, seconds=1), 60).reasons == [  # its 1 m gap, 2 m grace
        "target=b: 1 of its 2 check(s) missed their slots: app_up (is a worker consuming the checks queue? "
        "is beat up?)"]  # app_rows (every 5 m) is not due yet


@pytest.mark.slow  # a worker and a beat for about 45 s
def test_through_a_real_worker_and_beat_the_heartbeat_fails_naming_the_target_nobody_consumes(env, fleet, receiver,
                                                                                             tmp_path):
    """Targets a and b run the same checks every 2 s; b's go to a queue of its own (checks_b) that no
    worker consumes. The heartbeat pings while b is within its grace, then signals /fail naming
    target b and its queue, never a, whose runs of the very same checks go on."""
    cfg_dir = targets_metrics.with_fleet_pack_hourly(
        targets_metrics.write_two_targets(tmp_path / "config", schedule="2s", queue_b="checks_b"))
    env = {**env, "OPSFLEET_CONFIG_DIR": str(cfg_dir), "OPSFLEET_PACKS": "fleet", "OPSFLEET_PACKS_DIR": str(cfg_dir),
           "A_URL": env["DATABASE_URL"], "B_URL": env["DATABASE_URL"], "HEARTBEAT_URL": receiver.url,
           "HEARTBEAT_INTERVAL": "2s", "HEARTBEAT_FAIL": "1"}
    worker = start_worker(env, tmp_path, queues="checks,notify", name="hbtargets")  # nobody on checks_b
    beat = start_beat(env, tmp_path, "hbtargetsbeat")
    try:
        def failed() -> list[str]:
            return [b for _, p, b in receiver.pings if p.endswith("/fail")]

        assert wait_until(failed, timeout=120), f"{receiver.pings[-3:]}\n{beat.output()[-1500:]}\n{worker.output()[-1500:]}"
        first_fail = next(i for i, (_, p, _) in enumerate(receiver.pings) if p.endswith("/fail"))
        assert first_fail > 0 and {p for _, p, _ in receiver.pings[:first_fail]} == {"/ping/3f1c"}  # well at first
        assert failed()[0].splitlines() == [  # both of b's checks, scheduled at once, late at once
            "target=b: none of its 2 check(s) has ever run (is a worker consuming the checks_b queue? is beat up?)"]
        assert not any("target=a" in body for body in failed())
        with fleet.connect() as conn:
            ran = dict(conn.execute(sa.text("SELECT target, count(*) FROM fleet.check_runs "
                                            "WHERE check_name = 'app_up' GROUP BY 1")).all())
        assert ran.get("a", 0) >= 5 and "b" not in ran, ran
    finally:
        beat.kill()
        worker.kill()


# -- the pings stop, through a real worker and beat, when the checks workers are gone or every channel
# fails (the module docstring of worker/watch/heartbeat.py: the bounds below are the README's) -------
INTERVAL = 1.0  # HEARTBEAT_INTERVAL's least
GAP = 2.0  # the app check's schedule
GRACE = 30.0  # two intervals, but at least MIN_GRACE


def _app_config(tmp_path, check: dict, channels: dict):
    """A config folder: the fleet pack hourly (out of the way) and an `app` pack of one `check`, every
    alert routed at once to `channels`."""
    import yaml

    cfg_dir = targets_metrics.with_fleet_pack_hourly(tmp_path / "config")
    (cfg_dir / "packs.yaml").write_text("enabled: [fleet, app]\n")
    (cfg_dir / "app").mkdir()
    (cfg_dir / "app" / "pack.yaml").write_text("description: a test app\n")
    (cfg_dir / "app" / "checks.yaml").write_text(yaml.safe_dump({"checks": [{
        "description": "a check every 2 s", "schedule": "2s", "severity": "critical", **check}]}))
    (cfg_dir / "routing.yaml").write_text(yaml.safe_dump({
        "channels": channels, "routes": [{"match": {}, "channels": list(channels), "group_wait": "0s"}]}))
    return cfg_dir


def _hb_env(env, cfg_dir, receiver, sink) -> dict:
    return {**env, "OPSFLEET_CONFIG_DIR": str(cfg_dir), "OPSFLEET_PACKS": "fleet,app",
            "OPSFLEET_PACKS_DIR": str(cfg_dir), "RESEND_API_KEY": "re_test_key_0123456789",
            "RESEND_API_URL": sink.resend_api_url, "ALERT_EMAIL_RECIPIENTS": "ops@example.com",
            "HEARTBEAT_URL": receiver.url, "HEARTBEAT_INTERVAL": f"{INTERVAL:g}s", "HEARTBEAT_FAIL": "1"}


def _pings(receiver, kind: str) -> list[tuple[float, str]]:
    """(monotonic time, body) of the plain pings (`ok`) or of the /fail signals (`fail`)."""
    return [(at, body) for at, path, body in receiver.pings if path.endswith("/fail") == (kind == "fail")]


@pytest.mark.slow  # two workers and a beat, and the checks' 30 s grace to sit out: about 45 s
def test_through_real_workers_and_beat_the_pings_stop_once_the_checks_workers_are_gone(env, fleet, redis_client,
                                                                                       receiver, sink, tmp_path):
    """The checks worker dies; the notify worker goes on running the heartbeat. The pings go on while
    the check is within its gap plus the grace, then stop, and /fail names the check and its queue."""
    cfg_dir = _app_config(tmp_path, {"name": "tick", "query": "SELECT 1 AS value", "condition": "> 5",
                                     "summary": "never fires"}, {"email": {"kind": "email"}})
    env = _hb_env(env, cfg_dir, receiver, sink)
    beat = start_beat(env, tmp_path, "hbchecksbeat")
    with ThreadPoolExecutor(2) as pool:  # both workers start at once: their start-up is most of the rest
        started = [pool.submit(start_worker, env, tmp_path, queues=q, name=f"hb{q}") for q in ("checks", "notify")]
    workers = [f.result() for f in started if f.exception() is None]

    def runs() -> int:
        with fleet.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM fleet.check_runs WHERE check_name = 'tick'")).scalar()

    try:
        checks, notify = (f.result() for f in started)  # raises if one did not start
        assert wait_until(lambda: runs() >= 3 and len(_pings(receiver, "ok")) >= 3, timeout=40), \
            f"{receiver.pings[-3:]}\n{beat.output()[-1500:]}\n{checks.output()[-1500:]}\n{notify.output()[-1500:]}"
        checks.kill()  # the checks queue has no consumer from now on
        with fleet.connect() as conn:  # when the last run began, on this clock (the database's says how long ago)
            ago = conn.execute(sa.text("SELECT extract(epoch FROM now() - max(started_at)) FROM fleet.check_runs "
                                       "WHERE check_name = 'tick'")).scalar()
            last = time.monotonic() - float(ago)
        late = last + GAP + GRACE  # the check missed its slots from here on
        assert wait_until(lambda: _pings(receiver, "fail"), timeout=late - time.monotonic() + 4 * INTERVAL + 10), \
            f"no /fail: {receiver.pings[-3:]}\n{notify.output()[-2000:]}"
        time.sleep(max(0.0, late + 3 * INTERVAL - time.monotonic()))  # a ping two intervals past `late` would be a lie
        ok, failed = _pings(receiver, "ok"), _pings(receiver, "fail")
        assert any(late - 5 <= at < late for at, _ in ok), [round(at - late, 1) for at, _ in ok[-8:]]  # within its grace
        assert all(at <= late + 2 * INTERVAL for at, _ in ok), [round(at - late, 1) for at, _ in ok[-8:]]
        assert late <= failed[0][0] <= late + 2 * INTERVAL, round(failed[0][0] - late, 1)
        assert failed[-1][1].splitlines() == [
            "1 check(s) missed their slots: tick (is a worker consuming the checks queue? is beat up?)"]
    finally:
        beat.kill()
        for w in workers:
            w.kill()
        redis_client.flushdb()  # a killed beat's lock (30 s) and what waits in the queues are not the next test's

@pytest.mark.slow  # a worker and a beat, and two failed attempts per channel (5 s apart): about 20 s
def test_through_a_real_worker_and_beat_the_pings_stop_once_every_channel_fails(env, fleet, redis_client,
                                                                                fresh_database, receiver, sink,
                                                                                tmp_path):
    """Email gets 503 from the provider, Slack's webhook is a closed port. While a channel's first
    failure is a hiccup the pings go on; once every channel failed twice and sent nothing, they stop
    within two intervals and /fail names each channel and its error."""
    import socket

    app = fresh_database()  # what the check reads: a switch the test turns on
    app_engine = sa.create_engine(app)
    with app_engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE switch (on_at timestamptz)"))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    sink.script("resend.emails", [Reply(503)] * 50)
    cfg_dir = _app_config(tmp_path, {"name": "switch_on", "query": "SELECT count(*) AS value FROM switch",
                                     "condition": "> 0", "summary": "the switch is on"},
                          {"email": {"kind": "email"}, "slack": {"kind": "slack"}})
    env = {**_hb_env(env, cfg_dir, receiver, sink), "DATABASE_URL": app, "FLEET_DATABASE_URL": env["DATABASE_URL"],
           "ALERT_SLACK_WEBHOOK_URL": f"http://127.0.0.1:{closed}/services/T000/B000/closedPortToken"}
    worker = start_worker(env, tmp_path, queues="checks,notify", concurrency=2, name="hbchannels")
    beat = start_beat(env, tmp_path, "hbchannelsbeat")

    def failing(attempts: int) -> bool:  # both channels' notifications failed `attempts` times and wait to retry
        with fleet.connect() as conn:
            return conn.execute(sa.text(
                "SELECT count(DISTINCT channel) FROM fleet.notifications WHERE status = 'retrying' "
                "AND attempts >= :a"), {"a": attempts}).scalar() == 2

    try:
        def well() -> bool:
            with fleet.connect() as conn:
                ran = conn.execute(sa.text("SELECT count(*) FROM fleet.check_runs WHERE check_name = 'switch_on'"))
            return ran.scalar() >= 2 and len(_pings(receiver, "ok")) >= 3

        assert wait_until(well, timeout=40), f"{receiver.pings[-3:]}\n{beat.output()[-1500:]}\n{worker.output()[-2000:]}"
        with app_engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO switch VALUES (now())"))
        assert wait_until(lambda: failing(1), timeout=20), worker.output()[-3000:]
        hiccup = time.monotonic()
        assert wait_until(lambda: failing(2), timeout=20), worker.output()[-3000:]
        broken = time.monotonic()  # the channels keep failing from here on
        assert wait_until(lambda: _pings(receiver, "fail"), timeout=2 * INTERVAL + 10), receiver.pings[-3:]
        time.sleep(3 * INTERVAL)
        ok, failed = _pings(receiver, "ok"), _pings(receiver, "fail")
        assert any(hiccup <= at for at, _ in ok), [round(at - broken, 1) for at, _ in ok[-8:]]  # one failure: a hiccup
        assert all(at <= broken + 2 * INTERVAL for at, _ in ok), [round(at - broken, 1) for at, _ in ok[-8:]]
        assert failed[0][0] <= broken + 2 * INTERVAL, round(failed[0][0] - broken, 1)
        reasons = failed[-1][1].splitlines()
        assert [r.split(":")[0] for r in reasons] == ["channel email keeps failing and sent nothing in 15 min",
                                                      "channel slack keeps failing and sent nothing in 15 min"], reasons
        assert "server_error" in reasons[0] and "connection" in reasons[1], reasons
        assert len(sink.emails) == 0 and len(sink.requests_for("resend.emails")) >= 2
    finally:
        beat.kill()
        worker.kill()
        app_engine.dispose()
        redis_client.flushdb()
