"""Cron in a named time zone (`CRON_TZ=Europe/Berlin 30 2 * * *`) across the 2026 DST changes, with a
controlled clock (nothing sleeps): each slot once, none skipped, none doubled; Vixie cron's rule (a
fixed-time job in a spring-forward gap runs once at the gap's end, a time a fall-back repeats once at
its first occurrence; `*` in the minute or hour field: every real matching local time)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.schedules import crontab
from redbeat.decoder import RedBeatJSONDecoder
from redbeat.schedulers import RedBeatSchedulerEntry, ensure_conf, get_redis

from worker.beat import ZONED_TYPE, Entry, Scheduler
from worker.config import load_config
from worker.fleet.cron import zoned_crontab
from worker.fleet.errors import ConfigError
from worker.fleet.names import beat_entry
from worker.fleet.timeutil import Schedule

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
# (zone, local date of the change, "spring" | "autumn"): Berlin 02:00->03:00 and 03:00->02:00, New York
# 02:00->03:00 and 02:00->01:00
CHANGES = [(BERLIN, date(2026, 3, 29), "spring"), (BERLIN, date(2026, 10, 25), "autumn"),
           (NEW_YORK, date(2026, 3, 8), "spring"), (NEW_YORK, date(2026, 11, 1), "autumn")]
IDS = ["berlin-spring", "berlin-autumn", "new_york-spring", "new_york-autumn"]
MIN = timedelta(minutes=1)


def z(zone: ZoneInfo, expr: str) -> Schedule:
    return Schedule.parse(f"CRON_TZ={zone.key} {expr}")


def window(zone: ZoneInfo, day: date) -> tuple[datetime, datetime]:
    """From local midnight the day before the change to local midnight the day after it, in UTC."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone) - timedelta(days=1)
    return start.astimezone(UTC), (start + timedelta(days=3)).astimezone(UTC)


def beat_walk(s: Schedule, t0: datetime, t1: datetime) -> list[datetime]:
    """What a beat sends in [t0, t1): t = next_slot(t) again and again, each strictly later."""
    runs, t = [], t0 - timedelta(microseconds=1)
    while (t := s.next_slot(t)) < t1:
        assert not runs or t > runs[-1], (runs[-1], t)
        runs.append(t)
    return runs


def cross_check(s: Schedule, runs: list[datetime], t0: datetime, t1: datetime) -> None:
    """slot() at every minute of the window: non-decreasing, and the last run walked at or before it."""
    before = s.slot(t0)
    assert before <= t0 and s.next_slot(before) == (runs[0] if runs[0] > t0 else runs[1])
    previous, i, t = before, 0, t0
    while t < t1:
        while i < len(runs) and runs[i] <= t:
            i += 1
        got = s.slot(t)
        assert got >= previous, (t, got, previous)
        assert got == (runs[i - 1] if i else before), t
        previous, t = got, t + MIN


def per_local_day(runs: list[datetime], zone: ZoneInfo) -> Counter:
    return Counter(r.astimezone(zone).date() for r in runs)


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


# -- the daily, hourly and half-hourly job over each change ---------------------------------------------
@pytest.mark.parametrize(("zone", "day", "kind"), CHANGES, ids=IDS)
def test_daily_job_at_fixed_time_runs_once_every_local_day(zone, day, kind):
    s = z(zone, "30 2 * * *")
    t0, t1 = window(zone, day)
    runs = beat_walk(s, t0, t1)
    cross_check(s, runs, t0, t1)
    assert per_local_day(runs, zone) == {day - timedelta(days=1): 1, day: 1, day + timedelta(days=1): 1}
    on_the_day = next(r.astimezone(zone) for r in runs if r.astimezone(zone).date() == day)
    if kind == "spring":  # 02:30 does not exist that day: once, at 03:00 (the first instant after the gap)
        assert (on_the_day.hour, on_the_day.minute) == (3, 0)
    else:
        assert (on_the_day.hour, on_the_day.minute, on_the_day.fold) == (2, 30, 0)


@pytest.mark.parametrize(("zone", "day", "kind", "expected"), [
    (BERLIN, date(2026, 3, 29), "spring", [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]),
    (BERLIN, date(2026, 10, 25), "autumn", [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
    (NEW_YORK, date(2026, 3, 8), "spring", [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]),
    (NEW_YORK, date(2026, 11, 1), "autumn", [utc(2026, 10, 31, 6, 30), utc(2026, 11, 1, 7, 30), utc(2026, 11, 2, 7, 30)]),
], ids=IDS)
def test_daily_job_instants_in_utc(zone, day, kind, expected):
    assert beat_walk(z(zone, "30 2 * * *"), *window(zone, day)) == expected


def test_new_york_repeated_hour_fixed_time_runs_at_its_first_occurrence():
    """New York repeats 01:00-02:00: a 01:30 job runs at 01:30 EDT (05:30Z), not again at 01:30 EST."""
    s = z(NEW_YORK, "30 1 * * *")
    t0, t1 = window(NEW_YORK, date(2026, 11, 1))
    runs = beat_walk(s, t0, t1)
    cross_check(s, runs, t0, t1)
    assert runs == [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


@pytest.mark.parametrize(("zone", "day", "kind"), CHANGES, ids=IDS)
@pytest.mark.parametrize(("expr", "step", "per_day"), [("0 * * * *", 60, 24), ("*/30 * * * *", 30, 48)])
def test_wildcard_jobs_run_at_every_real_local_time(zone, day, kind, expr, step, per_day):
    """23 hourly runs on the spring day, 25 on the autumn day (the repeated hour runs again); in UTC the
    runs stay exactly `step` apart, so none is skipped and none doubled."""
    s = z(zone, expr)
    t0, t1 = window(zone, day)
    runs = beat_walk(s, t0, t1)
    cross_check(s, runs, t0, t1)
    change = -1 if kind == "spring" else 1
    assert per_local_day(runs, zone) == {day - timedelta(days=1): per_day, day: per_day + change * 60 // step,
                                         day + timedelta(days=1): per_day}
    assert {b - a for a, b in zip(runs, runs[1:], strict=False)} == {timedelta(minutes=step)}
    walls = Counter(r.astimezone(zone).replace(tzinfo=None, fold=0) for r in runs)
    assert max(walls.values()) == (2 if kind == "autumn" else 1)


@pytest.mark.parametrize(("expr", "spring", "autumn"), [
    ("0,30 2 * * *", ["03:00"], ["02:00", "02:30"]),           # both gap times: one run at the gap's end
    ("0 2,3 * * *", ["03:00"], ["02:00", "03:00"]),            # 02:00 -> 03:00 is the 03:00 run: once
    ("*/20 2 * * *", [], ["02:00", "02:20", "02:40"] * 2),     # `*` minute: not a fixed-time job
    ("45 1-3 * * *", ["01:45", "03:00", "03:45"], ["01:45", "02:45", "03:45"]),
])
def test_berlin_change_days_by_the_rule(expr, spring, autumn):
    s = z(BERLIN, expr)
    for day, expected in ((date(2026, 3, 29), spring), (date(2026, 10, 25), autumn)):
        t0, t1 = window(BERLIN, day)
        runs = beat_walk(s, t0, t1)
        cross_check(s, runs, t0, t1)
        local = [r.astimezone(BERLIN) for r in runs if r.astimezone(BERLIN).date() == day]
        assert [f"{r:%H:%M}" for r in local] == expected, day
        assert len(set(runs)) == len(runs)


def _reference(zone: ZoneInfo, expr: str, fixed: bool, t0: datetime, t1: datetime) -> list[datetime]:
    """The rule, minute by minute in UTC (an independent reading): a UTC minute runs when its local
    time matches (a fixed-time job: its first occurrence only), or, for a fixed-time job, when it ends a
    gap in which a local minute matches."""
    c = crontab(*expr.split())

    def matches(w: datetime) -> bool:
        return (w.minute in c.minute and w.hour in c.hour and w.day in c.day_of_month
                and w.month in c.month_of_year and w.isoweekday() % 7 in c.day_of_week)

    out, u = [], t0
    while u < t1:
        w, prev = u.astimezone(zone), (u - MIN).astimezone(zone)
        run = matches(w) and not (fixed and w.fold == 1)
        skipped = w.replace(tzinfo=None) - prev.replace(tzinfo=None) - MIN  # local time jumped over
        m = prev.replace(tzinfo=None) + MIN
        while fixed and not run and skipped > timedelta(0) and m < w.replace(tzinfo=None):
            run, m = matches(m), m + MIN
        if run:
            out.append(u)
        u += MIN
    return out


@pytest.mark.parametrize(("zone", "day", "kind"), CHANGES, ids=IDS)
@pytest.mark.parametrize(("expr", "fixed"), [("30 2 * * *", True), ("15 1,2,3 * * *", True), ("0 * * * *", False),
                                              ("*/30 * * * *", False), ("*/7 1-3 * * *", False), ("0,59 0-3 * * *", True)])
def test_slots_agree_with_a_minute_by_minute_reading_of_the_rule(zone, day, kind, expr, fixed):
    s = z(zone, expr)
    assert s.zoned.fixed is fixed
    t0, t1 = window(zone, day)
    assert beat_walk(s, t0, t1) == _reference(zone, expr, fixed, t0, t1)


# -- period, longest_gap, parsing -------------------------------------------------------------------------
def test_period_and_longest_gap_count_the_dst_day():
    daily = z(BERLIN, "30 2 * * *")
    assert daily.period(utc(2026, 10, 26, 1, 30)) == timedelta(hours=25)  # from the autumn day's run
    assert daily.period(utc(2026, 3, 29, 1, 0)) == timedelta(hours=23, minutes=30)  # 02:30 CET -> 03:00 CEST
    assert daily.period(utc(2026, 6, 1, 12)) == timedelta(days=1)
    assert daily.longest_gap() == timedelta(hours=25)
    assert z(BERLIN, "0 * * * *").longest_gap() == timedelta(hours=1)
    assert z(NEW_YORK, "*/30 * * * *").longest_gap() == timedelta(minutes=30)
    assert z(BERLIN, "0 3 1 * *").longest_gap() == timedelta(days=31, hours=1)  # Oct 1 CEST -> Nov 1 CET
    assert z(BERLIN, "0 2 29 2 *").longest_gap() == timedelta(days=400)  # as the UTC path: too rare to say


def test_tz_is_a_synonym_and_naive_now_is_utc():
    a, b = Schedule.parse("TZ=Europe/Berlin 30 2 * * *"), z(BERLIN, "30 2 * * *")
    assert a.zoned == b.zoned and a.next_slot(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    assert a.next_slot(datetime(2026, 3, 28, 12)) == datetime(2026, 3, 29, 1)  # naive in, naive out


@pytest.mark.parametrize("text", ["CRON_TZ=Mars/Olympus 30 2 * * *", "TZ=europe/berlin 30 2 * * *",
                                  "CRON_TZ=../etc/passwd 0 * * * *", "CRON_TZ= 0 * * * *"])
def test_an_unknown_zone_is_one_line_naming_it(text):
    with pytest.raises(ValueError, match="unknown time zone") as e:
        Schedule.parse(text)
    msg = str(e.value)
    assert "\n" not in msg and "use an IANA name like Europe/Berlin" in msg
    assert repr(text.split("=", 1)[1].split(" ", 1)[0]) in msg


def test_an_unknown_zone_in_config_names_file_and_line(tmp_path):
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "bad.yaml").write_text(
        "checks:\n  - name: ok_check\n    description: fine\n    schedule: \"CRON_TZ=Nowhere/City 30 2 * * *\"\n"
        "    query: SELECT 1 AS value\n    condition: \"> 0\"\n    severity: info\n    summary: fine\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path, packs=[])
    assert "bad.yaml:4" in str(e.value) and "unknown time zone 'Nowhere/City'" in str(e.value)


def test_utc_schedules_are_unchanged():
    """Results of the UTC path before zones existed (taken from the old timeutil.py)."""
    now = utc(2026, 3, 29, 1, 7, 13)
    for expr, slot, nxt, period, gap in [
        ("*/15 * * * *", utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 15), timedelta(minutes=15), timedelta(minutes=15)),
        ("0 6 * * 1", utc(2026, 3, 23, 6), utc(2026, 3, 30, 6), timedelta(days=7), timedelta(days=7)),
        ("30 2 * * *", utc(2026, 3, 28, 2, 30), utc(2026, 3, 29, 2, 30), timedelta(days=1), timedelta(days=1)),
        ("0,30 8 * * *", utc(2026, 3, 28, 8, 30), utc(2026, 3, 29, 8), timedelta(minutes=30), timedelta(seconds=84600)),
    ]:
        for text in (expr, f"CRON_TZ=UTC {expr}", f"TZ=Etc/UTC {expr}"):
            s = Schedule.parse(text)
            assert s.zoned is None and type(s.celery_schedule()) is crontab, text
            assert (s.slot(now), s.next_slot(now), s.period(now), s.longest_gap()) == (slot, nxt, period, gap), text
        # the zoned code in a zone that is UTC all year agrees with the UTC path
        g = Schedule.parse(f"CRON_TZ=Africa/Abidjan {expr}")
        assert g.zoned is not None and (g.slot(now), g.next_slot(now), g.period(now), g.longest_gap()) == (
            slot, nxt, period, gap)


# -- beat: celery's is_due / remaining_estimate with a controlled clock, RedBeat's store --------------------
class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def _app(**conf) -> Celery:
    app = Celery("dst_test", set_as_current=False)
    app.conf.update(timezone="UTC", enable_utc=True, **conf)
    return app


@pytest.mark.parametrize(("zone", "day", "kind"), CHANGES, ids=IDS)
@pytest.mark.parametrize("expr", ["30 2 * * *", "0 * * * *", "*/30 * * * *"])
def test_beat_sends_each_slot_once_by_is_due(zone, day, kind, expr):
    """A beat loop on a controlled clock: tick, send if due, sleep what is_due says (at most beat's 300 s),
    each tick 0.25 s late. It sends at exactly the slots next_slot walks."""
    s = z(zone, expr)
    t0, t1 = window(zone, day)
    clock = Clock(t0)
    sched = s.celery_schedule()
    assert isinstance(sched, zoned_crontab)
    sched.nowfun, sched.app = clock, _app()
    sent, last_run_at = [], t0 - timedelta(microseconds=1)
    for _ in range(10_000):
        if clock.t >= t1:
            break
        due, wait = sched.is_due(last_run_at)
        if due:
            sent.append(clock.t)
            last_run_at = clock.t
        assert wait > 0 or due
        clock.t += timedelta(seconds=min(wait, 300) + 0.25)
    assert [t.replace(microsecond=0) for t in sent] == beat_walk(s, t0, t1)


def test_remaining_estimate_across_the_gap_and_the_fold():
    sched = z(BERLIN, "30 2 * * *").celery_schedule()
    clock = Clock(utc(2026, 3, 29, 0, 59, 59))
    sched.nowfun, sched.app = clock, _app()
    assert sched.remaining_estimate(utc(2026, 3, 28, 1, 30)) == timedelta(seconds=1)  # 03:00 CEST = 01:00Z
    assert sched.is_due(utc(2026, 3, 28, 1, 30)) == (False, 1.0)
    clock.t = utc(2026, 3, 29, 1, 0, 0, 200_000)
    due, wait = sched.is_due(utc(2026, 3, 28, 1, 30))
    assert due and wait == pytest.approx(timedelta(hours=23, minutes=30).total_seconds() - 0.2)
    clock.t = utc(2026, 10, 25, 1, 29, 59)  # 02:29:59 CET: the second 02:30 is not a slot
    assert sched.remaining_estimate(utc(2026, 10, 25, 0, 30)) == timedelta(hours=24, seconds=1)
    assert sched.is_due(utc(2026, 10, 25, 0, 30))[0] is False
    sched.app = _app(beat_cron_starting_deadline=60)  # a slot missed by more than the deadline is let go
    clock.t = utc(2026, 10, 26, 1, 32)
    assert sched.is_due(utc(2026, 10, 24, 0, 30))[0] is False
    clock.t = utc(2026, 10, 26, 1, 30, 30)
    assert sched.is_due(utc(2026, 10, 24, 0, 30))[0] is True


def test_a_zoned_cron_round_trips_through_redbeat_in_redis(redis_url):
    """Stored by our Scheduler's own RedBeat path (update_from_dict -> Entry.save), loaded back by
    Entry.from_key (what RedBeat's tick reads), advanced by next(entry): the zset score is the UTC slot."""
    app = _app(redbeat_redis_url=redis_url, redbeat_key_prefix=f"opsfleet-test-dst-{uuid.uuid4().hex[:8]}:")
    scheduler = Scheduler.__new__(Scheduler)  # without setup_schedule (which reads config/)
    scheduler.app, scheduler.max_interval = app, 300
    ensure_conf(app)
    clock = Clock(utc(2026, 3, 28, 1, 30))  # saved as after a run (RedBeat's score: last run + remaining)
    zoned = z(BERLIN, "30 2 * * *").celery_schedule()
    zoned.nowfun = clock
    scheduler.update_from_dict({
        "maintenance:zoned": {**beat_entry("maintenance.run", zoned, {"job": "zoned"}), "last_run_at": utc(2026, 3, 28, 1, 30)},
        "maintenance:plain": beat_entry("maintenance.run", Schedule.parse("30 2 * * *").celery_schedule(), {"job": "plain"}),
    })
    client = get_redis(app)
    key = Entry.generate_key(app, "maintenance:zoned")
    try:
        raw = json.loads(client.hget(key, "definition"))
        assert raw["schedule"] == {"__type__": ZONED_TYPE, "expr": "CRON_TZ=Europe/Berlin 30 2 * * *"}
        assert client.zscore(app.redbeat_conf.schedule_key, key) == utc(2026, 3, 29, 1).timestamp()
        with pytest.raises(AttributeError):  # RedBeat's own entry could not read it back: hence Entry
            RedBeatSchedulerEntry.from_key(key, app=app)
        assert isinstance(json.loads(client.hget(key, "definition"), cls=RedBeatJSONDecoder)["schedule"], dict)

        loaded = Entry.from_key(key, app=app)
        assert isinstance(loaded.schedule, zoned_crontab) and loaded.schedule.expr == zoned.expr
        assert loaded.last_run_at == utc(2026, 3, 28, 1, 30)
        loaded.schedule.nowfun = clock
        assert loaded.schedule == zoned
        clock.t = utc(2026, 3, 29, 0, 30)
        assert loaded.is_due() == (False, 1800.0)
        clock.t = utc(2026, 3, 29, 1, 0, 1)
        assert loaded.is_due()[0] is True
        after = next(loaded)  # what RedBeat does once it sent the task
        assert after.last_run_at == clock.t
        assert client.zscore(app.redbeat_conf.schedule_key, key) == utc(2026, 3, 30, 0, 30).timestamp()
        assert Entry.from_key(key, app=app).last_run_at == clock.t

        plain = Entry.from_key(Entry.generate_key(app, "maintenance:plain"), app=app)
        assert type(plain.schedule) is crontab  # UTC crons stay celery's crontab
    finally:
        for k in client.keys(app.redbeat_conf.key_prefix + "*"):
            client.delete(k)
