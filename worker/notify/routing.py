"""config/routing.yaml: the channels and the routes that pick them by labels (seed 001's severity
table), inhibit rules, time intervals for muting, and the schedules of the daily digest and the weekly
and monthly reports."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, model_validator

from worker.channels.registry import KINDS
from worker.fleet.fields import Duration, ScheduleField, Strict
from worker.fleet.names import beat_entry
from worker.fleet.timeutil import Schedule
from worker.notify.inhibit import InhibitRule
from worker.notify.timeintervals import NamedInterval


class ChannelSpec(Strict):
    kind: Literal[KINDS]  # type: ignore[valid-type]  # the registry's kinds, and `digest`
    # per-channel overrides of the environment (names of settings, never secrets inline)
    recipients: list[str] | None = None
    slack_channel: str | None = None
    # pagerduty: the variable holding this channel's routing key (default PAGERDUTY_ROUTING_KEY)
    routing_key_env: str | None = None
    # webhook: the variable holding the URL (default ALERT_WEBHOOK_URL), and headers from variables
    url_env: str | None = None
    headers_env: dict[str, str] = Field(default_factory=dict)  # header name -> variable holding its value
    # left out (with its place in every route) while this variable is empty: a channel that is only
    # there once configured, e.g. PagerDuty on the critical route
    when_set: str | None = None
    rate_limit: float | None = None  # messages per second for this provider target
    burst: int | None = None
    pack: str | None = None  # the pack this channel belongs to: left out while that pack is not enabled


class EscalationStep(Strict):
    """Who else is told once an alert has fired `after` this long and nobody acknowledged it."""

    after: Duration
    notify: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _positive(self) -> EscalationStep:
        if self.after.total_seconds() <= 0:
            raise ValueError("after must be positive (the route's own channels are told at once)")
        return self


class Route(Strict):
    match: dict[str, str] = Field(default_factory=dict)
    channels: list[str]
    repeat_interval: Duration = timedelta(hours=4)
    send_resolved: bool = True
    group_wait: Duration = timedelta(seconds=30)
    continue_: bool = Field(default=False, alias="continue")
    # opt-in exponential repeats: each repeat waits twice the one before, up to this
    repeat_interval_max: Duration | None = None
    mute_time_intervals: list[str] = Field(default_factory=list)  # names under time_intervals:
    active_time_intervals: list[str] = Field(default_factory=list)  # outside all of them: muted
    # steps taken while the alert fires and nobody acknowledged it, each once per alert episode
    escalate: list[EscalationStep] = Field(default_factory=list)

    @model_validator(mode="after")
    def _repeat(self) -> Route:
        if self.repeat_interval.total_seconds() <= 0:
            raise ValueError("repeat_interval must be positive")
        if self.repeat_interval_max is not None and self.repeat_interval_max < self.repeat_interval:
            raise ValueError("repeat_interval_max must be at least repeat_interval")
        return self

    def repeat_window(self, elapsed: timedelta) -> int:
        """How many repeats are due `elapsed` after an alert fired: every repeat_interval, or with
        repeat_interval_max at r, 3r, 7r, ... (each gap doubling) and then every repeat_interval_max."""
        r = self.repeat_interval
        if self.repeat_interval_max is None:
            return int(elapsed / r)
        n, at, gap = 0, r, r
        while at <= elapsed:
            n += 1
            if gap >= self.repeat_interval_max:
                return n + int((elapsed - at) / gap)
            gap = min(gap * 2, self.repeat_interval_max)
            at += gap
        return n


class Digest(Strict):
    schedule: ScheduleField = Field(default_factory=lambda: Schedule.parse("0 8 * * *"))
    channel: str = "email"
    # deprecated: the reports' schedules, now under `reports:` (worker/reports/spec.py); still read
    # (with a deprecation line) while a routing.yaml has no `reports:` section
    weekly_schedule: ScheduleField | None = None
    monthly_schedule: ScheduleField | None = None


class Routing(Strict):
    channels: dict[str, ChannelSpec]
    routes: list[Route]
    digest: Digest | None = None
    reports: dict[str, Any] | None = None  # worker.reports.spec.Reports, parsed by the config loader
    sweep_interval: Duration = timedelta(seconds=30)
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)
    time_intervals: list[NamedInterval] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_channels(self) -> Routing:
        names = [t.name for t in self.time_intervals]
        if len(set(names)) != len(names):
            raise ValueError(f"time_intervals: {sorted(n for n in names if names.count(n) > 1)[0]!r} is defined twice")
        for i, route in enumerate(self.routes):
            for ch in route.channels:
                if ch not in self.channels:
                    raise ValueError(f"routes[{i}] names channel {ch!r}, which is not under `channels:`")
            for j, step in enumerate(route.escalate):
                for ch in step.notify:
                    if ch not in self.channels:
                        raise ValueError(f"routes[{i}].escalate[{j}].notify names channel {ch!r}, which is not "
                                         "under `channels:`")
            for field in ("mute_time_intervals", "active_time_intervals"):
                for name in getattr(route, field):
                    if name not in names:
                        raise ValueError(f"routes[{i}].{field} names {name!r}, which is not under `time_intervals:`")
        if self.digest is not None and self.digest.channel not in self.channels:
            raise ValueError(f"digest.channel {self.digest.channel!r} is not under `channels:`")
        if self.reports is not None and self.reports.get("channel", "email") not in self.channels:
            raise ValueError(f"reports.channel {self.reports.get('channel', 'email')!r} is not under `channels:`")
        return self

    def muted_by(self, route: Route, at: datetime) -> str | None:
        """The time interval that mutes `route` at `at`: one of its mute_time_intervals that holds, or
        `active_time_intervals` when it has some and none holds. None: not muted."""
        intervals = {t.name: t for t in self.time_intervals}
        for name in route.mute_time_intervals:
            if intervals[name].holds(at):
                return name
        if route.active_time_intervals and not any(intervals[n].holds(at) for n in route.active_time_intervals):
            return "outside " + "/".join(route.active_time_intervals)
        return None

    def route_for(self, labels: dict[str, str]) -> list[Route]:
        out = []
        for route in self.routes:
            if all(labels.get(k) == v for k, v in route.match.items()):
                out.append(route)
                if not route.continue_:
                    break
        return out


def beat_entries(routing: Routing | None) -> dict[str, dict[str, Any]]:
    """The outbox sweeper (re-enqueues what is due or whose lease expired) and the daily digest (the
    reports declare their own: worker.reports.spec)."""
    if routing is None:
        return {}
    sched = {"notify:sweep": beat_entry("notify.sweep", routing.sweep_interval.total_seconds(), expires=60)}
    digest = routing.digest
    if digest is not None:
        sched["digest:daily_summary"] = beat_entry("digest.daily_summary", digest.schedule.celery_schedule())
    return sched
