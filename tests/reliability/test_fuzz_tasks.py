"""Task arguments nobody planned (hypothesis): generated kwargs for every task in tasks/*.py, called as
`celery call` would (the task object itself, through worker.app.task's argument check), are either
rejected with an ArgumentError naming the argument, having written nothing (every fleet table counted
before and after), or, for a value the task does accept, run harmlessly. Never another exception.

Failing examples this found (fixed in tasks/notify.py): notify.deliver(notification_id=
12345678901234567890123456789012) (an int whose digits make a UUID) and notification_id=
"urn:uuid:..." passed the UUID check and reached Postgres as they were; a non-text `channel` too;
notify.sweep(limit=2**63) reached LIMIT. And backlog older_than="99999999999d" (OverflowError, fixed in
worker/fleet/timeutil.py)."""

from __future__ import annotations

import importlib
import os
import uuid
from datetime import datetime

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tasks.notify
from worker.app import app
from worker.config import get_config
from worker.fleet import db
from worker.fleet.errors import ArgumentError
from worker.fleet.migrate import upgrade
from worker.fleet.names import KNOWN_TASKS, TASK_MODULES
from worker.fleet.settings import reload_settings

pytestmark = pytest.mark.reliability
TABLES = ("check_runs", "alerts", "alert_events", "notifications", "silences", "held_back", "job_runs")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 80), 2 ** 80) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
uuidish = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: "{" + str(u) + "}"), st.uuids().map(lambda u: u.hex),
                    st.uuids().map(lambda u: f"urn:uuid:{u}"), st.uuids().map(lambda u: u.int),
                    st.uuids().map(lambda u: "-".join(u.hex[i:i + 2] for i in range(0, 32, 2))))
names = st.from_regex(r"\A[a-z_]{1,12}\Z") | st.text(max_size=10)


@pytest.fixture(scope="module")
def fleet(fresh_database, redis_url):
    """A fleet database of this module's own (no other test's outbox rows to pick up), as DATABASE_URL."""
    url = fresh_database()
    upgrade(url)
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "REDIS_URL")}
    os.environ.update(DATABASE_URL=url, REDIS_URL=redis_url)
    reload_settings()
    db.fleet_engine.cache_clear()
    db.hot_fleet_engine.cache_clear()
    db.monitored_engine.cache_clear()
    tasks.notify._redis.cache_clear()
    engine = db.create(url)
    yield engine
    engine.dispose()
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    reload_settings()
    db.fleet_engine.cache_clear()
    db.hot_fleet_engine.cache_clear()
    db.monitored_engine.cache_clear()
    tasks.notify._redis.cache_clear()


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM fleet.{t}")).scalar() for t in TABLES}  # noqa: S608


def iso_instant(v) -> bool:
    try:
        return isinstance(v, str) and datetime.fromisoformat(v).tzinfo is not None
    except ValueError:
        return False


def registered() -> dict:
    """Every task of tasks/*.py as the app registered it (a new task is fuzzed without a change here)."""
    for module in TASK_MODULES:
        importlib.import_module(module)
    return {name: app.tasks[name] for name in KNOWN_TASKS if name in app.tasks}


@st.composite
def bad_call(draw):
    """(task, kwargs, what the message must name): one thing wrong, the rest possibly right."""
    cfg = get_config()
    check = sorted(cfg.checks)[0]
    job = sorted(cfg.maintenance)[0]
    name = draw(st.sampled_from(sorted(registered())))
    fn = registered()[name]
    valid = {"checks.run": {"name": check}, "maintenance.run": {"job": job},
             "notify.deliver": {"notification_id": str(uuid.uuid4())}}.get(name, {})
    fields = {"checks.run": ["name", "at", "slot"], "maintenance.run": ["job"], "notify.sweep": ["limit"],
              "backlog.reprocess_confirmations": ["limit", "batch_size", "dry_run", "older_than", "stale_after"],
              "backlog.resend_failed_emails": ["limit", "batch_size", "dry_run", "max_attempts"]}.get(name, [])
    how = draw(st.sampled_from(["unknown", "missing", "value"] if valid else ["unknown", "value"]))
    kwargs = dict(valid)
    if how == "unknown" or name.startswith("backlog.") or not fields:
        key = draw(names.filter(lambda k: k not in fields and k not in valid))
        kwargs[key] = draw(json_values)
        for f in draw(st.lists(st.sampled_from(fields), max_size=2)) if fields else []:
            kwargs[f] = draw(json_values | st.sampled_from(["99999999999d", "10m", 0, 5000, 2 ** 63]))
        return fn, kwargs, [f"unknown argument {key!r}"]
    if how == "missing":
        kwargs.pop(next(iter(valid)))
        return fn, kwargs, [f"missing argument {next(iter(valid))!r}"]
    field = draw(st.sampled_from(fields))
    if field == "name":
        kwargs[field] = draw(json_values.filter(lambda v: not (isinstance(v, str) and v in cfg.checks)))
    elif field == "job":
        kwargs[field] = draw(json_values.filter(lambda v: not (isinstance(v, str) and v in cfg.maintenance)))
    elif field in ("at", "slot"):
        kwargs[field] = draw(json_values.filter(lambda v: v is not None and not iso_instant(v))
                             | st.sampled_from(["2026-11-23T10:00:00", "yesterday", "2026-13-01T00:00:00+00:00"]))
    else:  # notify.sweep's limit: a whole number from 1 to 100000
        kwargs[field] = draw(json_values.filter(lambda v: not (type(v) is int and 1 <= v <= 100_000))
                             | st.sampled_from([0, -1, 2 ** 63, True, "5"]))
    return fn, kwargs, [f"{field}="]


FUZZ = settings(derandomize=True, max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@FUZZ
@given(call=bad_call())
def test_generated_bad_kwargs_are_rejected_naming_the_argument_and_nothing_is_written(fleet, call):
    fn, kwargs, needles = call
    before = counts(fleet)
    with pytest.raises(ArgumentError) as err:
        fn(**kwargs)
    text = str(err.value)
    assert text.startswith(f"{fn.name} rejected its arguments, nothing was done: "), text
    assert all(n in text for n in needles), (needles, text)
    assert counts(fleet) == before


@FUZZ
@given(notification_id=st.one_of(uuidish, json_values), channel=st.one_of(st.none(), names, json_values))
def test_notify_deliver_takes_any_uuid_form_or_refuses_and_writes_nothing(fleet, notification_id, channel):
    """An id that is a UUID in any form Python reads (braces, no hyphens, urn:) and a channel hint of
    text reach the outbox as canonical text and find nothing to send; anything else is refused."""
    before = counts(fleet)
    try:
        out = tasks.notify.deliver(notification_id=notification_id, channel=channel)
    except ArgumentError as err:
        assert "notification_id=" in str(err) or "channel=" in str(err), str(err)
    else:
        assert isinstance(notification_id, str) and uuid.UUID(notification_id)
        assert channel is None or isinstance(channel, str)
        assert out["status"] == "skipped"
    assert counts(fleet) == before
