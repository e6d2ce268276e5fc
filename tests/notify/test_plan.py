"""The outbox's plan: why a transition notifies each channel or not, and the promise it carries,
that a backtest counts what production sends (both call the same state machine and the same plan).

The hypothesis test feeds random value series, at random instants, to the live engine (evaluate() on
a real fleet database, the outbox's UNIQUE dedup key included) and to the backtest's replay(), and
asserts the same transitions and the same number of notifications per channel, with for,
keep_firing_for, no_data, exponential repeats and mute/active time intervals drawn at random.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.db import clear_alert_state
from worker.checks.backtest import Backtest, replay
from worker.checks.collect import Sample
from worker.checks.engine import evaluate
from worker.checks.spec import Check
from worker.fleet.db import create
from worker.notify import plan as policy
from worker.notify.routing import Routing

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def plan_check(*, for_: str = "0s", no_data: str = "ok", severity: str = "critical", keep: str = "0s") -> Check:
    """The plan's probe: `> 50` on a value the test draws, with for, no_data and keep_firing_for."""
    return Check.model_validate({
        "name": "plan_probe", "description": "a rule for the plan's tests", "schedule": "1m",
        "query": "SELECT 1 AS value", "condition": "> 50", "for": for_, "severity": severity,
        "summary": "value {{ value }}", "no_data": no_data, "keep_firing_for": keep,
    })


def make_routing(*, repeat: str = "1h", send_resolved: bool = True, group_wait: str = "30s",
                 second_route: bool = False, repeat_max: str | None = None, mute: list[str] | None = None,
                 active: list[str] | None = None) -> Routing:
    first = {"match": {"severity": "critical"}, "channels": ["email", "slack", "digest"], "repeat_interval": repeat,
             "send_resolved": send_resolved, "group_wait": group_wait, "continue": second_route,
             "mute_time_intervals": mute or [], "active_time_intervals": active or []}
    if repeat_max:
        first["repeat_interval_max"] = repeat_max
    routes = [first]
    if second_route:  # a catch-all that names email again, with its own repeat interval
        routes.append({"channels": ["email", "pager"], "repeat_interval": "25m", "send_resolved": not send_resolved})
    routes.append({"match": {"severity": "info"}, "channels": ["digest"]})
    return Routing.model_validate({
        "channels": {"email": {"kind": "email"}, "slack": {"kind": "slack"}, "pager": {"kind": "slack"},
                     "digest": {"kind": "digest"}},
        "routes": routes,
        "time_intervals": [
            # 09:20-09:40 UTC every day, and the hours 10-12 on T0's weekday (a Monday) in Berlin (UTC+1)
            {"name": "batch", "time_intervals": [{"times": [{"start_time": "09:20", "end_time": "09:40"}]}]},
            {"name": "office", "time_intervals": [{"times": [{"start_time": "10:00", "end_time": "12:00"}],
                                                   "weekdays": ["monday"], "location": "Europe/Berlin"}]},
        ],
    })


class Told:
    """A Memory for the unit tests: which channels were told, and what held back the latest notice."""

    def __init__(self, told=("email", "slack"), latest=None):
        self._told, self._latest, self.asked = set(told), latest or {}, []

    def latest_suppressed(self, channel):
        self.asked.append(channel)
        return self._latest.get(channel)

    def told(self, channel):
        return channel in self._told


def decide(routing: Routing, before: str, after: str, *, fired_at=T0, now=T0, last=None, acked=False,
           memory=None) -> dict[str, tuple]:
    out = policy.plan(routing, check="plan_probe", severity="critical", labels={"k": "a"}, fingerprint="fp",
                      before=before, after=after, fired_at=fired_at, now=now, last_eval_at=last, acked=acked,
                      memory=memory)
    return {d.channel: (d.reason, d.transition, d.dedup_key) + ((d.muted,) if d.muted else ()) for d in out}


# -- the reasons ---------------------------------------------------------------------------------------
def test_a_first_firing_notifies_every_channel_of_the_route_but_the_digest():
    got = decide(make_routing(), "pending", "firing")
    assert got == {"email": (policy.FIRST, "firing", f"email:fp:firing:{int(T0.timestamp())}:0"),
                   "slack": (policy.FIRST, "firing", f"slack:fp:firing:{int(T0.timestamp())}:0")}


def test_still_firing_inside_the_repeat_interval_is_held_back():
    got = decide(make_routing(repeat="1h"), "firing", "firing", now=T0 + timedelta(minutes=59),
                 last=T0 + timedelta(minutes=58))
    assert {ch: r[0] for ch, r in got.items()} == {"email": policy.WITHIN_REPEAT, "slack": policy.WITHIN_REPEAT}
    assert all(key is None for _, _, key in got.values())


def test_a_repeat_goes_out_at_the_first_evaluation_of_each_window_with_one_key_per_window():
    r = make_routing(repeat="1h")
    at_61 = decide(r, "firing", "firing", now=T0 + timedelta(minutes=61), last=T0 + timedelta(minutes=59))
    at_119 = decide(r, "firing", "firing", now=T0 + timedelta(minutes=119), last=T0 + timedelta(minutes=59))
    at_121 = decide(r, "firing", "firing", now=T0 + timedelta(minutes=121), last=T0 + timedelta(minutes=119))
    assert at_61["email"][:2] == (policy.REPEAT, "repeat")
    assert at_61["email"][2] == at_119["email"][2] != at_121["email"][2]
    assert at_121["email"][2].endswith(":2")
    # the next evaluation inside the same window holds back (the window's notice went out)
    again = decide(r, "firing", "firing", now=T0 + timedelta(minutes=122), last=T0 + timedelta(minutes=121))
    assert again["email"][0] == policy.WITHIN_REPEAT


def test_exponential_repeats_double_their_gap_up_to_the_cap():
    r = make_routing(repeat="1h", repeat_max="8h")
    route = r.routes[0]
    due = [h for h in range(0, 40) if route.repeat_window(timedelta(hours=h)) != route.repeat_window(timedelta(hours=h) - timedelta(seconds=1))]
    assert due == [1, 3, 7, 15, 23, 31, 39]  # gaps 1, 2, 4, 8, then 8 h each
    at_3h = decide(r, "firing", "firing", now=T0 + timedelta(hours=3), last=T0 + timedelta(hours=2, minutes=59))
    at_5h = decide(r, "firing", "firing", now=T0 + timedelta(hours=5), last=T0 + timedelta(hours=4, minutes=59))
    assert at_3h["email"][:2] == (policy.REPEAT, "repeat") and at_3h["email"][2].endswith(":2")
    assert at_5h["email"][0] == policy.WITHIN_REPEAT  # plain repeats would have sent at 4 h and 5 h
    assert make_routing(repeat="1h").routes[0].repeat_window(timedelta(hours=5)) == 5


def test_repeat_interval_max_below_repeat_interval_is_refused():
    with pytest.raises(ValueError, match="repeat_interval_max must be at least repeat_interval"):
        make_routing(repeat="1h", repeat_max="30m")


def test_an_acknowledged_alert_sends_no_repeat_but_still_resolves():
    r = make_routing(repeat="1h")
    got = decide(r, "firing", "firing", now=T0 + timedelta(hours=2), last=T0 + timedelta(minutes=119), acked=True)
    assert {ch: v[0] for ch, v in got.items()} == {"email": policy.ACKNOWLEDGED, "slack": policy.ACKNOWLEDGED}
    assert all(v[2] is None for v in got.values())
    assert decide(r, "firing", "resolved", now=T0 + timedelta(hours=3), acked=True, memory=Told())["email"][0] \
        == policy.RESOLVED


def test_resolved_notifies_only_where_send_resolved_is_on_and_something_was_told():
    assert decide(make_routing(send_resolved=True), "firing", "resolved")["slack"][:2] == (policy.RESOLVED, "resolved")
    off = decide(make_routing(send_resolved=False), "firing", "resolved")
    assert off == {"email": (policy.RESOLVED_OFF, None, None), "slack": (policy.RESOLVED_OFF, None, None)}
    # every firing notice of the episode on slack was held back: there is nothing to resolve there
    got = decide(make_routing(), "firing", "resolved", memory=Told(told=("email",)))
    assert (got["email"][0], got["slack"]) == (policy.RESOLVED, (policy.NEVER_TOLD, None, None))


@pytest.mark.parametrize(("before", "after"), [("inactive", "pending"), ("pending", "inactive"),
                                               ("resolved", "resolved"), ("pending", "resolved")])
def test_transitions_that_are_not_firing_or_a_resolved_firing_send_nothing(before, after):
    assert decide(make_routing(), before, after) == {}


def test_a_suppression_that_is_over_sends_the_held_back_notice_once_with_its_own_key():
    memory = Told(latest={"email": policy.Latest("row-1", "silenced", over=True),
                          "slack": policy.Latest("row-2", "inhibited", over=False)})
    got = decide(make_routing(), "firing", "firing", now=T0 + timedelta(minutes=5), last=T0 + timedelta(minutes=4),
                 memory=memory)
    assert got["email"][:2] == (policy.UNSILENCED, "unsilenced") and got["email"][2].endswith(":0:row-1")
    assert got["slack"][0] == policy.WITHIN_REPEAT  # the inhibiting alert still fires
    assert memory.asked == ["email", "slack"]
    # in a later window too: the repeat goes out when the window begins, the ended silence after it
    got = decide(make_routing(repeat="1h"), "firing", "firing", now=T0 + timedelta(hours=2, minutes=5),
                 last=T0 + timedelta(hours=2, minutes=4), memory=memory)
    assert got["email"][2].endswith(":2:row-1")


def test_a_muted_route_writes_its_notices_held_back_and_tells_once_when_the_mute_ends():
    r = make_routing(mute=["batch"])
    fired = T0 + timedelta(minutes=25)  # 09:25, inside 09:20-09:40
    got = decide(r, "pending", "firing", fired_at=fired, now=fired)
    assert got["email"] == (policy.FIRST, "firing", f"email:fp:firing:{int(fired.timestamp())}:0", "batch")
    # still muted at 09:39: the held-back notice stays held
    muted = Told(told=(), latest={"email": policy.Latest("k1", "muted", over=False)})
    assert decide(r, "firing", "firing", fired_at=fired, now=T0 + timedelta(minutes=39), last=T0 + timedelta(minutes=38),
                  memory=muted)["email"][0] == policy.WITHIN_REPEAT
    # 09:40: the mute is over and it still fires: sent once, now
    got = decide(r, "firing", "firing", fired_at=fired, now=T0 + timedelta(minutes=40), last=T0 + timedelta(minutes=39),
                 memory=muted)
    assert got["email"][:2] == (policy.UNSILENCED, "unsilenced") and len(got["email"]) == 3
    # resolved inside the window with nothing told: nothing to send
    assert decide(r, "firing", "resolved", fired_at=fired, now=T0 + timedelta(minutes=30),
                  memory=Told(told=()))["email"][0] == policy.NEVER_TOLD


def test_active_time_intervals_mute_outside_them_in_their_time_zone():
    r = make_routing(active=["office"])  # 10:00-12:00 Berlin on Mondays = 09:00-11:00 UTC in winter
    assert T0.weekday() == 0
    inside = decide(r, "pending", "firing", fired_at=T0 + timedelta(minutes=30), now=T0 + timedelta(minutes=30))
    outside = decide(r, "pending", "firing", fired_at=T0 + timedelta(hours=2), now=T0 + timedelta(hours=2))
    assert len(inside["email"]) == 3 and outside["email"][3] == "outside office"
    tuesday = T0 + timedelta(days=1, minutes=30)
    assert decide(r, "pending", "firing", fired_at=tuesday, now=tuesday)["email"][3] == "outside office"


def test_every_matching_route_is_planned_and_the_dedup_key_joins_them_per_channel():
    got = policy.plan(make_routing(second_route=True), check="plan_probe", severity="critical", labels={},
                      fingerprint="fp", before="pending", after="firing", fired_at=T0, now=T0)
    assert [(d.channel, d.reason) for d in got] == [("email", policy.FIRST), ("slack", policy.FIRST),
                                                    ("email", policy.FIRST), ("pager", policy.FIRST)]
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
    check = plan_check(for_=draw(st.sampled_from(["0s", "5m", "15m"])),
                       no_data=draw(st.sampled_from(["ok", "alerting", "keep"])),
                       keep=draw(st.sampled_from(["0s", "0s", "20m", "2h"])))
    routing = make_routing(repeat=draw(st.sampled_from(["10m", "1h"])), send_resolved=draw(st.booleans()),
                           group_wait=draw(st.sampled_from(["0s", "30s"])), second_route=draw(st.booleans()),
                           repeat_max=draw(st.sampled_from([None, "2h"])),
                           mute=draw(st.sampled_from([[], [], ["batch"]])),
                           active=draw(st.sampled_from([[], [], ["office"]])))
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
            "SELECT channel, count(*) AS n FROM fleet.notifications WHERE status <> 'suppressed' GROUP BY channel"))}

    result = replay(check, routing, steps, Backtest(check.name, steps[0][0], steps[-1][0], timedelta(minutes=1)))
    assert [(e.at, e.labels, e.from_state, e.to_state) for e in result.events] == live_events
    assert result.notifications == live_sent
    assert result.steps == len(steps)
