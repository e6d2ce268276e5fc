"""Cron in a named time zone: `CRON_TZ=Europe/Berlin 30 2 * * *` (the Kubernetes CronJob / cronie
prefix; `TZ=` is a synonym), and its celery beat schedule.

Slots are UTC instants, strictly increasing, each once. Across a DST change the rule is Vixie cron's
(cron(8)): a job at fixed times (neither the minute nor the hour field starts with `*`) whose local time
falls in a spring-forward gap runs once, at the first instant after the gap; a local time that a
fall-back repeats runs once, at its first occurrence. A job with `*` (or `*/n`) in the minute or hour
field runs at every real matching local time: the repeated hour runs again, the gap adds nothing.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from celery.schedules import BaseSchedule, crontab, schedstate

PREFIXES = ("CRON_TZ=", "TZ=")
UTC_NAMES = frozenset({"UTC", "Etc/UTC"})  # the plain (UTC) path: celery's own crontab
_DAY = timedelta(days=1)
_NEXT_DAYS, _PREV_DAYS = 400, 33  # how far next/previous slots are looked for (as the UTC path)
_NEVER_S = 300.0  # beat's next look at a schedule that has no run left in the horizon
_GAP_FROM, _GAP_DAYS = date(2026, 1, 1), 400  # longest_gap's fixed year, as the UTC path's
_UNSET: Any = object()


def split_zone(text: str) -> tuple[str | None, str]:
    """`"CRON_TZ=Europe/Berlin 30 2 * * *"` -> `("Europe/Berlin", "30 2 * * *")`; no prefix: `(None, text)`."""
    for prefix in PREFIXES:
        if text.startswith(prefix):
            zone, _, rest = text[len(prefix):].partition(" ")
            return zone, rest.strip()
    return None, text


def load_zone(name: str, text: str) -> ZoneInfo:
    """The IANA zone `name` (from schedule `text`), or a one-line ValueError naming it."""
    try:
        if name:
            return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    hint = "" if available_timezones() else " (this machine has no time zone database: install tzdata)"
    raise ValueError(f"{text!r}: unknown time zone {name!r}: use an IANA name like Europe/Berlin{hint}")


def _cron_day(c: crontab, d: date) -> bool:
    return d.day in c.day_of_month and d.month in c.month_of_year and (d.isoweekday() % 7) in c.day_of_week


class ZonedCron:
    """A parsed 5-field cron (`cron`) read in `zone`; `fixed`: Vixie's fixed-time job (see the module)."""

    __slots__ = ("zone", "cron", "fixed", "times", "_key", "_gap")

    def __init__(self, zone: ZoneInfo, cron: crontab, fixed: bool) -> None:
        self.zone, self.cron, self.fixed = zone, cron, fixed
        self.times = tuple(sorted(h * 60 + m for h in cron.hour for m in cron.minute))  # minutes of a day
        self._key = (zone.key, fixed, self.times, frozenset(cron.day_of_month), frozenset(cron.month_of_year),
                     frozenset(cron.day_of_week))
        self._gap: timedelta | None = _UNSET

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZonedCron) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"ZonedCron({self.zone.key}, {self.cron!r}, fixed={self.fixed})"

    # -- one local day --------------------------------------------------------------------------------
    def _regular_offset(self, d: date) -> timedelta | None:
        """The zone's offset on local day `d` if it is one offset all day (no wall time of `d` in a gap
        or a fold: both ends, with either fold, agree), else None."""
        a, b = datetime.combine(d, time(), self.zone), datetime.combine(d + _DAY, time(), self.zone)
        off = a.utcoffset()
        if off == a.replace(fold=1).utcoffset() == b.utcoffset() == b.replace(fold=1).utcoffset():
            return off
        return None

    def _instants(self, wall: datetime) -> tuple[datetime, ...]:
        """The UTC instants local wall time `wall` (naive) runs at, by the DST rule."""
        first = wall.replace(tzinfo=self.zone).astimezone(UTC)
        second = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first == second:
            return (first,)
        if first < second:  # repeated by a fall-back: fold=0 is its first occurrence
            return (first,) if self.fixed else (first, second)
        return (self._transition(second, first),) if self.fixed else ()  # in a spring-forward gap

    def _transition(self, lo: datetime, hi: datetime) -> datetime:
        """The instant the offset changes between `lo` (old offset) and `hi` (new): the end of a gap."""
        before = lo.astimezone(self.zone).utcoffset()
        lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
        while hi_s - lo_s > 1:
            mid = (lo_s + hi_s) // 2
            if datetime.fromtimestamp(mid, self.zone).utcoffset() == before:
                lo_s = mid
            else:
                hi_s = mid
        return datetime.fromtimestamp(hi_s, UTC)

    def day_slots(self, d: date) -> tuple[datetime, ...]:
        """The UTC instants of local day `d`'s runs, ascending (cached: see _day_slots)."""
        return _day_slots(self, d) if _cron_day(self.cron, d) else ()

    def _compute_day(self, d: date) -> tuple[datetime, ...]:
        off = self._regular_offset(d)
        if off is not None:
            base = datetime(d.year, d.month, d.day, tzinfo=UTC) - off
            return tuple(base + timedelta(minutes=m) for m in self.times)
        found = {u for m in self.times for u in self._instants(datetime.combine(d, time(m // 60, m % 60)))}
        return tuple(sorted(found))

    # -- slots ------------------------------------------------------------------------------------------
    def next_after(self, now: datetime) -> datetime | None:
        """The first slot strictly after `now` (aware), in UTC; None if none in ~400 days."""
        now = now.astimezone(UTC)
        try:
            day = now.astimezone(self.zone).date() - _DAY
            best, found_on = None, None
            for _ in range(_NEXT_DAYS):
                if found_on is not None and day > found_on + _DAY:  # later days' runs are later still
                    break
                slots = self.day_slots(day)
                i = bisect_right(slots, now)
                if i < len(slots) and (best is None or slots[i] < best):
                    best, found_on = slots[i], found_on or day
                day += _DAY
            return best
        except OverflowError:  # past year 9999
            return None

    def last_at_or_before(self, now: datetime) -> datetime | None:
        """The latest slot at or before `now` (aware), in UTC; None if none in the last ~33 days."""
        now = now.astimezone(UTC)
        try:
            day = now.astimezone(self.zone).date() + _DAY
            best, found_on = None, None
            for _ in range(_PREV_DAYS):
                if found_on is not None and day < found_on - _DAY:
                    break
                slots = self.day_slots(day)
                i = bisect_right(slots, now) - 1
                if i >= 0 and (best is None or slots[i] > best):
                    best, found_on = slots[i], found_on or day
                day -= _DAY
            return best
        except OverflowError:  # before year 1
            return None

    def longest_gap(self) -> timedelta | None:
        """The longest time between two consecutive runs over the UTC path's 400 local days from
        2026-01-01 (a DST day counts: 23h/25h for a daily job); None with fewer than two run days."""
        if self._gap is not _UNSET:
            return self._gap
        within = max((b - a for a, b in zip(self.times, self.times[1:], strict=False)), default=0)
        spans: list[tuple[datetime, datetime]] = []  # (first, last) run of a regular day
        points: set[datetime] = set()  # every run of a day with a DST change
        run_days = 0
        for i in range(_GAP_DAYS):
            d = _GAP_FROM + timedelta(days=i)
            if not _cron_day(self.cron, d):
                continue
            run_days += 1
            off = self._regular_offset(d)
            if off is None:
                points.update(self._compute_day(d))
                continue
            base = datetime(d.year, d.month, d.day, tzinfo=UTC) - off
            spans.append((base + timedelta(minutes=self.times[0]), base + timedelta(minutes=self.times[-1])))
        if not self.times or run_days < 2:
            self._gap = None
            return None
        runs = sorted(spans + [(p, p) for p in points])
        gap = max([timedelta(minutes=within) if spans else timedelta(0)]
                  + [b[0] - a[1] for a, b in zip(runs, runs[1:], strict=False)])
        self._gap = gap
        return gap


@lru_cache(maxsize=128)
def _day_slots(zc: ZonedCron, d: date) -> tuple[datetime, ...]:
    return zc._compute_day(d)  # noqa: SLF001


def _as_utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


class zoned_crontab(BaseSchedule):  # noqa: N801 (named like celery's crontab)
    """Celery beat schedule for a zoned cron: due at ZonedCron's UTC instants (celery's crontab is due
    at app-timezone wall times, which cannot express the DST rule). `expr` is the schedule text, kept
    so RedBeat can store it (worker.beat)."""

    def __init__(self, expr: str, zoned: ZonedCron, nowfun: Any = None, app: Any = None) -> None:
        super().__init__(nowfun=nowfun, app=app)
        self.expr, self.zoned = expr, zoned

    def _now_utc(self) -> datetime:
        return _as_utc(self.now())

    def remaining_estimate(self, last_run_at: datetime) -> timedelta | None:
        """How long from now until the first slot after `last_run_at` (negative: overdue); None: no
        slot left in the horizon."""
        now = self._now_utc()
        since = max(_as_utc(last_run_at), now - timedelta(days=366))  # RedBeat's "never ran" is year 1
        nxt = self.zoned.next_after(since)
        return None if nxt is None else nxt - now

    def is_due(self, last_run_at: datetime) -> schedstate:
        """`(due, seconds until the next look)`, as celery's crontab.is_due (incl. its
        beat_cron_starting_deadline: a missed slot older than that is not caught up)."""
        rem = self.remaining_estimate(last_run_at)
        if rem is None:
            return schedstate(False, _NEVER_S)
        due = rem.total_seconds() <= 0
        deadline = self.app.conf.beat_cron_starting_deadline
        if due and deadline is not None:
            now = self._now_utc()
            last = self.zoned.last_at_or_before(now)
            due = last is not None and last >= now - timedelta(seconds=deadline)
        if rem.total_seconds() <= 0:
            rem = self.remaining_estimate(self.now())
            if rem is None:
                return schedstate(due, _NEVER_S)
        return schedstate(due, max(rem.total_seconds(), 0))

    def __repr__(self) -> str:
        return f"<zoned_crontab: {self.expr}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, zoned_crontab):
            return other.zoned == self.zoned and super().__eq__(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  (as celery's schedules: mutable, compared by value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.expr, self.zoned))
