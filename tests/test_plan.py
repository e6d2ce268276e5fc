"""The outbox's plan: why a transition notifies each channel or not, and the promise it carries,
that a backtest counts what production sends (both call the same state machine and the same plan).

The hypothesis test feeds random value series, at random instants, to the live engine (evaluate() on
a real fleet database, the outbox's UNIQUE dedup key included) and to the backtest's replay(), and
asserts the same transitions and the same number of notifications per channel.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import clear_alert_state
from worker.checks.backtest import Backtest, replay
from worker.checks.collect import Sample
from worker.checks.engine import evaluate
from worker.checks.spec import Check
from worker.fleet.db import create
from worker.notify import outbox
from worker.notify.routing import Routing

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def make_check(*, for_: str = "0s", no_data: str = "ok", severity: str = "critical") -> Check:
    return Check.model_validate({
        "name": "plan_probe", "description": "a rule for the plan's tests", "schedule": "1m",
        "query": "SELECT 1 AS value", "condition": "> 50", "for": for_, "severity": severity,
        "summary": "value {{ value }}", "no_data": no_data,
    })


def make_routing(*, repeat: str = "1h", send_resolved: bool = True, group_wait: str = "30s",
                 second_route: bool = False) -> Routing:
    routes = [{"match": {"severity": "critical"}, "channels": ["email", "slack", "digest"], "repeat_interval": repeat,
               "send_resolved": send_resolved, "group_wait": group_wait, "continue": second_route}]
    if second_route:  # a catch-all that names email again, with its own repeat interval
        routes.append({"channels": ["email", "pager"], "repeat_interval": "25m", "send_resolved": not send_resolved})
    routes.append({"match": {"severity": "info"}, "channels": ["digest"]})
    return Routing.model_validate({
        "channels": {"email": {"kind": "email"}, "slack": {"kind": "slack"}, "pager": {"kind": "slack"},
                     "digest": {"kind": "digest"}},
        "routes": routes,
    })


def decide(routing: Routing, before: str, after: str, *, fired_at=T0, now=T0, ended=None) -> dict[str, tuple]:
    out = outbox.plan(routing, check="plan_probe", severity="critical", labels={"k": "a"}, fingerprint="fp",
                      before=before, after=after, fired_at=fired_at, now=now, ended_silence=ended)
    return {d.channel: (d.reason, d.transition, d.dedup_key) for d in out}


# -- the reasons ---------------------------------------------------------------------------------------
def test_a_first_firing_notifies_every_channel_of_the_route_but_the_digest():
    got = decide(make_routing(), "pending", "firing")
    assert got == {"email": (outbox.FIRST, "firing", f"email:fp:firing:{int(T0.timestamp())}:0"),
                   "slack": (outbox.FIRST, "firing", f"slack:fp:firing:{int(T0.timestamp())}:0")}


def test_still_firing_inside_the_repeat_interval_is_held_back():
    got = decide(make_routing(repeat="1h"), "firing", "firing", now=T0 + timedelta(minutes=59))
    assert {ch: r[0] for ch, r in got.items()} == {"email": outbox.WITHIN_REPEAT, "slack": outbox.WITHIN_REPEAT}
    assert all(key is None for _, _, key in got.values())


def test_each_elapsed_repeat_window_is_one_key():
    r = make_routing(repeat="1h")
    at_61 = decide(r, "firing", "firing", now=T0 + timedelta(minutes=61))
    at_119 = decide(r, "firing", "firing", now=T0 + timedelta(minutes=119))
    at_121 = decide(r, "firing", "firing", now=T0 + timedelta(minutes=121))
    assert at_61["email"][:2] == (outbox.REPEAT, "repeat")
    assert at_61["email"][2] == at_119["email"][2] != at_121["email"][2]
    assert at_121["email"][2].endswith(":2")


def test_resolved_notifies_only_where_send_resolved_is_on():
    assert decide(make_routing(send_resolved=True), "firing", "resolved")["slack"][:2] == (outbox.RESOLVED, "resolved")
    off = decide(make_routing(send_resolved=False), "firing", "resolved")
    assert off == {"email": (outbox.RESOLVED_OFF, None, None), "slack": (outbox.RESOLVED_OFF, None, None)}


@pytest.mark.parametrize(("before", "after"), [("inactive", "pending"), ("pending", "inactive"),
                                               ("resolved", "resolved"), ("pending", "resolved")])
def test_transitions_that_are_not_firing_or_a_resolved_firing_send_nothing(before, after):
    assert decide(make_routing(), before, after) == {}


def test_an_ended_silence_sends_the_suppressed_notice_once_with_its_own_key():
    asked = []

    def ended(channel: str) -> str | None:
        asked.append(channel)
        return "sil-1" if channel == "email" else None

    got = decide(make_routing(), "firing", "firing", now=T0 + timedelta(minutes=5), ended=ended)
    assert got["email"][:2] == (outbox.UNSILENCED, "unsilenced") and got["email"][2].endswith(":sil-1")
    assert got["slack"][0] == outbox.WITHIN_REPEAT
    assert asked == ["email", "slack"]
    # past the first window a repeat goes out anyway: the silence's end is not asked about
    asked.clear()
    decide(make_routing(repeat="1h"), "firing", "firing", now=T0 + timedelta(hours=2), ended=ended)
    assert asked == []


def test_every_matching_route_is_planned_and_the_dedup_key_joins_them_per_channel():
    got = outbox.plan(make_routing(second_route=True), check="plan_probe", severity="critical", labels={},
                      fingerprint="fp", before="pending", after="firing", fired_at=T0, now=T0)
    assert [(d.channel, d.reason) for d in got] == [("email", outbox.FIRST), ("slack", outbox.FIRST),
                                                    ("email", outbox.FIRST), ("pager", outbox.FIRST)]
    assert got[0].dedup_key == got[2].dedup_key  # one email: the outbox's UNIQUE key takes the second as a no-op


# -- live and backtest agree ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fleet(fleet_db):
    engine = create(fleet_db)
    yield engine
    engine.dispose()


VALUES = st.sampled_from([None, 0.0, 10.0, 60.0, 100.0, "absent"])


@st.composite
def scenarios(draw):
    check = make_check(for_=draw(st.sampled_from(["0s", "5m", "15m"])),
                       no_data=draw(st.sampled_from(["ok", "alerting", "keep"])))
    routing = make_routing(repeat=draw(st.sampled_from(["10m", "1h"])), send_resolved=draw(st.booleans()),
                           group_wait=draw(st.sampled_from(["0s", "30s"])), second_route=draw(st.booleans()))
    steps = []
    t = T0 + timedelta(seconds=draw(st.integers(0, 3600)))
    for _ in range(draw(st.integers(1, 24))):
        t += timedelta(seconds=draw(st.integers(1, 50 * 60)))
        if draw(st.integers(0, 9)) == 0:
            steps.append((t, "check plan_probe: canceling statement due to statement timeout"))
            continue
        samples = [Sample({"k": k}, v) for k in ("a", "b") if (v := draw(VALUES)) != "absent"]
        steps.append((t, samples))
    return check, routing, steps


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_the_backtest_counts_what_live_evaluation_sends(fleet, scenario):
    check, routing, steps = scenario
    with fleet.begin() as conn:
        clear_alert_state(conn)
    for t, samples in steps:
        if isinstance(samples, str):
            continue  # a failed query records an error and evaluates nothing (run_check)
        with fleet.begin() as conn:
            evaluate(check, samples, conn, t, routing)
    with fleet.connect() as conn:
        live_events = [(r.at, dict(r.labels), r.from_state, r.to_state) for r in conn.execute(sa.text(
            "SELECT at, labels, from_state, to_state FROM fleet.alert_events ORDER BY id"))]
        live_sent = {r.channel: r.n for r in conn.execute(sa.text(
            "SELECT channel, count(*) AS n FROM fleet.notifications GROUP BY channel"))}

    result = replay(check, routing, steps, Backtest(check.name, steps[0][0], steps[-1][0], timedelta(minutes=1)))
    assert [(e.at, e.labels, e.from_state, e.to_state) for e in result.events] == live_events
    assert result.notifications == live_sent
    assert result.steps == len(steps)
