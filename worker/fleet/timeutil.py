"""Durations ("90s", "5m", "1h30m", "7d") and schedules (cron or interval)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from celery.schedules import crontab

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
    """Either a cron expression (5 fields, UTC) or a fixed interval."""

    text: str
    interval: timedelta | None = None
    cron: crontab | None = None

    @classmethod
    def parse(cls, text: str) -> Schedule:
        text = str(text).strip()
        if _DURATION.match(text.replace(" ", "")) and any(c.isdigit() for c in text) and " " not in text:
            td = parse_duration(text)
            if td.total_seconds() < 1:
                raise ValueError(f"schedule interval {text!r} must be at least 1s")
            return cls(text=text, interval=td)
        fields = text.split()
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
        return cls(text=text, cron=cron)

    def celery_schedule(self):
        return self.cron if self.cron is not None else self.interval.total_seconds()

    def slot(self, now: datetime) -> datetime:
        """The scheduled instant a run at `now` belongs to (for one-run-per-slot dedup)."""
        if self.interval is not None:
            step = int(self.interval.total_seconds())
            epoch = int(now.timestamp())
            return datetime.fromtimestamp(epoch - epoch % step, tz=now.tzinfo)
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
        return current - self.slot(current - timedelta(minutes=1))

    def longest_gap(self) -> timedelta:
        """The longest time between two consecutive runs of the schedule (a year of cron days from a
        fixed date, so the figure does not depend on today): how long a check may rightly not run."""
        if self.interval is not None:
            return self.interval
        c = self.cron
        times = sorted(h * 60 + m for h in c.hour for m in c.minute)  # minutes of a matching day
        start = date(2026, 1, 1)
        days = [i for i in range(400) if _cron_day(c, start + timedelta(days=i))]
        if not times or len(days) < 2:
            return timedelta(days=400)
        within = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0)
        across = max((b - a) * 1440 + times[0] - times[-1] for a, b in zip(days, days[1:], strict=False))
        return timedelta(minutes=max(within, across))


def _cron_day(c: crontab, d: date) -> bool:
    """Celery's crontab runs on a day that matches day_of_month and month_of_year and day_of_week (0 = Sunday)."""
    return d.day in c.day_of_month and d.month in c.month_of_year and (d.isoweekday() % 7) in c.day_of_week
