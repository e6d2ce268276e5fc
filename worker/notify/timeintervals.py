"""Alertmanager's time intervals, for routes' `mute_time_intervals` and `active_time_intervals`.

    time_intervals:
      - name: nightly_batch
        time_intervals:
          - times: [{start_time: "01:00", end_time: "03:30"}]
            weekdays: ["monday:friday"]
            location: Europe/Berlin

An interval holds at an instant when every field it sets holds (fields left out hold always), read
in its `location` (an IANA zone; default UTC); a named interval holds when any of its entries does.
As in Alertmanager: times are [start, end) in minutes, `24:00` ends a day; weekdays and months take
names or ranges `a:b`; days_of_month take 1..31 or -31..-1 (counted from the month's end); years
take ranges too.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from worker.fleet.fields import Name, Strict

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def _minutes(text: str, field: str) -> int:
    m = _HHMM.match(text)
    if not m or (m.group(1) == "24" and m.group(2) != "00"):
        raise ValueError(f"{field} {text!r} is not a time of day HH:MM (00:00 to 24:00)")
    return int(m.group(1)) * 60 + int(m.group(2))


def _range(text: str | int, names: tuple[str, ...] | None, lo: int, hi: int, what: str) -> tuple[int, int]:
    """'monday:friday', 'march', '1:5', '-1', 2026 -> an inclusive (first, last) pair."""
    def one(part: str) -> int:
        part = part.strip().lower()
        if names and part in names:
            return names.index(part) + 1
        try:
            n = int(part)
        except ValueError:
            hint = f" (one of {', '.join(names)})" if names else ""
            raise ValueError(f"{what} {text!r}: {part!r} is not a {what[:-1]}{hint}") from None
        if not (lo <= n <= hi) or n == 0:
            raise ValueError(f"{what} {text!r}: {n} is out of range {lo}..{hi}")
        return n

    parts = str(text).split(":")
    if len(parts) > 2:
        raise ValueError(f"{what} {text!r}: a range is first:last")
    first, last = one(parts[0]), one(parts[-1])
    if (first > 0) == (last > 0) and first > last:
        raise ValueError(f"{what} {text!r}: the range ends before it starts")
    return first, last


class TimeRange(Strict):
    start_time: str
    end_time: str

    @model_validator(mode="after")
    def _order(self) -> TimeRange:
        if _minutes(self.start_time, "start_time") >= _minutes(self.end_time, "end_time"):
            raise ValueError(f"start_time {self.start_time} must come before end_time {self.end_time} "
                             "(an interval across midnight is two ranges: 22:00-24:00 and 00:00-06:00)")
        return self

    def holds(self, minute: int) -> bool:
        return _minutes(self.start_time, "start_time") <= minute < _minutes(self.end_time, "end_time")


class TimeInterval(Strict):
    times: list[TimeRange] | None = None
    weekdays: list[str] | None = None
    days_of_month: list[str | int] | None = None
    months: list[str | int] | None = None
    years: list[str | int] | None = None
    location: str = "UTC"

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, v):
        for w in v or []:
            _range(w, WEEKDAYS, 1, 7, "weekdays")
        return v

    @field_validator("days_of_month")
    @classmethod
    def _days(cls, v):
        for d in v or []:
            _range(d, None, -31, 31, "days_of_month")
        return v

    @field_validator("months")
    @classmethod
    def _months(cls, v):
        for m in v or []:
            _range(m, MONTHS, 1, 12, "months")
        return v

    @field_validator("years")
    @classmethod
    def _years(cls, v):
        for y in v or []:
            _range(y, None, 1, 9999, "years")
        return v

    @field_validator("location")
    @classmethod
    def _location(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"location {v!r} is not an IANA time zone (e.g. UTC, Europe/Berlin, America/New_York)") from None
        return v

    def holds(self, at: datetime) -> bool:
        t = at.astimezone(ZoneInfo(self.location))
        if self.times is not None and not any(r.holds(t.hour * 60 + t.minute) for r in self.times):
            return False
        if self.weekdays is not None and not any(_in(t.isoweekday(), _range(w, WEEKDAYS, 1, 7, "weekdays"))
                                                 for w in self.weekdays):
            return False
        if self.days_of_month is not None:
            days = calendar.monthrange(t.year, t.month)[1]
            if not any(_in(t.day, _from_end(_range(d, None, -31, 31, "days_of_month"), days))
                       for d in self.days_of_month):
                return False
        if self.months is not None and not any(_in(t.month, _range(m, MONTHS, 1, 12, "months")) for m in self.months):
            return False
        return self.years is None or any(_in(t.year, _range(y, None, 1, 9999, "years")) for y in self.years)


def _in(n: int, bounds: tuple[int, int]) -> bool:
    return bounds[0] <= n <= bounds[1]


def _from_end(bounds: tuple[int, int], days: int) -> tuple[int, int]:
    """-1 is the month's last day (Alertmanager's days_of_month)."""
    return tuple(b if b > 0 else days + 1 + b for b in bounds)  # type: ignore[return-value]


class NamedInterval(Strict):
    name: Name
    time_intervals: list[TimeInterval] = Field(min_length=1)

    def holds(self, at: datetime) -> bool:
        return any(i.holds(at) for i in self.time_intervals)
