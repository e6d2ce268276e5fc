"""Durations ("90s", "5m", "1h30m", "7d") and schedules (cron or interval)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from celery.schedules import crontab

from worker.fleet.cron import PREFIXES, UTC_NAMES, ZonedCron, load_zone, split_zone, zoned_crontab

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str | int | float) -> timedelta:
    try:
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return timedelta(seconds=text)
        s = str(text).strip().replace(" ", "")
        m = _DURATION.match(s)
        if not s or not m or not any(m.groups()):
            raise ValueError(f"{text!r} is not a duration: use forms like 30s, 5m, 1h30m, 7d")
        d, h, mi, se = (int(g or 0) for g in m.groups())
        return timedelta(days=d, hours=h, minutes=mi, seconds=se)
    except OverflowError:  # "99999999999d", 1e300: past timedelta's range (found by tests/reliability)
        raise ValueError(f"{text!r} is too long a duration (at most 999999999 days)") from None


def format_duration(td: timedelta) -> str:
    secs = int(td.total_seconds())
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= size:
            out += f"{secs // size}{unit}"
            secs %= size
    return out or "0s"


_CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


@dataclass(frozen=True)
class Schedule:
    """Either a cron expression (5 fields, UTC, or a zone's local time after `CRON_TZ=<zone> `: then
    `zoned` holds it, see worker.fleet.cron) or a fixed interval."""

    text: str
    interval: timedelta | None = None
    cron: crontab | None = None
    zoned: ZonedCron | None = None

    @classmethod
    def parse(cls, text: str) -> Schedule:
        text = str(text).strip()
        if _DURATION.match(text.replace(" ", "")) and any(c.isdigit() for c in text) and " " not in text:
            td = parse_duration(text)
            if td.total_seconds() < 1:
                raise ValueError(f"schedule interval {text!r} must be at least 1s")
            return cls(text=text, interval=td)
        zone_name, expr = split_zone(text) if text.startswith(PREFIXES) else (None, text)
        zone = load_zone(zone_name, text) if zone_name is not None else None
        fields = expr.split()
        if len(fields) != 5:
            raise ValueError(
                f"{text!r} is neither an interval (30s, 5m, 1h) nor a 5-field cron expression "
                "(minute hour day-of-month month day-of-week)"
            )
        try:
            cron = crontab(**dict(zip(_CRON_FIELDS, fields, strict=True)))
            # crontab parses lazily in places; force every field.
            _ = (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{text!r} is not a valid cron expression: {exc}") from None
        if zone is None or zone.key in UTC_NAMES:
            return cls(text=text, cron=cron)
        fixed = not (fields[0].startswith("*") or fields[1].startswith("*"))  # Vixie's fixed-time job
        return cls(text=text, cron=cron, zoned=ZonedCron(zone, cron, fixed))

    def celery_schedule(self):
        if self.zoned is not None:
            return zoned_crontab(self.text, self.zoned)
        return self.cron if self.cron is not None else self.interval.total_seconds()

    def slot(self, now: datetime) -> datetime:
        """The scheduled instant a run at `now` belongs to (for one-run-per-slot dedup)."""
        if self.interval is not None:
            step = int(self.interval.total_seconds())
            epoch = int(now.timestamp())
            return datetime.fromtimestamp(epoch - epoch % step, tz=now.tzinfo)
        if self.zoned is not None:
            found = self.zoned.last_at_or_before(_aware(now))
            return _like(found, now) if found is not None else now.replace(second=0, microsecond=0)
        # cron: the latest minute <= now that matches
        t = now.replace(second=0, microsecond=0)
        c = self.cron
        for _ in range(60 * 24 * 32):
            if (t.minute in c.minute and t.hour in c.hour and t.day in c.day_of_month
                    and t.month in c.month_of_year and (t.isoweekday() % 7) in c.day_of_week):
                return t
            t -= timedelta(minutes=1)
        return now.replace(second=0, microsecond=0)

    def next_slot(self, now: datetime) -> datetime:
        """The first scheduled instant after `now` (when beat sends the next run)."""
        if self.interval is not None:
            return self.slot(now) + self.interval
        if self.zoned is not None:
            found = self.zoned.next_after(_aware(now))
            fallback = now.replace(second=0, microsecond=0) + timedelta(minutes=1 + 60 * 24 * 400)
            return _like(found, now) if found is not None else fallback
        c, t = self.cron, now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(60 * 24 * 400):
            if (t.minute in c.minute and t.hour in c.hour and t.day in c.day_of_month
                    and t.month in c.month_of_year and (t.isoweekday() % 7) in c.day_of_week):
                return t
            t += timedelta(minutes=1)
        return t

    def period(self, now: datetime) -> timedelta:
        """Time between the slot of `now` and the slot before it (for staleness and backtests)."""
        if self.interval is not None:
            return self.interval
        current = self.slot(now)
        if self.zoned is not None:  # slots need not be whole minutes apart in UTC: the one before
            return current - self.slot(current - timedelta(microseconds=1))
        return current - self.slot(current - timedelta(minutes=1))

    def longest_gap(self) -> timedelta:
        """The longest time between two consecutive runs of the schedule (a year of cron days from a
        fixed date, so the figure does not depend on today): how long a check may rightly not run."""
        if self.interval is not None:
            return self.interval
        if self.zoned is not None:
            gap = self.zoned.longest_gap()
            return gap if gap is not None else timedelta(days=400)
        c = self.cron
        times = sorted(h * 60 + m for h in c.hour for m in c.minute)  # minutes of a matching day
        start = date(2026, 1, 1)
        days = [i for i in range(400) if _cron_day(c, start + timedelta(days=i))]
        if not times or len(days) < 2:
            return timedelta(days=400)
        within = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0)
        across = max((b - a) * 1440 + times[0] - times[-1] for a, b in zip(days, days[1:], strict=False))
        return timedelta(minutes=max(within, across))


def _aware(dt: datetime) -> datetime:
    """A naive `now` is UTC (as everywhere in the fleet)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _like(slot: datetime, now: datetime) -> datetime:
    """A zoned slot (UTC) in `now`'s form: naive if `now` is naive, else UTC-aware (not `now`'s zone:
    two datetimes of one zone compare by wall time, which a fall-back repeats)."""
    return slot.replace(tzinfo=None) if now.tzinfo is None else slot


def _cron_day(c: crontab, d: date) -> bool:
    """Celery's crontab runs on a day that matches day_of_month and month_of_year and day_of_week (0 = Sunday)."""
    return d.day in c.day_of_month and d.month in c.month_of_year and (d.isoweekday() % 7) in c.day_of_week


def human_duration(seconds: float) -> str:
    """45s, 12m 05s, 3h 07m, 2d 04h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"
