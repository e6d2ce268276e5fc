"""A batch's checks (checks.run_batch: what beat sends per target and schedule) against real Postgres:
their queries one after another, their state in one fleet transaction, and a batch the fleet refuses
split into one transaction per check, so one bad check does not cost the others their slot."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from tests.support.checks import make_check
from worker.checks.engine import Run, run_check, run_checks
from worker.fleet.db import create
from worker.fleet.migrate import upgrade
from worker.notify.routing import Routing

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
ROUTING = Routing.model_validate({"channels": {"email": {"kind": "email"}},
                                  "routes": [{"match": {}, "channels": ["email"]}]})


@pytest.fixture
def own(fresh_database):
    """A fleet database of the test's own (it gets a trigger), which is also the monitored one."""
    url = fresh_database()
    upgrade(url)
    engine = create(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE gauge (name text, v numeric)"))
        conn.execute(sa.text("INSERT INTO gauge VALUES ('a', 50), ('b', 50), ('c', 50)"))
    yield engine
    engine.dispose()


def checks(*names: str):
    return [make_check(name=name, query=f"SELECT v AS value FROM gauge WHERE name = '{name[-1]}'",  # noqa: S608
                       **{"for": "0s"})
            for name in names]


def batch(engine, names, *, at=T0):
    runs = [Run(c, at, at, engine) for c in checks(*names)]
    return run_checks(runs, fleet=engine, routing=ROUTING)


def recorded(engine) -> list[tuple[str, str, int]]:
    """(check, status, the transaction that wrote the run's row) of every run."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT check_name, status, xmin::text::bigint FROM fleet.check_runs ORDER BY check_name"))]


def test_a_batch_records_every_check_in_one_fleet_transaction(own):
    outcomes = batch(own, ["check_c", "check_a", "check_b"])
    assert [(o.check, o.status, len(o.transitions), len(o.notification_ids)) for o in outcomes] == \
        [("check_c", "ok", 1, 1), ("check_a", "ok", 1, 1), ("check_b", "ok", 1, 1)]  # in the order given
    runs = recorded(own)
    assert [r[:2] for r in runs] == [("check_a", "ok"), ("check_b", "ok"), ("check_c", "ok")]
    assert len({r[2] for r in runs}) == 1  # one transaction, one commit
    # the same slot again (a redelivered batch): every claim taken, nothing written
    assert [o.status for o in batch(own, ["check_c", "check_a", "check_b"])] == ["skipped"] * 3
    assert len(recorded(own)) == 3


def test_a_check_the_fleet_refuses_costs_the_others_of_its_batch_nothing(own, caplog):
    """A trigger refuses check_b's run row (as a constraint or a full disk would): the batch's
    transaction rolls back whole, then each check goes in its own: a and c recorded, b an `error`
    outcome told in one line, its slot free for a retry."""
    with own.begin() as conn:
        conn.execute(sa.text("""CREATE FUNCTION refuse_b() RETURNS trigger LANGUAGE plpgsql AS $$
                                BEGIN IF NEW.check_name = 'check_b' THEN RAISE EXCEPTION 'no room for check_b'; END IF;
                                RETURN NEW; END $$"""))
        conn.execute(sa.text("CREATE TRIGGER refuse_b BEFORE INSERT ON fleet.check_runs "
                             "FOR EACH ROW EXECUTE FUNCTION refuse_b()"))
    outcomes = batch(own, ["check_a", "check_b", "check_c"])
    assert [o.status for o in outcomes] == ["ok", "error", "ok"]
    assert outcomes[1].error.startswith("not recorded: no room for check_b")
    runs = recorded(own)
    assert [r[:2] for r in runs] == [("check_a", "ok"), ("check_c", "ok")]
    assert runs[0][2] != runs[1][2]  # each in its own transaction, after the split
    with own.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER refuse_b ON fleet.check_runs"))
    assert [o.status for o in batch(own, ["check_a", "check_b", "check_c"])] == ["skipped", "ok", "skipped"]


def test_one_check_alone_still_raises_what_the_fleet_says(own):
    """checks.run's single check: a failure is the task's (one line in the worker), not swallowed."""
    with own.begin() as conn:
        conn.execute(sa.text("ALTER TABLE fleet.check_runs ADD CONSTRAINT no_runs CHECK (false) NOT VALID"))
    with pytest.raises(sa.exc.IntegrityError):
        run_check(checks("check_a")[0], monitored=own, fleet=own, now=T0, routing=ROUTING)
