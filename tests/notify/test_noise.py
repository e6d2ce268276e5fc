"""Noise control: keep_firing_for, acknowledgements, inhibit_rules, mute/active time intervals.

The engine's own evaluate() on a real fleet database, the outbox's rows, and delivery through the real
Resend and Slack SDKs against the loopback fakes; the shipped checks and inhibit rules where they are
the point (double_booking_attempts, database_down over the monitored database's checks).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.support import REPO
from tests.support.cli import run_cli
from tests.support.notify import settings_for
from worker.checks import store
from worker.checks.collect import Sample
from worker.checks.engine import evaluate
from worker.checks.spec import Check
from worker.checks.state import Instance, advance
from worker.config import load_config
from worker.notify import digest
from worker.notify.delivery import deliver
from worker.notify.inhibit import InhibitRule, Matcher
from worker.notify.routing import Routing
from worker.notify.timeintervals import TimeInterval

CONFIG = load_config(REPO / "config")
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # a Monday
MIN = timedelta(minutes=1)


def noise_check(name="flappy", keep="0s", severity="critical", database="monitored") -> Check:
    """A rule whose value the test feeds (evaluate() on samples), with keep_firing_for and a database."""
    return Check.model_validate({
        "name": name, "description": "a rule for the noise tests", "schedule": "1m", "query": "SELECT 1 AS value",
        "condition": "> 0", "severity": severity, "summary": f"{name} at {{{{ value }}}}", "keep_firing_for": keep,
        "database": database})


def noise_routing(**route) -> Routing:
    """One route to email and Slack (`route` adds to it), the shipped inhibit rules, a `batch` interval."""
    return Routing.model_validate({
        "channels": {"email": {"kind": "email"}, "slack": {"kind": "slack"}},
        "routes": [{"channels": ["email", "slack"], "group_wait": "0s", "repeat_interval": "1h", **route}],
        "inhibit_rules": [r.model_dump() for r in CONFIG.routing.inhibit_rules],
        "time_intervals": [{"name": "batch", "time_intervals": [{"times": [{"start_time": "09:20", "end_time": "09:40"}]}]}],
    })


def run(db, check, value, at, routes=None, labels=None) -> list[str]:
    samples = [] if value == "absent" else [Sample(labels or {}, value)]
    with db.begin() as conn:
        _, ids, _ = evaluate(check, samples, conn, at, routes if routes is not None else noise_routing())
    return ids


def state(db, check_name):
    with db.connect() as conn:
        return conn.execute(sa.text("SELECT state FROM fleet.alerts WHERE check_name = :c"), {"c": check_name}).scalar()


def rows(db, where="true"):
    with db.connect() as conn:
        return conn.execute(sa.text(f"SELECT * FROM fleet.notifications WHERE {where} ORDER BY created_at")).all()  # noqa: S608


def held(db):
    with db.connect() as conn:
        return {r.reason: int(r.n) for r in conn.execute(sa.text(
            "SELECT reason, sum(count) AS n FROM fleet.held_back GROUP BY reason"))}


# -- keep_firing_for ---------------------------------------------------------------------------------
def states(check: Check, values: list[float | None], step=MIN) -> list[str]:
    instances: dict[str, Instance] = {}
    out = []
    for i, v in enumerate(values):
        for s in advance(check, instances, [Sample({}, v)], T0 + i * step):
            instances[s.fingerprint] = s.after
            out.append(s.after.state)
    return out


def test_without_keep_firing_for_a_flapping_value_resolves_and_fires_each_time():
    assert states(noise_check(), [1, 0, 1, 0, 1]) == ["firing", "resolved", "firing", "resolved", "firing"]


def test_keep_firing_for_holds_a_flapping_alert_and_resolves_once_it_stays_false_that_long():
    check = noise_check(keep="5m")
    # false at 1, 2 min: kept; true again at 3: the timer resets; false from 4: kept until 4 + 5 = 9 min
    got = states(check, [1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    assert got == ["firing"] * 9 + ["resolved", "resolved"]


def test_keep_firing_for_counts_from_the_first_false_evaluation_and_no_data_counts_as_false():
    check = noise_check(keep="10m")
    got = states(check, [1, None, None, 0], step=4 * MIN)  # false since 4 min; 12 - 4 = 8 < 10
    assert got == ["firing", "firing", "firing", "firing"]
    assert states(check, [1, None, None, 0, 0], step=4 * MIN)[-1] == "resolved"  # 16 - 4 = 12 >= 10


def test_a_kept_alert_sends_no_resolved_and_firing_pairs(db, sink):
    check = noise_check(keep="5m")
    for i, v in enumerate([1, 0, 1, 0, 1, 0]):
        run(db, check, v, T0 + i * MIN)
    assert [r.transition for r in rows(db)] == ["firing", "firing"]  # one per channel, nothing else
    assert state(db, "flappy") == "firing"
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT keep_firing_since FROM fleet.alerts")).scalar() == T0 + 5 * MIN


def test_double_booking_attempts_keeps_firing_24h_after_one_event_or_until_acknowledged(db, env):
    check = CONFIG.checks["double_booking_attempts"]
    assert check.keep_firing_for == timedelta(hours=24)
    run(db, check, 1, T0)  # one event
    run(db, check, 0, T0 + 6 * MIN)  # the 5-minute window has passed
    run(db, check, 0, T0 + 23 * timedelta(hours=1))
    assert state(db, "double_booking_attempts") == "firing"
    run(db, check, 0, T0 + 6 * MIN + timedelta(hours=24))
    assert state(db, "double_booking_attempts") == "resolved"  # 24 h without a new event
    # a new event, acknowledged by a person: resolved at the next evaluation that sees none
    run(db, check, 2, T0 + timedelta(days=2))
    run(db, check, 0, T0 + timedelta(days=2, minutes=6))
    assert state(db, "double_booking_attempts") == "firing"
    proc = run_cli(["alerts", "ack", "double_booking_attempts", "--comment", "app fix deployed", "--author", "ana"], env)
    assert proc.returncode == 0, proc.stderr
    assert "acknowledged double_booking_attempts" in proc.stdout
    run(db, check, 0, T0 + timedelta(days=2, minutes=7))
    assert state(db, "double_booking_attempts") == "resolved"


# -- acknowledgements --------------------------------------------------------------------------------
def test_an_acknowledged_alert_stops_repeating_until_it_fires_anew(db, env):
    check = noise_check(name="ackable")
    run(db, check, 1, T0)
    assert len(rows(db)) == 2
    proc = run_cli(["alerts", "ack", "ackable", "--comment", "looking", "--author", "bo"], env)
    assert proc.returncode == 0, proc.stderr
    listed = run_cli(["alerts", "list", "--json"], env)
    [alert] = [a for a in __import__("json").loads(listed.stdout) if a["check"] == "ackable"]
    assert (alert["acked_by"], alert["ack_comment"]) == ("bo", "looking") and alert["acked_at"]
    assert "acked by bo" in run_cli(["alerts", "list"], env).stdout
    for h in (1, 2, 3):  # three repeat windows: nothing, and each is counted as acknowledged
        run(db, check, 1, T0 + timedelta(hours=h, minutes=1))
    assert len(rows(db)) == 2
    assert held(db)["acknowledged"] == 6
    run(db, check, 0, T0 + timedelta(hours=4))  # resolves: people are told
    assert [r.transition for r in rows(db)][-2:] == ["resolved", "resolved"]
    run(db, check, 1, T0 + timedelta(hours=5))  # a new episode is not acknowledged
    run(db, check, 1, T0 + timedelta(hours=6, minutes=1))
    assert [r.transition for r in rows(db)][-4:] == ["firing", "firing", "repeat", "repeat"]


def test_the_digest_lists_acknowledged_alerts_and_counts_what_they_held_back(db, env):
    check = noise_check(name="ackable")
    run(db, check, 1, T0)
    with db.begin() as conn:
        store.acknowledge(conn, "ackable", author="bo", comment="on it", now=T0)
    run(db, check, 1, T0 + timedelta(hours=1, minutes=1))
    text = digest.render(digest.collect(db, None, T0 + timedelta(hours=2)))["text"]
    assert "Acknowledged and still firing (1)" in text and "by bo: on it" in text
    assert "acknowledged 2" in text


def test_ack_of_nothing_firing_is_one_line_and_changes_nothing(db, env):
    proc = run_cli(["alerts", "ack", "no_such_alert"], env)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no firing alert is 'no_such_alert'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ack_by_fingerprint_prefix(db, env):
    check = noise_check(name="ackable")
    with db.begin() as conn:
        evaluate(check, [Sample({"k": "a"}, 1), Sample({"k": "b"}, 1)], conn, T0, noise_routing())
    with db.connect() as conn:
        fp = conn.execute(sa.text("SELECT fingerprint FROM fleet.alerts WHERE labels->>'k' = 'a'")).scalar()
    assert run_cli(["alerts", "ack", fp[:8]], env).returncode == 0
    with db.connect() as conn:
        acked = dict(conn.execute(sa.text("SELECT labels->>'k', acked_at IS NOT NULL FROM fleet.alerts")).all())
    assert acked == {"a": True, "b": False}


# -- inhibition --------------------------------------------------------------------------------------
def test_database_down_inhibits_the_monitored_databases_alerts_and_says_how_many(db, sink):
    r = noise_routing()
    s = settings_for(sink)
    down = CONFIG.checks["database_down"]
    backlog = noise_check(name="confirmation_backlog_like", severity="critical", database="monitored")
    errors = CONFIG.checks["check_errors_in_a_row"]
    fleet_check = noise_check(name="outbox_like", severity="critical", database="fleet")

    for nid in run(db, down, 2, T0):
        assert deliver(nid, fleet=db, settings=s, routing=r, now=T0).status == "sent"
    assert len(sink.emails) == 1
    # while it fires: the monitored database's check, and the check errors, are held back; a fleet check is not
    inhibited = run(db, backlog, 50, T0 + MIN) + run(db, errors, 3, T0 + MIN, labels={"check_name": "database_up"})
    assert [deliver(nid, fleet=db, settings=s, routing=r, now=T0 + MIN).status for nid in inhibited] == ["suppressed"] * 4
    assert [deliver(nid, fleet=db, settings=s, routing=r, now=T0 + MIN).status
            for nid in run(db, fleet_check, 1, T0 + MIN)] == ["sent", "sent"]
    assert len(sink.emails) == 2
    with db.connect() as conn:
        fp_down = conn.execute(sa.text("SELECT fingerprint FROM fleet.alerts WHERE check_name = 'database_down'")).scalar()
    assert {(x.status, x.suppressed_reason, x.suppressed_detail) for x in rows(db, "check_name <> 'database_down' "
            "AND check_name <> 'outbox_like'")} == {("suppressed", "inhibited", fp_down)}
    assert held(db)["inhibited"] == 4

    # its repeat says how many dependent alerts it holds back
    repeat = run(db, down, 2, T0 + timedelta(hours=1, minutes=1))
    for nid in repeat:
        assert deliver(nid, fleet=db, settings=s, routing=r, now=T0 + timedelta(hours=1, minutes=1)).status == "sent"
    assert "Notices of 2 dependent alerts are held back while it fires" in sink.emails[-1]["text"]
    assert "2 dependent alerts" in sink.slack_messages[-1]["text"] + str(sink.slack_messages[-1].get("blocks"))

    # the target's repeat window begins while the source still fires: held back as well
    for nid in run(db, backlog, 50, T0 + timedelta(hours=1, minutes=1)):
        assert deliver(nid, fleet=db, settings=s, routing=r, now=T0 + timedelta(hours=1, minutes=1)).status == "suppressed"
    # it resolves: what still fires is told once, at its next evaluation
    resolved = run(db, down, 0, T0 + timedelta(hours=1, minutes=2))
    for nid in resolved:
        deliver(nid, fleet=db, settings=s, routing=r, now=T0 + timedelta(hours=1, minutes=2))
    assert "were held back while it fired" in sink.emails[-1]["text"]
    told = run(db, backlog, 50, T0 + timedelta(hours=1, minutes=3))
    assert [note.transition for note in rows(db, "check_name = 'confirmation_backlog_like' AND status = 'pending'")] \
        == ["unsilenced", "unsilenced"]
    assert [deliver(nid, fleet=db, settings=s, routing=r, now=T0 + timedelta(hours=1, minutes=3)).status
            for nid in told] == ["sent", "sent"]
    assert run(db, backlog, 50, T0 + timedelta(hours=1, minutes=4)) == []  # once


def test_an_alert_never_inhibits_itself_and_equal_labels_must_match(db, sink):
    r = Routing.model_validate({
        "channels": {"email": {"kind": "email"}},
        "routes": [{"channels": ["email"], "group_wait": "0s"}],
        "inhibit_rules": [{"source_matchers": ['severity="critical"'], "target_matchers": ['severity=~"critical|warning"'],
                           "equal": ["system"]}]})
    s = settings_for(sink)
    crit = noise_check(name="crit_one", severity="critical")
    [own] = run(db, crit, 1, T0, r, labels={"system": "a"})
    assert deliver(own, fleet=db, settings=s, routing=r, now=T0).status == "sent"  # not by itself
    [same] = run(db, noise_check(name="warn_a", severity="warning"), 1, T0, r, labels={"system": "a"})
    [other] = run(db, noise_check(name="warn_b", severity="warning"), 1, T0, r, labels={"system": "b"})
    assert deliver(same, fleet=db, settings=s, routing=r, now=T0).status == "suppressed"
    assert deliver(other, fleet=db, settings=s, routing=r, now=T0).status == "sent"  # system differs


def test_matchers_parse_as_alertmanagers_and_refuse_what_is_not_one():
    assert Matcher.parse('alertname="database_down"').matches({"alertname": "database_down"})
    assert Matcher.parse('severity!="info"').matches({"severity": "critical"})
    assert Matcher.parse('check=~"db_.*"').matches({"check": "db_unused_indexes"})
    assert not Matcher.parse('check=~"db_"').matches({"check": "db_unused_indexes"})  # anchored
    assert Matcher.parse('check!~"db_.*"').matches({"check": "outbox_stuck"})
    assert Matcher.parse("system=fleet").matches({"system": "fleet"})
    assert Matcher.parse('missing=""').matches({})  # an absent label is the empty string
    for bad, why in (("alertname", "is not name="), ('x=~"("', "not a regular expression"), ('1x="a"', "is not name=")):
        with pytest.raises(ValueError, match=why):
            InhibitRule.model_validate({"source_matchers": [bad], "target_matchers": ['a="b"']})


# -- mute and active time intervals ------------------------------------------------------------------
def test_a_muted_route_holds_back_what_fires_in_the_window_and_tells_it_once_at_the_end(db, sink):
    r = noise_routing(mute_time_intervals=["batch"])  # 09:20-09:40 UTC
    check = noise_check(name="batchy")
    assert run(db, check, 1, T0 + 25 * MIN, r) == []  # fires at 09:25: nothing to deliver
    assert {(x.status, x.suppressed_reason, x.suppressed_detail) for x in rows(db)} == {("suppressed", "muted", "batch")}
    assert held(db)["muted"] == 2
    assert run(db, check, 1, T0 + 39 * MIN, r) == []
    ids = run(db, check, 1, T0 + 40 * MIN, r)  # the window ends and it still fires
    assert len(ids) == 2 and {x.transition for x in rows(db, "status = 'pending'")} == {"unsilenced"}
    s = settings_for(sink)
    assert [deliver(nid, fleet=db, settings=s, routing=r, now=T0 + 40 * MIN).status for nid in ids] == ["sent", "sent"]
    assert run(db, check, 1, T0 + 41 * MIN, r) == []  # once


def test_what_fires_and_resolves_inside_a_mute_sends_nothing_at_all(db):
    r = noise_routing(mute_time_intervals=["batch"])
    check = noise_check(name="batchy")
    run(db, check, 1, T0 + 22 * MIN, r)
    run(db, check, 0, T0 + 30 * MIN, r)
    run(db, check, 0, T0 + 45 * MIN, r)
    assert {x.status for x in rows(db)} == {"suppressed"} and len(rows(db)) == 2
    assert held(db)["muted"] == 2


def test_outside_its_active_time_intervals_a_route_is_muted(db):
    r = noise_routing(active_time_intervals=["batch"])
    check = noise_check(name="batchy")
    assert run(db, check, 1, T0, r) == []  # 09:00: outside 09:20-09:40
    assert {x.suppressed_detail for x in rows(db)} == {"outside batch"}
    assert len(run(db, check, 1, T0 + 20 * MIN, r)) == 2  # inside: told


@pytest.mark.parametrize(("interval", "at", "holds"), [
    ({"weekdays": ["monday:friday"]}, T0, True),
    ({"weekdays": ["saturday", "sunday"]}, T0, False),
    ({"times": [{"start_time": "09:00", "end_time": "09:01"}]}, T0, True),
    ({"times": [{"start_time": "08:00", "end_time": "09:00"}]}, T0, False),  # [start, end)
    ({"times": [{"start_time": "10:00", "end_time": "11:00"}], "location": "Europe/Berlin"}, T0, True),  # UTC+1
    ({"days_of_month": ["-1"]}, T0, True),  # 30 November is the month's last day
    ({"days_of_month": ["1:7"]}, T0, False),
    ({"months": ["november"], "years": ["2026"]}, T0, True),
    ({"months": ["december", "1:10"]}, T0, False),
    ({"times": [{"start_time": "22:00", "end_time": "24:00"}]}, T0.replace(hour=23, minute=59), True),
])
def test_time_intervals_hold_as_alertmanagers(interval, at, holds):
    assert TimeInterval.model_validate(interval).holds(at) is holds


@pytest.mark.parametrize(("interval", "why"), [
    ({"times": [{"start_time": "23:00", "end_time": "01:00"}]}, "must come before end_time"),
    ({"times": [{"start_time": "9:00", "end_time": "10:00"}]}, "is not a time of day HH:MM"),
    ({"weekdays": ["funday"]}, "is not a weekday"),
    ({"location": "Mars/Olympus"}, "is not an IANA time zone"),
    ({"months": ["13"]}, "out of range"),
])
def test_a_bad_time_interval_says_what_is_wrong(interval, why):
    with pytest.raises(ValueError, match=why):
        TimeInterval.model_validate(interval)


def test_config_validate_names_the_file_and_field_of_an_unknown_interval(tmp_path, env):
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "routing.yaml").write_text(
        "channels: {email: {kind: email}}\n"
        "routes:\n  - channels: [email]\n    mute_time_intervals: [nightly]\n")
    proc = run_cli(["config", "validate", "--offline"], {**env, "OPSFLEET_CONFIG_DIR": str(cfg), "OPSFLEET_PACKS": ""})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert "routing.yaml" in line and "mute_time_intervals names 'nightly'" in line and "\n" not in line
