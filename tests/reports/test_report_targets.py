"""The reports on a fleet of several targets: the scheduled tasks make one report per target whose packs
name the confirmations pack, each from its own database and naming it in the subject and the title,
once per period and target, through a real worker (and the daily digest one seed 000 summary per such
target); `target=` and `opsfleet report --target` pick one, and a target without the pack is refused
in one line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from celery import Celery

from ops.devkit.process import start_worker, wait_until
from tests.support.cli import run_cli
from tests.support.targets_cli import (
    confirmations_database,
    jobs_database,
    registrations,
    target_env,
    write_config,
)
from worker.reports import queries

SEEDED_AT = datetime.now(UTC).replace(microsecond=0)  # the worker's reports are of the week before its clock's day
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a --now for the CLI: the week of Mon 16 to Sun 22 Nov
ROUTING = {"channels": {"email": {"kind": "email"}}, "routes": [{"match": {}, "channels": ["email"]}],
           "reports": {"channel": "email"}}
TARGETS = {"z": "[confirmations]", "x": "[confirmations]", "y": "[postgres, confirmations]", "c": "[app]"}
UNREACHABLE = "postgresql://postgres@127.0.0.1:9/nothing_listens_here"


@pytest.fixture(scope="module")
def urls(fresh_database):
    """x and y: the sample app seeded with 300 and 900 registrations (so their figures differ); c: a
    database of the test app pack only, with no table the reports read; z, first in targets.yaml, a
    confirmations target nothing answers for."""
    return {"z": UNREACHABLE, "x": confirmations_database(fresh_database, 300, SEEDED_AT),
            "y": confirmations_database(fresh_database, 900, SEEDED_AT),
            "c": jobs_database(fresh_database, 0)}


@pytest.fixture
def report_env(env, fleet, urls, sink, tmp_path):
    config = write_config(tmp_path / "config", TARGETS, ROUTING)
    return {**target_env(env, config, urls), "RESEND_API_KEY": "re_test_key_0123456789",
            "RESEND_API_URL": sink.resend_api_url, "ALERT_EMAIL_RECIPIENTS": "ops@example.com"}


def one_line_error(args: list[str], env: dict[str, str]) -> str:
    proc = run_cli(args, env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, (args, proc.stderr)
    return lines[0]


@pytest.mark.slow  # a worker for about 20 s
def test_the_scheduled_reports_are_one_per_target_with_the_confirmations_pack_and_a_dead_one_stops_none(
        report_env, fleet, urls, sink, redis_url, tmp_path):
    worker = start_worker(report_env, tmp_path, queues="digest,notify", name="reports")
    client = Celery(broker=redis_url)
    try:
        client.send_task("digest.weekly_report", queue="digest")  # as the beat sends it: no arguments
        assert wait_until(lambda: len(sink.emails) >= 2, timeout=90), worker.output()[-3000:]
        subjects = sorted(e["subject"] for e in sink.emails)
        assert [s.split(",")[0] for s in subjects] == ["[opsfleet] weekly performance of target x",
                                                       "[opsfleet] weekly performance of target y"], subjects
        day = SEEDED_AT.replace(hour=0, minute=0, second=0)
        for subject, name in zip(subjects, "xy", strict=True):
            n = registrations(urls[name], day - timedelta(days=7), day)  # its own database's week
            assert f": {n:,} registrations" in subject, (subject, n)
        assert subjects[0].split(": ")[1] != subjects[1].split(": ")[1]  # two databases, two sets of figures
        for email in sink.emails:
            name = "x" if "target x" in email["subject"] else "y"
            assert f"Weekly performance review: target {name}</h1>" in email["html"]
            assert f"(target {name})" in email["text"].splitlines()[0]

        client.send_task("digest.weekly_report", queue="digest")  # a doubled beat: nothing new for either
        client.send_task("digest.monthly_growth", kwargs={"target": "c"}, queue="digest")  # c lacks the pack
        client.send_task("digest.monthly_growth", kwargs={"target": "y"}, queue="digest")
        assert wait_until(lambda: "monthly growth of target y" in " ".join(e["subject"] for e in sink.emails)
                          and worker.output().count("report_already_queued") == 2
                          and "does not enable the confirmations pack" in worker.output(), timeout=90), \
            worker.output()[-3000:]
        assert "digest.monthly_growth rejected its arguments, nothing was done: target 'c' does not enable" \
               in worker.output()
        period = queries.week_of(SEEDED_AT)[0].isoformat()
        with fleet.connect() as conn:
            keys = conn.execute(sa.text("SELECT dedup_key FROM fleet.notifications ORDER BY 1")).scalars().all()
        month = queries.month_before(SEEDED_AT)
        assert keys == [f"report:monthly@y:email:{month}", f"report:weekly@x:email:{period}",
                        f"report:weekly@y:email:{period}"]
        assert len(sink.emails) == 3
        failed = [line for line in worker.output().splitlines() if "report_failed" in line]
        assert len(failed) == 2 and all('"target": "z"' in line for line in failed), failed  # z's, twice; not c's

        client.send_task("digest.daily_summary", queue="digest")  # seed 000's daily summary: x's and y's
        assert wait_until(lambda: any("daily digest" in e["subject"] for e in sink.emails), timeout=90), \
            worker.output()[-3000:]
        digest = next(e for e in sink.emails if "daily digest" in e["subject"])
        assert digest["html"].count("<h2>Daily summary: target ") == 2, digest["html"]
        assert "Daily summary: target x" in digest["text"] and "Daily summary: target y" in digest["text"]
        assert "target z" not in digest["text"] and "target c" not in digest["text"]
        assert "digest_summary_failed" in worker.output()  # z's, and the digest went all the same
    finally:
        client.close()
        worker.kill()


def test_report_cli_writes_the_named_targets_report_and_refuses_what_has_no_report(report_env, urls, tmp_path):
    pages = {}
    for name in "xy":
        out = tmp_path / f"{name}.html"
        proc = run_cli(["report", "weekly", "--target", name, "--out", str(out), "--now", NOW.isoformat()], report_env)
        assert proc.returncode == 0 and proc.stdout.strip() == str(out), proc.stderr
        pages[name] = out.read_text()
        assert f"<h1>Weekly performance review: target {name}</h1>" in pages[name]
        assert f"<title>[opsfleet] weekly performance of target {name}, 2026-11-16 to 2026-11-22: " in pages[name]
    assert pages["x"] != pages["y"]
    several = one_line_error(["report", "monthly"], report_env)
    assert "the targets with the confirmations pack (z, x, y): name one with --target" in several, several
    without = one_line_error(["report", "monthly", "--target", "c"], report_env)
    assert "--target 'c': target 'c' does not enable the confirmations pack" in without, without
    assert "(the targets that do: z, x, y)" in without, without
