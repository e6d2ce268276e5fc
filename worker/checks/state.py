"""The per-instance state machine, pure: no database, no clock of its own.

    inactive -> pending (condition true, `for` not elapsed) -> firing -> resolved (-> pending ...)

A firing instance whose condition stops holding stays firing for the check's `keep_firing_for`
(Prometheus's semantics: counted from the first evaluation that found it false, reset when it holds
again), unless it is acknowledged: an acknowledged alert resolves as soon as its condition is false.

`advance()` is the one place that turns a check's samples into steps: which instances it sees (an
instance still pending or firing that is missing from the rows is "no data" for this run), what
each becomes, and the timestamps kept with it. The engine stores its steps in fleet.alerts; the
backtest keeps them in memory; `opsfleet checks run --dry-run` prints them. None of them re-derives
the rules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from worker.checks.collect import Sample
from worker.checks.spec import Check

ALERTING = ("pending", "firing")


def fingerprint(check_name: str, labels: dict[str, str]) -> str:
    """The instance's identity: its check and labels. `target` is one of them, except the `default`
    target's, so a fleet of one database keeps the fingerprints it had before targets (no re-fire, no
    resolved notice when it upgrades)."""
    items = sorted((k, v) for k, v in labels.items() if not (k == "target" and v == "default"))
    raw = json.dumps([check_name, items], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Instance:
    """One alert instance as the machine needs it (and as fleet.alerts stores it)."""

    state: str = "inactive"
    labels: dict[str, str] = field(default_factory=dict)
    active_at: datetime | None = None  # when the condition became true (pending or firing)
    fired_at: datetime | None = None  # when this episode fired (kept while firing and once resolved)
    keep_firing_since: datetime | None = None  # firing with the condition false since then
    acked_at: datetime | None = None  # this episode was acknowledged (opsfleet alerts ack)
    evaluated_at: datetime | None = None  # the evaluation that left it here
    # what the store keeps beside the machine's fields, as loaded (value, summary, severity, database,
    # target): lets it leave alone a row an evaluation would not change (worker.checks.store.save_steps)
    stored: tuple[Any, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Step:
    """What one evaluation did to one instance."""

    fingerprint: str
    labels: dict[str, str]
    value: float | None
    before: Instance
    after: Instance

    @property
    def changed(self) -> bool:
        return self.before.state != self.after.state


def is_active(check: Check, value: float | None) -> bool | None:
    """Whether the condition holds; for no data, what `no_data` says (None: keep the state)."""
    if value is None:
        return {"ok": False, "alerting": True, "keep": None}[check.no_data]
    return check.condition.holds(value)


# `for` counts as elapsed within this of it. A schedule's runs start its interval apart give or take
# the queue's jitter (tens of ms: a batch sent on the same tick goes first), so a run 1 ms "early"
# found `now - active_at` at 29.99 s of a 30 s `for` and held the alert one more interval: every
# breach of a 30 s check with for 30s took 60 s of `for` (bench/mttd.py, bench/RESULTS.md).
# Prometheus compares its aligned evaluation timestamps; opsfleet's are the fleet's clock at each run.
FOR_GRACE = timedelta(seconds=1)


def next_state(state: str, active: bool | None, active_at: datetime | None, now: datetime,
               for_: timedelta) -> str:
    """active None means 'keep' (no data with no_data=keep)."""
    if active is None:
        return state
    if active:
        if state in ("inactive", "resolved"):
            return "firing" if for_ <= timedelta(0) else "pending"
        if state == "pending":
            return "firing" if active_at is not None and now - active_at >= for_ - FOR_GRACE else "pending"
        return "firing"
    if state == "firing":
        return "resolved"
    if state == "pending":
        return "inactive"
    return state


def advance(check: Check, instances: Mapping[str, Instance], samples: Iterable[Sample],
            now: datetime) -> Iterator[Step]:
    """One evaluation at `now`: a step per instance seen in `samples`, then per known instance that is
    pending or firing and missing from them (no data), in fingerprint order. A new instance that stays
    inactive with no value leaves no trace."""
    seen: dict[str, Sample] = {fingerprint(check.name, s.labels): s for s in samples}
    for fp in sorted(instances):  # (in one order, whatever order the store returned them in)
        inst = instances[fp]
        if fp not in seen and inst.state in ALERTING:
            seen[fp] = Sample(labels=dict(inst.labels), value=None)
    for fp, sample in seen.items():
        before = instances.get(fp)
        if before is None:
            before = Instance(labels=sample.labels)
            known = False
        else:
            known = True
        active = is_active(check, sample.value)
        new = next_state(before.state, active, before.active_at, now, check.for_)
        keep_since = None
        if before.state == "firing" and new == "resolved" and before.acked_at is None and check.keep_firing_for:
            keep_since = before.keep_firing_since or now
            if now - keep_since < check.keep_firing_for:
                new = "firing"  # kept: the condition has been false for less than keep_firing_for
        elif before.state == "firing" and new == "firing" and active is None:
            keep_since = before.keep_firing_since  # no data, kept as it was: so is the keep timer
        active_at, fired_at = before.active_at, before.fired_at
        if new == "pending" and before.state != "pending":
            active_at = now
        if new == "firing" and before.state != "firing":
            fired_at = now
            if before.state in ("inactive", "resolved"):
                active_at = now
        if not known and new == "inactive" and sample.value is None:
            continue
        after = Instance(state=new, labels=sample.labels,
                         active_at=active_at if new in ALERTING else None,
                         fired_at=fired_at if new in ("firing", "resolved") else None,
                         keep_firing_since=keep_since if new == "firing" else None,
                         acked_at=before.acked_at if new == "firing" and before.state == "firing" else None,
                         evaluated_at=now)
        yield Step(fp, sample.labels, sample.value, before, after)
