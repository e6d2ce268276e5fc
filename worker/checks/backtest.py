"""Replay a rule over past data: when it would have gone pending, fired and resolved, and how many
notifications that would have sent. The tool for tuning thresholds against alert fatigue.

Nothing is written: each step runs the rule's query with :now set to that instant (READ ONLY) and
feeds `replay`, which moves the instances with the engine's own state machine (checks.state.advance)
and asks the outbox's own plan (notify.plan.plan) what each transition sends, keeping the dedup
keys in memory as the outbox's UNIQUE constraint keeps them in the table (and, in `Remembered`, which
notices a route's mute held back, as fleet.notifications does). What a backtest counts is therefore
what production would send for the same values at the same instants, mute time intervals and
keep_firing_for included (without silences, inhibitions and acknowledgements, which belong to the
moment).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from worker.checks.collect import CheckError, Sample, collect
from worker.checks.spec import Check
from worker.checks.state import Instance, advance
from worker.notify.plan import Decision, Latest, plan
from worker.notify.routing import Routing


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


class Remembered:
    """The backtest's Memory for one instance's episode: the notices planned for it, in order."""

    def __init__(self, notices: dict[tuple[str, int, str], list[Decision]], fp: str, fired_at: datetime | None) -> None:
        self.notices, self.fp = notices, fp
        self.episode = int(fired_at.timestamp()) if fired_at else 0

    def _of(self, channel: str) -> list[Decision]:
        return self.notices.get((self.fp, self.episode, channel), [])

    def latest_suppressed(self, channel: str) -> Latest | None:
        firing = [d for d in self._of(channel) if d.transition != "resolved"]
        if firing and firing[-1].muted:
            return Latest(ref=firing[-1].dedup_key or "", reason="muted", over=False)
        return None

    def told(self, channel: str) -> bool:
        return any(d.sends for d in self._of(channel) if d.transition != "resolved")

    def record(self, d: Decision) -> None:
        self.notices.setdefault((self.fp, self.episode, d.channel), []).append(d)


def replay(check: Check, routing: Routing | None, evaluations: Iterable[tuple[datetime, list[Sample] | str]],
           result: Backtest) -> Backtest:
    """Feed (instant, samples) pairs, in order, through the state machine and the outbox's plan; a
    string instead of samples is an error at that instant (recorded; it changes no state)."""
    instances: dict[str, Instance] = {}
    written: set[str] = set()  # the outbox's dedup keys
    notices: dict[tuple[str, int, str], list[Decision]] = {}  # what fleet.notifications would hold
    for t, samples in evaluations:
        result.steps += 1
        if isinstance(samples, str):
            result.errors.append((t, samples))
            continue
        for step in list(advance(check, instances, samples, t)):
            instances[step.fingerprint] = step.after
            if step.changed:
                result.events.append(Event(t, step.labels, step.before.state, step.after.state, step.value))
            if routing is None:
                continue
            memory = Remembered(notices, step.fingerprint, step.after.fired_at)
            for d in plan(routing, check=check.name, severity=check.severity, labels=step.labels,
                          fingerprint=step.fingerprint, before=step.before.state, after=step.after.state,
                          fired_at=step.after.fired_at, now=t, last_eval_at=step.before.evaluated_at,
                          memory=memory):
                if d.notifies and d.dedup_key not in written:
                    written.add(d.dedup_key)
                    memory.record(d)
                    if d.sends:
                        result.notifications[d.channel] = result.notifications.get(d.channel, 0) + 1
    return result


def backtest(check: Check, engine: Engine, routing: Routing | None, *, start: datetime, end: datetime,
             step: timedelta, progress: Callable[[int, int], None] | None = None,
             labels: dict[str, str] | None = None) -> Backtest:
    """Replay `check` on `engine` (a target's database) from `start` to `end`; `labels` (the target's,
    worker.targets.Target.alert_labels) go on every instance as the engine puts them, so the routes,
    mutes and fingerprints are the ones production has on that target."""
    if step.total_seconds() <= 0:
        raise ValueError("step must be positive")
    total = int((end - start) / step) + 1

    def evaluations():
        t = start
        done = 0
        while t <= end:
            try:
                samples = collect(check, engine, t)
                yield t, [Sample({**x.labels, **labels}, x.value, x.reason) for x in samples] if labels else samples
            except CheckError as exc:
                yield t, str(exc)
            done += 1
            if progress:
                progress(done, total)
            t += step

    return replay(check, routing, evaluations(), Backtest(check.name, start, end, step))
