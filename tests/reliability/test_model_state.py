"""The state machine (worker/checks/state.py) and the repeat rule (worker/notify/plan.py plan()),
model-based: generated sequences of values, NULL values, missing rows, failed runs (no evaluation at
all), acknowledgements and clock steps, against a small reference model written here from the rules
as docs/DESIGN.md and Prometheus state them (for, keep_firing_for, no_data ok/alerting/keep; a first
notice, one repeat per repeat window crossed, exponential windows with repeat_interval_max, none once
acknowledged, resolved only with send_resolved).

plan() is pure given a Routing and a Memory; the Memory here is the backtest's rule (told: a notice of
this episode was sent). Silences and inhibitions are decided at delivery, against fleet.silences and
the alerts table (worker/notify/delivery.py): they need a database and are not modelled here; what
plan() does once a silence is over (`suppression_ended`) is tests/notify/test_notify.py's."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from worker.checks.collect import Sample
from worker.checks.spec import Check
from worker.checks.state import Instance, advance, fingerprint
from worker.notify.plan import plan
from worker.notify.routing import Routing

pytestmark = pytest.mark.reliability
T0 = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
DURATIONS = [0, 30, 60, 120, 300, 600]

event = st.one_of(st.tuples(st.just("value"), st.integers(0, 10)),
                  st.tuples(st.sampled_from(["null", "missing", "error", "ack"]), st.none()))
steps = st.sampled_from([0, 1, 29, 30, 31, 60, 119, 120, 299, 300, 301, 600, 3599, 3600])


@dataclass
class Model:
    """One instance as the rules say it should be."""

    state: str | None = None  # None: never seen (no trace)
    active_at: datetime | None = None
    fired_at: datetime | None = None
    keep_since: datetime | None = None
    acked: bool = False
    last_eval: datetime | None = None
    windows_told: set[int] = field(default_factory=set)
    told: bool = False

    def evaluate(self, obs: str, value: int | None, now: datetime, for_: int, keep: int, no_data: str) -> bool:
        """Returns whether an evaluation step happened for this instance."""
        if obs == "missing" and self.state not in ("pending", "firing"):
            return False
        if value is not None:
            cond = value > 5
        else:
            cond = {"ok": False, "alerting": True, "keep": None}[no_data]
        if self.state is None and value is None and not cond:
            return False
        state = self.state or "inactive"
        if cond is None:
            pass
        elif cond:
            self.keep_since = None
            if state in ("inactive", "resolved"):
                self.active_at, state = now, "pending"
                if for_ == 0:
                    state, self.fired_at, self.windows_told, self.told = "firing", now, set(), False
            elif state == "pending" and now - self.active_at >= timedelta(seconds=for_ - 1):  # within 1 s (config/README)
                state, self.fired_at, self.windows_told, self.told = "firing", now, set(), False
        elif state == "pending":
            state, self.active_at = "inactive", None
        elif state == "firing":
            self.keep_since = self.keep_since or now
            if self.acked or keep == 0 or now - self.keep_since >= timedelta(seconds=keep):
                state, self.keep_since = "resolved", None
        if state != "firing":
            self.acked, self.keep_since = False, None
        if state in ("inactive", "pending"):
            self.fired_at = None
        self.state = state
        return True


def boundaries(r: int, rmax: int | None, upto: float) -> int:
    """How many repeat windows have begun `upto` seconds after firing: every r, or r, 3r, 7r ... capped."""
    n, at, gap = 0, r, r
    while at <= upto:
        n += 1
        gap = gap if rmax is None else min(gap * 2, rmax)
        at += gap
    return n


@settings(derandomize=True, max_examples=1000, deadline=None)
@example(seq=[(0, ("value", 6)), (0, ("value", 0)), (120, ("value", 0))], for_=0, keep=120, no_data="ok", r=60,
         rmax=None, send_resolved=True)  # keep_firing_for ends exactly at its boundary (the `<` vs `<=` mutant)
@given(seq=st.lists(st.tuples(steps, event), min_size=1, max_size=40),
       for_=st.sampled_from(DURATIONS), keep=st.sampled_from(DURATIONS), no_data=st.sampled_from(["ok", "alerting", "keep"]),
       r=st.sampled_from([60, 300, 3600]), rmax=st.sampled_from([None, 1, 4]), send_resolved=st.booleans())
def test_the_state_machine_and_plan_agree_with_a_reference_model(seq, for_, keep, no_data, r, rmax, send_resolved):
    check = Check.model_validate({"name": "m", "description": "d", "schedule": "1m", "query": "SELECT 1 AS value",
                                  "condition": "> 5", "for": f"{for_}s", "keep_firing_for": f"{keep}s",
                                  "no_data": no_data, "severity": "critical", "summary": "s"})
    rmax_s = None if rmax is None else r * rmax
    routing = Routing.model_validate({"channels": {"email": {"kind": "email"}}, "routes": [{
        "channels": ["email"], "repeat_interval": f"{r}s", "group_wait": "0s", "send_resolved": send_resolved,
        **({"repeat_interval_max": f"{rmax_s}s"} if rmax_s else {})}]})
    fp = fingerprint("m", {})
    instances: dict[str, Instance] = {}
    model, now, sent = Model(), T0, []

    class Told:  # the backtest's Memory: was any notice of this episode sent
        def latest_suppressed(self, channel):
            return None

        def told(self, channel):
            return model.told

    for step_s, (obs, value) in seq:
        now += timedelta(seconds=step_s)
        if obs == "error":  # the run failed: nothing is evaluated, the state stays as it was
            continue
        if obs == "ack":
            if instances.get(fp) and instances[fp].state == "firing":
                instances[fp] = replace(instances[fp], acked_at=now)
                model.acked = True
            continue
        samples = [] if obs == "missing" else [Sample(labels={}, value=None if obs == "null" else float(value))]
        before_eval = model.last_eval
        stepped = model.evaluate(obs, value, now, for_, keep, no_data)
        got = list(advance(check, instances, samples, now))
        assert len(got) == int(stepped), (obs, value, model, got)
        if not got:
            continue
        s = got[0]
        model.last_eval = now
        assert s.after.state == model.state, (seq, s)
        assert s.after.fired_at == (model.fired_at if model.state in ("firing", "resolved") else None)
        assert s.after.keep_firing_since == (model.keep_since if model.state == "firing" else None)
        if model.state in ("pending", "firing"):
            assert s.after.active_at is not None and s.after.active_at <= now
        instances[fp] = s.after
        decisions = plan(routing, check="m", severity="critical", labels={}, fingerprint=fp, before=s.before.state,
                         after=s.after.state, fired_at=s.after.fired_at, now=now, last_eval_at=s.before.evaluated_at,
                         acked=s.after.acked_at is not None, memory=Told())
        expected: list[str] = []
        if s.after.state == "firing" and s.before.state != "firing":
            expected = ["firing"]
        elif s.after.state == "firing":
            w = boundaries(r, rmax_s, (now - model.fired_at).total_seconds())
            was = boundaries(r, rmax_s, (before_eval - model.fired_at).total_seconds()) if before_eval else -1
            if w > 0 and w != was and not model.acked:
                expected = [f"repeat:{w}"]
        elif s.after.state == "resolved" and s.before.state == "firing" and send_resolved and model.told:
            expected = ["resolved"]
        keys = [d.dedup_key for d in decisions if d.sends]
        told = [k.split(":")[2] + (f":{k.split(':')[4]}" if k.split(":")[2] == "repeat" else "") for k in keys]
        assert told == expected, (s.before.state, s.after.state, decisions)
        sent += keys
        if any(k.split(":")[2] in ("firing", "repeat") for k in keys):
            model.told = True
    assert len(sent) == len(set(sent)), sent  # no notice planned twice: the dedup key never repeats
