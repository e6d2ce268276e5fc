"""What an alert transition sends, and why: the pure notify policy, Alertmanager's dedup stage.

`plan()` decides whether a transition notifies each channel its routes name, and why: first
notification, a repeat window begun, resolved, a suppression ended, or not (within the repeat window;
send_resolved off; acknowledged; nothing of the episode told). A notice that goes out gets a dedup key
`channel:fingerprint:transition:episode:repeat-window`; the UNIQUE constraint on it makes a second
writer of the same notice (a doubled beat, a redelivered task) a no-op. A route's mute (its
mute_time_intervals, or outside its active_time_intervals) is decided here too: the notice is written
already `suppressed`, and once the mute is over the alert, if still firing, is told once.

This module reads no table: what plan() must know of the notices already written for the episode
comes through a `Memory`. The engine passes `outbox.StoredMemory` (fleet.notifications) and writes
what plan() says through `outbox.write`; the backtest passes an in-memory one and counts the keys,
the same rule, so the two cannot disagree on what would be sent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from worker.notify.routing import Routing

# why a transition notifies a channel, or not (plan's reasons)
FIRST = "first_notification"
REPEAT = "repeat_interval_elapsed"
RESOLVED = "resolved"
UNSILENCED = "suppression_ended"  # a silence, an inhibition or a mute that held back this episode ended
WITHIN_REPEAT = "within_repeat_interval"  # held back: deduplicated
RESOLVED_OFF = "send_resolved_off"
NEVER_TOLD = "never_notified"  # resolved, but no notice of the episode was sent or is on its way: held back or dead
ACKNOWLEDGED = "acknowledged"  # held back: someone acknowledged the alert
ESCALATED = "escalation_step"  # a route's escalate step: fired that long ago and nobody acknowledged it
_TRANSITION = {FIRST: "firing", REPEAT: "repeat", RESOLVED: "resolved", UNSILENCED: "unsilenced",
               ESCALATED: "escalation"}
_FIRING = ("firing", "repeat", "unsilenced", "escalation")


@dataclass(frozen=True)
class Decision:
    """Whether one channel is told of one transition, and why."""

    channel: str
    reason: str
    dedup_key: str | None = None  # None: nothing is written
    due: datetime | None = None  # after the route's group_wait
    muted: str | None = None  # written `suppressed`: the time interval that mutes the route now

    @property
    def notifies(self) -> bool:
        """A row is written (sent later, or held back as muted)."""
        return self.dedup_key is not None

    @property
    def sends(self) -> bool:
        return self.dedup_key is not None and self.muted is None

    @property
    def transition(self) -> str | None:
        return _TRANSITION.get(self.reason)


@dataclass(frozen=True)
class Latest:
    """The latest notice of an episode on a channel, when it was held back."""

    ref: str  # what the key of the notice that replaces it carries (the held-back row's id)
    reason: str  # silenced | inhibited | muted
    over: bool  # for a silence or an inhibition: it no longer holds (a mute: plan() asks the route)


class Memory(Protocol):
    """What plan() needs to know of the notices already written for this episode."""

    def latest_suppressed(self, channel: str) -> Latest | None: ...
    def told(self, channel: str) -> bool: ...


def plan(routing: Routing, *, check: str, severity: str, labels: dict[str, str], fingerprint: str,
         before: str, after: str, fired_at: datetime | None, now: datetime, last_eval_at: datetime | None = None,
         acked: bool = False, memory: Memory | None = None) -> list[Decision]:
    """What a transition from `before` to `after` sends, per channel of every route that matches.

    Only a firing instance and a firing -> resolved transition can notify. A firing instance sends
    its first notice, then one when each repeat window begins (`last_eval_at`, the evaluation before,
    was in an earlier window); between, if the episode's latest notice on a channel was held back (a
    silence or an inhibition that is over now, or a mute that has ended) it is sent once as
    `unsilenced`. An acknowledged alert sends no repeats; a resolved one sends nothing to a channel
    where every notice of the episode was held back (muted, silenced, inhibited) or went dead: only
    those told it fired are told it resolved (Alertmanager's rule)."""
    if fired_at is None or not (after == "firing" or (after == "resolved" and before == "firing")):
        return []
    episode = int(fired_at.timestamp())
    decisions = []
    for route in routing.route_for({"severity": severity, "check": check, **labels}):
        due = now + route.group_wait
        muted = routing.muted_by(route, now)
        for ch in (c for c in route.channels if routing.channels[c].kind != "digest"):
            if after == "resolved":
                if not route.send_resolved:
                    decisions.append(Decision(ch, RESOLVED_OFF))
                elif memory is not None and not memory.told(ch):
                    decisions.append(Decision(ch, NEVER_TOLD))
                else:
                    decisions.append(Decision(ch, RESOLVED, f"{ch}:{fingerprint}:resolved:{episode}:0", due))
                continue
            window = route.repeat_window(now - fired_at)
            if before != "firing":
                d = Decision(ch, FIRST, f"{ch}:{fingerprint}:firing:{episode}:0", due)
            elif window > 0 and (last_eval_at is None or route.repeat_window(last_eval_at - fired_at) != window):
                d = Decision(ch, REPEAT, f"{ch}:{fingerprint}:repeat:{episode}:{window}", due)
            elif (memory is not None and (latest := memory.latest_suppressed(ch)) is not None
                  and (latest.over if latest.reason != "muted" else muted is None)):
                d = Decision(ch, UNSILENCED, f"{ch}:{fingerprint}:unsilenced:{episode}:{window}:{latest.ref}", due)
            else:
                d = Decision(ch, WITHIN_REPEAT)
            if acked and d.reason in (REPEAT, UNSILENCED):
                d = Decision(ch, ACKNOWLEDGED)
            if muted is not None and d.notifies:
                d = replace(d, muted=muted)
            decisions.append(d)
        decisions += _escalation(route, fingerprint, before, after, fired_at, now, last_eval_at, acked, memory, muted,
                                 episode, told_here={*route.channels})
    return decisions


def _escalation(route, fingerprint: str, before: str, after: str, fired_at: datetime, now: datetime,
                last_eval_at: datetime | None, acked: bool, memory: Memory | None, muted: str | None, episode: int,
                told_here: set[str]) -> list[Decision]:
    """A route's escalate steps: each step's channels told once (`...:escalation:<episode>:<step>`) at
    the first evaluation at or after `fired_at + after` while the alert fires unacknowledged (a missed
    evaluation, a restarted worker: the next one takes it; the key makes a second writer a no-op).
    When the alert resolves, an escalation channel that was told is told it resolved."""
    out: list[Decision] = []
    if after == "resolved":
        for ch in dict.fromkeys(c for step in route.escalate for c in step.notify if c not in told_here):
            if route.send_resolved and memory is not None and memory.told(ch):
                out.append(Decision(ch, RESOLVED, f"{ch}:{fingerprint}:resolved:{episode}:0", now))
        return out
    for i, step in enumerate(route.escalate):
        at = fired_at + step.after
        if now < at or (before == "firing" and last_eval_at is not None and last_eval_at >= at):
            continue  # not due yet, or taken at an earlier evaluation
        for ch in step.notify:
            d = Decision(ch, ACKNOWLEDGED) if acked else Decision(ch, ESCALATED, f"{ch}:{fingerprint}:escalation:"
                                                                  f"{episode}:{i}", now, muted)
            out.append(d)
    return out
