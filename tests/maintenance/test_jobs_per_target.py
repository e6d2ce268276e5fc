"""Every maintenance job of a pack runs once per target that enables it (config/targets.yaml): one
beat entry per (job, target), each run against its target's database only and recorded under it, a
bad target rejected in one line with nothing written; without targets.yaml, all as before."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

import tasks.maintenance
from tests.support.cli import run_cli
from tests.support.maintenance import add_webhook_logs
from tests.support.targets_jobs import count, pointed_at, write_config
from worker.config import load_config
from worker.fleet import runs
from worker.fleet.db import create
from worker.fleet.errors import ArgumentError
from worker.maintenance.spec import beat_entries, scheduled_jobs

JOB = "purge_old_webhook_logs"
OLD = "SELECT count(*) FROM webhook_logs WHERE created_at < now() - interval '30 days'"


def plant(url: str, old: int, young: int) -> None:
    engine = create(url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE webhook_logs RESTART IDENTITY CASCADE"))
        add_webhook_logs(conn, old, days_old=40)
        add_webhook_logs(conn, young, days_old=1)
    engine.dispose()


def job_runs(fleet) -> list[tuple]:
    with fleet.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT job, target, status, rows_affected FROM fleet.job_runs "
                                                       "ORDER BY id"))]


def test_each_job_is_scheduled_once_per_target_that_enables_its_pack(tmp_path, monkeypatch):
    for var in ("A_URL", "B_URL", "C_URL"):
        monkeypatch.setenv(var, f"postgresql://x/{var.lower()}")
    root = write_config(tmp_path / "config", {"a": ("A_URL", ["app"]), "b": ("B_URL", ["app"]),
                                              "c": ("C_URL", ["plain"])})
    cfg = load_config(root, packs=["fleet"])
    entries = beat_entries(cfg.scheduled_maintenance())
    mine = {n: e for n, e in entries.items() if n.startswith(f"maintenance:{JOB}")}
    assert set(mine) == {f"maintenance:{JOB}@a", f"maintenance:{JOB}@b"}  # c's packs do not name app
    assert mine[f"maintenance:{JOB}@b"]["kwargs"] == {"job": JOB, "target": "b"}
    assert {e["options"]["queue"] for e in entries.values()} == {"maintenance"}  # a target's queue is its checks'
    own = sorted(n for n in entries if n.startswith("maintenance:analyze_everything"))
    assert own == ["maintenance:analyze_everything@a", "maintenance:analyze_everything@b",
                   "maintenance:analyze_everything@c"]  # the config folder's own job: every target
    assert entries["maintenance:fleet_history_retention"]["kwargs"] == {"job": "fleet_history_retention"}  # once
    rows = {(r["job"], r["target"]) for r in scheduled_jobs(cfg.scheduled_maintenance())}
    assert rows == {(JOB, "a"), (JOB, "b"), ("analyze_everything", "a"), ("analyze_everything", "b"),
                    ("analyze_everything", "c"), ("fleet_history_retention", "")}


def test_without_targets_yaml_the_schedule_and_its_record_are_as_before(tmp_path, fleet):
    cfg = load_config(write_config(tmp_path / "config", None), packs=["fleet", "app"])
    entries = beat_entries(cfg.scheduled_maintenance())
    assert entries == beat_entries(cfg.maintenance.values())  # the call of before, entry for entry
    assert entries[f"maintenance:{JOB}"]["kwargs"] == {"job": JOB}
    assert entries[f"maintenance:{JOB}"]["options"] == {"queue": "maintenance"}
    assert not any("@" in n for n in entries)
    with fleet.begin() as conn:
        runs.record_schedule(conn, scheduled_jobs(cfg.scheduled_maintenance()), datetime.now(UTC))
    with fleet.connect() as conn:
        rows = {tuple(r) for r in conn.execute(sa.text("SELECT job, target FROM fleet.job_schedule"))}
    assert rows == {(JOB, ""), ("analyze_everything", ""), ("fleet_history_retention", "")}


def test_flower_shows_the_target_in_a_runs_name():
    name = tasks.maintenance.run.shadow_name
    assert name((), {"job": JOB, "target": "a"}, {}) == f"maintenance.run:{JOB}@a"
    assert name((), {"job": JOB}, {}) == f"maintenance.run:{JOB}"  # as before targets


@pytest.fixture
def on_two(two_targets, fleet, env):
    """The process pointed at a config with targets a, b (the app pack) and c (plain), fleet state on
    fleet_db; webhook_logs in a and b each with 120 rows past retention and 30 within."""
    for url in (two_targets.urls["a"], two_targets.urls["b"]):
        plant(url, 120, 30)
    with pointed_at({**two_targets.env, "DATABASE_URL": env["DATABASE_URL"]}):
        yield two_targets


def test_beat_schedules_and_records_each_job_and_backlog_on_each_of_its_targets(on_two, fleet):
    from worker.beat import build_schedule, record_schedule
    from worker.config import get_config

    cfg = get_config()
    names = set(build_schedule(cfg))
    assert {f"maintenance:{JOB}@a", f"maintenance:{JOB}@b", "backlog:confirmations@a", "backlog:confirmations@b",
            "maintenance:fleet_history_retention"} <= names
    assert not {f"maintenance:{JOB}", f"maintenance:{JOB}@c", "backlog:confirmations@c"} & names
    record_schedule(cfg)
    with fleet.connect() as conn:
        rows = {tuple(r) for r in conn.execute(sa.text("SELECT family, job, target FROM fleet.job_schedule"))}
    assert {("maintenance", JOB, "a"), ("maintenance", JOB, "b"), ("backlog", "reprocess_confirmations", "a"),
            ("backlog", "reprocess_confirmations", "b"), ("maintenance", "fleet_history_retention", "")} <= rows
    assert not {r for r in rows if r[2] == "c" and r[1] != "analyze_everything"}


def test_a_job_runs_on_the_target_it_is_given_and_nowhere_else(on_two, fleet):
    a, b = on_two.urls["a"], on_two.urls["b"]
    out = tasks.maintenance.run(job=JOB, target="a")
    assert (out["status"], out["rows"], out["target"]) == ("ok", 120, "a")
    assert (count(a, OLD), count(b, OLD)) == (0, 120)  # b untouched
    assert count(a, "SELECT count(*) FROM webhook_logs") == 30
    assert job_runs(fleet) == [(JOB, "a", "ok", 120)]
    tasks.maintenance.run(job=JOB, target="b")
    assert count(b, OLD) == 0 and job_runs(fleet)[-1] == (JOB, "b", "ok", 120)


def test_a_run_on_one_target_does_not_hold_up_the_same_job_on_another(on_two, fleet):
    """The job's lock is the job's on its target: a run holding it on a skips a second run on a only."""
    held = runs.start(fleet, family="maintenance", job=JOB, kind="purge", params={}, task_id="holder",
                      exclusive=True, target="a")
    try:
        assert tasks.maintenance.run(job=JOB, target="b")["status"] == "ok"
        assert tasks.maintenance.run(job=JOB, target="a")["status"] == "skipped"
    finally:
        held.finish("ok", rows=0, batches=0)
    assert count(on_two.urls["a"], OLD) == 120 and count(on_two.urls["b"], OLD) == 0


def test_without_targets_yaml_a_run_goes_to_maintenance_database_url_and_is_recorded_as_before(two_targets, fleet,
                                                                                               env, tmp_path):
    plant(two_targets.urls["a"], 50, 5)
    root = write_config(tmp_path / "config", None)
    with pointed_at({"OPSFLEET_CONFIG_DIR": str(root), "OPSFLEET_PACKS": "fleet,app", "FLEET_DATABASE_URL": env["DATABASE_URL"],
                     "DATABASE_URL": two_targets.urls["a"], "MAINTENANCE_DATABASE_URL": two_targets.urls["a"]}):
        out = tasks.maintenance.run(job=JOB)
        assert out == {"job": JOB, "status": "ok", "rows": 50, "batches": 1, "error": None}  # no target in it
        assert tasks.maintenance.run(job=JOB, target="default")["status"] == "ok"  # the implicit target's name
    assert count(two_targets.urls["a"], OLD) == 0
    assert job_runs(fleet) == [(JOB, "", "ok", 50), (JOB, "", "ok", 0)]


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"job": JOB, "target": "nope"}, "target='nope' is not known"),
    ({"job": JOB, "target": "c"}, "maintenance job purge_old_webhook_logs does not run on target 'c' (it runs on: a, b)"),
    ({"job": JOB}, "maintenance job purge_old_webhook_logs runs on 2 targets (a, b): name one with target"),
    ({"job": "fleet_history_retention", "target": "a"}, "does not run on target 'a' (it runs on: the fleet itself"),
])
def test_a_bad_target_is_rejected_in_one_line_and_writes_nothing(on_two, fleet, kwargs, needle):
    with pytest.raises(ArgumentError) as err:
        tasks.maintenance.run(**kwargs)
    text = str(err.value)
    assert text.startswith("maintenance.run rejected its arguments, nothing was done: ") and needle in text, text
    assert "\n" not in text
    assert job_runs(fleet) == []
    assert (count(on_two.urls["a"], OLD), count(on_two.urls["b"], OLD)) == (120, 120)


def test_the_cli_runs_a_job_on_one_target_and_lists_each_job_on_each_target(on_two, fleet, env):
    e = {**env, **on_two.env}
    done = run_cli(["maintenance", "run", JOB, "--target", "b"], e)
    assert done.returncode == 0, done.stderr
    assert f"{JOB} on b: ok, 120 rows" in done.stdout
    assert (count(on_two.urls["a"], OLD), count(on_two.urls["b"], OLD)) == (120, 0)
    for args, needle in ((["--target", "nope"], "--target: no target 'nope' (targets: a, b, c"),
                         ([], "runs on 2 targets (a, b): name one with target")):
        bad = run_cli(["maintenance", "run", JOB, *args], e)
        assert bad.returncode == 2 and needle in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert job_runs(fleet) == [(JOB, "b", "ok", 120)]
    listed = run_cli(["maintenance", "list", "--json"], e)
    assert listed.returncode == 0, listed.stderr
    records = {(r["name"], r["target"]): r for r in json.loads(listed.stdout)}
    assert set(records) == {(JOB, "a"), (JOB, "b"), ("analyze_everything", "a"), ("analyze_everything", "b"),
                            ("analyze_everything", "c"), ("fleet_history_retention", None)}
    assert records[(JOB, "b")]["last_status"] == "ok" and records[(JOB, "a")]["last_status"] is None
    table = run_cli(["maintenance", "list"], e)
    assert table.returncode == 0 and "target" in table.stdout, table.stderr
