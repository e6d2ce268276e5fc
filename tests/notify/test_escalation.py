"""Escalation (a route's `escalate:` steps), the policy: a step's channels are told once, at the first
evaluation at or after `fired_at + after`, while the alert fires and nobody acknowledged it; a missed
evaluation does not skip a step and a repeated one does not double it (the step's dedup key); an
acknowledgement stops the chain; a channel told by a step is told when the alert resolves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.notify.plan import ACKNOWLEDGED, ESCALATED, RESOLVED, plan
from worker.notify.routing import Routing

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
ROUTING = Routing.model_validate({
    "channels": {"slack": {"kind": "slack"}, "pagerduty": {"kind": "pagerduty"}, "cto": {"kind": "email"}},
    "routes": [{"match": {"severity": "critical"}, "channels": ["slack"], "group_wait": "0s",
                "escalate": [{"after": "10m", "notify": ["pagerduty"]}, {"after": "30m", "notify": ["cto"]}]}]})


class Told:
    """plan()'s memory: which channels were told of the episode."""

    def __init__(self, channels=()):
        self.channels = set(channels)

    def latest_suppressed(self, channel):
        return None

    def told(self, channel):
        return channel in self.channels


def escalations(at: datetime, last: datetime | None, acked: bool = False, before: str = "firing"):
    return [d for d in plan(ROUTING, check="c", severity="critical", labels={}, fingerprint="fp", before=before,
                            after="firing", fired_at=T0, now=at, last_eval_at=last, acked=acked, memory=Told())
            if d.reason in (ESCALATED, ACKNOWLEDGED)]


def test_each_step_is_taken_once_at_the_first_evaluation_after_it_is_due():
    taken: list[tuple[int, str, str]] = []
    last = T0
    for minute in range(1, 45):
        at = T0 + minute * MIN
        taken += [(minute, d.channel, d.dedup_key) for d in escalations(at, last)]
        last = at
    episode = int(T0.timestamp())
    assert taken == [(10, "pagerduty", f"pagerduty:fp:escalation:{episode}:0"),
                     (30, "cto", f"cto:fp:escalation:{episode}:1")]


def test_a_missed_evaluation_takes_every_step_that_fell_due_and_a_repeated_one_writes_the_same_key():
    both = escalations(T0 + 35 * MIN, T0 + 9 * MIN)  # the worker was down from minute 9 to 35
    assert [d.channel for d in both] == ["pagerduty", "cto"]
    again = escalations(T0 + 35 * MIN, T0 + 9 * MIN)  # the same evaluation redelivered
    assert [d.dedup_key for d in again] == [d.dedup_key for d in both]
    assert escalations(T0 + 36 * MIN, T0 + 35 * MIN) == []


@pytest.mark.parametrize("minute", [10, 30])
def test_an_acknowledged_alert_escalates_no_further(minute):
    held = escalations(T0 + minute * MIN, T0 + (minute - 1) * MIN, acked=True)
    assert held and all(d.reason == ACKNOWLEDGED and not d.notifies for d in held)


def test_a_step_due_at_the_first_evaluation_is_taken_with_the_first_notice():
    first = escalations(T0 + 12 * MIN, None, before="pending")  # a `for` window longer than the step
    assert [d.channel for d in first] == ["pagerduty"]


def test_a_channel_told_by_a_step_is_told_the_alert_resolved_and_one_not_told_is_not():
    decisions = plan(ROUTING, check="c", severity="critical", labels={}, fingerprint="fp", before="firing",
                     after="resolved", fired_at=T0, now=T0 + 40 * MIN, memory=Told({"slack", "pagerduty"}))
    assert {d.channel for d in decisions if d.reason == RESOLVED} == {"slack", "pagerduty"}


def test_an_escalation_step_naming_an_unknown_channel_or_no_delay_is_refused():
    base = {"channels": {"slack": {"kind": "slack"}}, "routes": [{"channels": ["slack"]}]}
    for step, needle in (({"after": "10m", "notify": ["pager"]}, "escalate\\[0\\].notify names channel 'pager'"),
                         ({"after": "0s", "notify": ["slack"]}, "after must be positive")):
        with pytest.raises(ValueError, match=needle):
            Routing.model_validate({**base, "routes": [{"channels": ["slack"], "escalate": [step]}]})
