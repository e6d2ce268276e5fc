"""Replay a rule over past data: when it would have gone pending, fired and resolved, and how many
notifications that would have sent. The tool for tuning thresholds against alert fatigue.

Nothing is written: each step runs the rule's query with :now set to that instant (READ ONLY) and
feeds the same state machine the engine uses, in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from worker.checking import CheckError, _active, collect, fingerprint, next_state
from worker.config import Check, Routing


@dataclass
class Event:
    at: datetime
    labels: dict[str, str]
    from_state: str
    to_state: str
    value: float | None


@dataclass
class Backtest:
    check: str
    start: datetime
    end: datetime
    step: timedelta
    steps: int = 0
    errors: list[tuple[datetime, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    notifications: dict[str, int] = field(default_factory=dict)  # channel -> count

    @property
    def fired(self) -> int:
        return sum(1 for e in self.events if e.to_state == "firing")

    @property
    def total_notifications(self) -> int:
        return sum(self.notifications.values())


@dataclass
class _Instance:
    state: str = "inactive"
    active_at: datetime | None = None
    fired_at: datetime | None = None
    windows: dict[int, int] = field(default_factory=dict)  # route index -> last repeat window notified


def backtest(check: Check, engine: Engine, routing: Routing | None, *, start: datetime, end: datetime,
             step: timedelta, progress: Callable[[int, int], None] | None = None) -> Backtest:
    if step.total_seconds() <= 0:
        raise ValueError("step must be positive")
    result = Backtest(check.name, start, end, step)
    instances: dict[str, _Instance] = {}
    labels_of: dict[str, dict[str, str]] = {}
    total = int((end - start) / step) + 1
    t = start
    while t <= end:
        result.steps += 1
        try:
            samples = collect(check, engine, t)
        except CheckError as exc:
            result.errors.append((t, str(exc)))
            samples = None
        if samples is not None:
            seen = {fingerprint(check.name, s.labels): s for s in samples}
            # an instance missing from this step's rows is "no data" for it
            for fp in [*instances, *(f for f in seen if f not in instances)]:
                sample = seen.get(fp)
                if sample is not None:
                    labels_of[fp] = sample.labels
                inst = instances.setdefault(fp, _Instance())
                _step(check, routing, result, inst, labels_of.get(fp, {}), sample.value if sample else None, t)
        if progress:
            progress(result.steps, total)
        t += step
    return result


def _step(check: Check, routing: Routing | None, result: Backtest, inst: _Instance, labels: dict[str, str],
          value: float | None, t: datetime) -> None:
    active = _active(check, value)
    new = next_state(inst.state, active, inst.active_at, t, check.for_)
    old = inst.state
    if new == "pending" and old != "pending":
        inst.active_at = t
    if new == "firing" and old != "firing":
        inst.fired_at = t
        inst.windows = {}
        if old in ("inactive", "resolved"):
            inst.active_at = t
    if new != old:
        result.events.append(Event(t, labels, old, new, value))
    inst.state = new
    if routing is None:
        return
    route_labels = {"severity": check.severity, "check": check.name, **labels}
    for i, route in enumerate(routing.route_for(route_labels)):
        channels = [c for c in route.channels if routing.channels[c].kind != "digest"]
        sends = False
        if new == "firing":
            window = int((t - inst.fired_at) / route.repeat_interval)
            sends = inst.windows.get(i) != window
            inst.windows[i] = window
        elif new == "resolved" and old == "firing":
            sends = route.send_resolved
        for c in channels if sends else []:
            result.notifications[c] = result.notifications.get(c, 0) + 1
