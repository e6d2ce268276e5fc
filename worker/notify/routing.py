"""config/routing.yaml: the channels and the routes that pick them by labels (seed 001's severity
table), inhibit rules, time intervals for muting, and the schedules of the daily digest and the weekly
and monthly reports."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, model_validator

from worker.fleet.fields import Duration, ScheduleField, Strict
from worker.fleet.names import beat_entry
from worker.fleet.timeutil import Schedule
from worker.notify.inhibit import InhibitRule
from worker.notify.timeintervals import NamedInterval


class ChannelSpec(Strict):
    kind: Literal["email", "slack", "table", "digest", "pagerduty", "webhook"]
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
    # seed 000's weekly performance review and monthly growth analysis (worker/reports), on `channel`;
    # null turns one off
    weekly_schedule: ScheduleField | None = Field(default_factory=lambda: Schedule.parse("0 8 * * 1"))
    monthly_schedule: ScheduleField | None = Field(default_factory=lambda: Schedule.parse("0 8 1 * *"))


class Routing(Strict):
    channels: dict[str, ChannelSpec]
    routes: list[Route]
    digest: Digest | None = None
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
            for field in ("mute_time_intervals", "active_time_intervals"):
                for name in getattr(route, field):
                    if name not in names:
                        raise ValueError(f"routes[{i}].{field} names {name!r}, which is not under `time_intervals:`")
        if self.digest is not None and self.digest.channel not in self.channels:
            raise ValueError(f"digest.channel {self.digest.channel!r} is not under `channels:`")
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
    """The outbox sweeper (re-enqueues what is due or whose lease expired), the daily digest and the
    weekly and monthly reports."""
    if routing is None:
        return {}
    sched = {"notify:sweep": beat_entry("notify.sweep", routing.sweep_interval.total_seconds(), expires=60)}
    digest = routing.digest
    if digest is not None:
        sched["digest:daily_summary"] = beat_entry("digest.daily_summary", digest.schedule.celery_schedule())
        if digest.weekly_schedule is not None:
            sched["digest:weekly_report"] = beat_entry("digest.weekly_report", digest.weekly_schedule.celery_schedule())
        if digest.monthly_schedule is not None:
            sched["digest:monthly_growth"] = beat_entry("digest.monthly_growth",
                                                        digest.monthly_schedule.celery_schedule())
    return sched
