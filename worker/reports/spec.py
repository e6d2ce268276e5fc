"""When seed 000's reports go out, and where: the `reports:` section of config/routing.yaml.

    reports:
      channel: email            # a channel under `channels:`
      weekly: "0 8 * * 1"       # the weekly performance review (the 7 days before), null: off
      monthly: "0 8 1 * *"      # the monthly growth analysis (the 12 months before), null: off

The tasks keep their names (digest.weekly_report, digest.monthly_growth: scripts and `celery call`
name them) and their queue (digest, where the workers that draw charts run). Until a routing.yaml
has a `reports:` section, the schedules under `digest:` (weekly_schedule, monthly_schedule) are read
with a deprecation line.

The reports read seed 000's tables, the confirmations pack's: with config/targets.yaml each run makes
one report per target whose packs name that pack, from that target's database and naming it in its
title; without targets.yaml, one report from DATABASE_URL, as before targets."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from worker.fleet.fields import ScheduleField, Strict
from worker.fleet.names import beat_entry
from worker.fleet.timeutil import Schedule

PACK = "confirmations"  # the pack whose tables the reports read
WEEKLY = "0 8 * * 1"
MONTHLY = "0 8 1 * *"


class Reports(Strict):
    channel: str = "email"
    weekly: ScheduleField | None = Field(default_factory=lambda: Schedule.parse(WEEKLY))
    monthly: ScheduleField | None = Field(default_factory=lambda: Schedule.parse(MONTHLY))


def beat_entries(reports: Reports | None) -> dict[str, dict[str, Any]]:
    """The weekly and monthly reports' entries (none while a schedule is null)."""
    if reports is None:
        return {}
    sched = {}
    if reports.weekly is not None:
        sched["reports:weekly"] = beat_entry("digest.weekly_report", reports.weekly.celery_schedule())
    if reports.monthly is not None:
        sched["reports:monthly"] = beat_entry("digest.monthly_growth", reports.monthly.celery_schedule())
    return sched


def report_targets(cfg: Any) -> list[Any]:
    """The targets (worker.targets.Target) of a FleetConfig that get the reports: each target whose
    packs name the confirmations pack; without targets.yaml the one implicit target, whatever its packs."""
    if not cfg.targets_declared:
        return list(cfg.targets.values())
    return [t for t in cfg.targets.values() if PACK in t.packs]


def report_target(cfg: Any, given: str) -> Any:
    """The target `given` names, if it gets the reports; ValueError (one line) when it names no target or
    one without the confirmations pack."""
    if given not in cfg.targets:
        raise ValueError(f"no target {given!r} (targets: {', '.join(cfg.targets)}; `opsfleet targets list`)")
    target = cfg.targets[given]
    if PACK not in target.packs:
        with_pack = ", ".join(t.name for t in cfg.targets.values() if PACK in t.packs) or "none"
        raise ValueError(f"target {given!r} does not enable the {PACK} pack, whose tables the reports read "
                         f"(the targets that do: {with_pack})")
    return target
