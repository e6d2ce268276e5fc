"""config/routing.yaml: the channels and the routes that pick them by labels (seed 001's severity
table), and the daily digest's schedule."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, model_validator

from worker.fleet.fields import Duration, ScheduleField, Strict
from worker.fleet.names import beat_entry
from worker.fleet.timeutil import Schedule


class ChannelSpec(Strict):
    kind: Literal["email", "slack", "table", "digest"]
    # per-channel overrides of the environment (names of settings, never secrets inline)
    recipients: list[str] | None = None
    slack_channel: str | None = None
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


class Digest(Strict):
    schedule: ScheduleField = Field(default_factory=lambda: Schedule.parse("0 8 * * *"))
    channel: str = "email"


class Routing(Strict):
    channels: dict[str, ChannelSpec]
    routes: list[Route]
    digest: Digest | None = None
    sweep_interval: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _known_channels(self) -> Routing:
        for i, route in enumerate(self.routes):
            for ch in route.channels:
                if ch not in self.channels:
                    raise ValueError(f"routes[{i}] names channel {ch!r}, which is not under `channels:`")
        if self.digest is not None and self.digest.channel not in self.channels:
            raise ValueError(f"digest.channel {self.digest.channel!r} is not under `channels:`")
        return self

    def route_for(self, labels: dict[str, str]) -> list[Route]:
        out = []
        for route in self.routes:
            if all(labels.get(k) == v for k, v in route.match.items()):
                out.append(route)
                if not route.continue_:
                    break
        return out


def beat_entries(routing: Routing | None) -> dict[str, dict[str, Any]]:
    """The outbox sweeper (re-enqueues what is due or whose lease expired) and the daily digest."""
    if routing is None:
        return {}
    sched = {"notify:sweep": beat_entry("notify.sweep", routing.sweep_interval.total_seconds(), expires=60)}
    if routing.digest is not None:
        sched["digest:daily_summary"] = beat_entry("digest.daily_summary", routing.digest.schedule.celery_schedule())
    return sched
