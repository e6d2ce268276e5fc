"""Seed 000's weekly performance review and monthly growth analysis (worker/reports): their figures are
the seed's own queries' on the seeded sample app, their charts are PNGs of the fixed size, the weekly
email reaches Resend (the sink) through the outbox and the real email channel with its charts as inline
attachments, once per week, and `opsfleet report` writes the same report to a file."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
import requests
import sqlalchemy as sa
import structlog.testing
import yaml
from PIL import Image

import tasks.reports
from ops.sample_app import init, seed
from tests.support import REPO
from tests.support.cli import run_cli
from worker.config import load_config
from worker.fleet.db import create
from worker.fleet.errors import ArgumentError, ConfigError
from worker.fleet.settings import Settings
from worker.notify.delivery import deliver
from worker.notify.routing import Routing, beat_entries
from worker.reports import charts, mail, queries, render
from worker.reports.spec import beat_entries as reports_beat

SCALE = 3000
SEEDED_AT = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)  # a Sunday evening: the planted problems are in the week
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # the Monday 08:00 beat: the week of Mon 16 to Sun 22 Nov
WEEK_END = datetime(2026, 11, 23, tzinfo=UTC)

# Seed 000 "Weekly Performance Review", the function's query as written (NOW() as in the seed).
SEED_WEEKLY_AS_WRITTEN = """
  SELECT date_trunc('day', created_at)::DATE as day, COUNT(*) as registrations,
    COUNT(confirmation_number) as confirmations, COUNT(CASE WHEN email_status = 'sent' THEN 1 END) as emails_sent,
    ROUND(AVG(EXTRACT(EPOCH FROM (confirmation_generated_at - updated_at))), 2) as avg_processing_seconds,
    (SELECT COUNT(*) FROM webhook_logs wl
      WHERE wl.created_at::DATE = date_trunc('day', r.created_at)::DATE AND wl.status_code != 200) as error_count,
    ROUND(100.0 * COUNT(confirmation_number) / COUNT(*), 2) as success_rate
  FROM registrations r
  WHERE created_at > NOW() - INTERVAL '7 days' AND status = 'completed'
  GROUP BY date_trunc('day', created_at)
  ORDER BY day DESC"""

# Seed 000 "Capacity Planning / Growth Projections", as written.
SEED_MONTHLY_AS_WRITTEN = """
WITH monthly_stats AS (
  SELECT
    date_trunc('month', created_at) as month,
    COUNT(*) as registrations,
    COUNT(DISTINCT customer_id) as unique_customers,
    SUM(COUNT(*)) OVER (ORDER BY date_trunc('month', created_at)) as cumulative_registrations
  FROM registrations
  WHERE created_at > NOW() - INTERVAL '12 months'
  GROUP BY date_trunc('month', created_at)
)
SELECT
  month,
  registrations,
  unique_customers,
  cumulative_registrations,
  LAG(registrations) OVER (ORDER BY month) as prev_month,
  ROUND(100.0 * (registrations - LAG(registrations) OVER (ORDER BY month)) /
    NULLIF(LAG(registrations) OVER (ORDER BY month), 0), 2) as growth_rate_percent
FROM monthly_stats
ORDER BY month DESC"""


@pytest.fixture(scope="module")
def app(app_db_url):
    engine = create(app_db_url)
    init(engine)
    seed(engine, SCALE, now=SEEDED_AT)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def weekly(app):
    return queries.weekly(app, NOW)


@pytest.fixture(scope="module")
def monthly(app):
    return queries.monthly(app, NOW)


def _utc(conn):
    conn.execute(sa.text("SET TIME ZONE 'UTC'"))  # the seed's date_trunc days are the session's; ours are UTC
    return conn


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# -- figures ---------------------------------------------------------------------------------------

def test_the_seeds_weekly_sql_does_not_run_as_written(app):
    with app.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="ungrouped column"):
        conn.execute(sa.text(SEED_WEEKLY_AS_WRITTEN))


def test_weekly_figures_are_the_seeds_weekly_report_and_direct_counts(app, weekly):
    days = weekly["days"]
    assert [d["day"] for d in days] == [date(2026, 11, 16) + timedelta(days=i) for i in range(7)]
    assert (weekly["first"], weekly["last"]) == ("2026-11-16", "2026-11-22")
    with _utc(app.connect()) as conn:
        # the sample app's weekly_performance_report: the seed's, with the day's webhook errors in their own CTE
        seed_rows = {r.day: r for r in conn.execute(sa.text("SELECT * FROM weekly_performance_report(:p)"),
                                                    {"p": WEEK_END})}
        all_regs = dict(conn.execute(sa.text(
            """SELECT created_at::date, count(*) FROM registrations WHERE created_at >= :s AND created_at < :e
               GROUP BY 1"""), {"s": WEEK_END - timedelta(days=7), "e": WEEK_END}).all())
        times = conn.execute(sa.text(
            """SELECT created_at::date, EXTRACT(EPOCH FROM (confirmation_generated_at - updated_at))
               FROM registrations WHERE status = 'completed' AND confirmation_generated_at IS NOT NULL
                 AND created_at >= :s AND created_at < :e"""), {"s": WEEK_END - timedelta(days=7), "e": WEEK_END}).all()
        hooks = {r.webhook_name: r for r in conn.execute(sa.text(
            """SELECT webhook_name, COUNT(*) AS total_calls, COUNT(CASE WHEN status_code != 200 THEN 1 END) AS errors
               FROM webhook_logs WHERE created_at >= :s AND created_at < :e GROUP BY webhook_name"""),
            {"s": WEEK_END - timedelta(days=7), "e": WEEK_END})}
    assert set(seed_rows) == {d["day"] for d in days}
    for d in days:
        s = seed_rows[d["day"]]
        assert (d["completed"], d["confirmations"], d["emails_sent"], d["error_count"]) == (
            s.registrations, s.confirmations, s.emails_sent, s.error_count), d["day"]
        assert d["avg_seconds"] == pytest.approx(float(s.avg_processing_seconds))
        assert d["success_rate"] == pytest.approx(float(s.success_rate))
        assert d["registrations"] == all_regs[d["day"]]
        secs = [float(t) for day, t in times if day == d["day"]]
        assert [d["p50_seconds"], d["p95_seconds"], d["p99_seconds"]] == pytest.approx(
            list(np.percentile(secs, [50, 95, 99])), rel=1e-9)  # numpy's linear == percentile_cont
    # the planted last hour (Sunday 19:00-20:00): slow confirmations, a failing webhook
    sunday = days[-1]
    assert sunday["error_count"] > 0 and sunday["p99_seconds"] > 6 and sunday["success_rate"] < 100
    assert {h["webhook_name"]: (h["total_calls"], h["errors"]) for h in weekly["webhooks"]} == {
        n: (r.total_calls, r.errors) for n, r in hooks.items()}
    worst = weekly["webhooks"][0]
    assert worst["webhook_name"] == "generate-confirmation"
    assert worst["error_rate_percent"] == round(100 * worst["errors"] / worst["total_calls"], 2)
    t = weekly["totals"]
    assert t["registrations"] == sum(all_regs.values()) and t["error_count"] == sum(s.error_count for s in seed_rows.values())


def test_monthly_figures_are_the_seeds_monthly_growth_analysis(app, monthly):
    assert SEED_MONTHLY_AS_WRITTEN.count("NOW()") == 1
    with _utc(app.connect()) as conn:  # the seed's SQL at the report's moment instead of the clock's
        seed_rows = conn.execute(sa.text(SEED_MONTHLY_AS_WRITTEN.replace("NOW()", "CAST(:now AS timestamptz)")),
                                 {"now": NOW}).all()
    complete = [r for r in reversed(seed_rows) if r.month < datetime(2026, 11, 1, tzinfo=UTC)]  # not November's 23 days
    assert len(complete) >= 3
    assert [(m["month"], m["registrations"], m["unique_customers"], m["cumulative_registrations"], m["prev_month"],
             m["growth_rate_percent"]) for m in monthly["months"]] == [
        (r.month.strftime("%Y-%m"), r.registrations, r.unique_customers, int(r.cumulative_registrations), r.prev_month,
         None if r.growth_rate_percent is None else float(r.growth_rate_percent)) for r in complete]
    assert monthly["month"] == "2026-10" and monthly["latest"]["month"] == "2026-10"
    assert monthly["latest"]["unique_customers"] < monthly["latest"]["registrations"]


def test_report_queries_are_read_only_and_time_limited(app):
    with app.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM maintenance_log")).scalar()
    with pytest.raises(queries.ReportError, match="read-only transaction"):
        queries.run(app, "INSERT INTO maintenance_log (task, completed_at) VALUES ('report', :now) RETURNING id", NOW)
    with pytest.raises(queries.ReportError, match="statement timeout"):
        queries.run(app, "SELECT pg_sleep(3), CAST(:now AS timestamptz)", NOW, timeout_ms=200)
    with app.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM maintenance_log")).scalar() == before


# -- charts and HTML -------------------------------------------------------------------------------

def test_charts_are_pngs_of_the_fixed_size_and_reproducible(weekly, monthly):
    pngs = {**charts.weekly(weekly), **charts.monthly(monthly)}
    assert set(pngs) == {"volume", "processing", "webhooks", "growth"}
    for name, data in pngs.items():
        img = _png(data)
        assert (img.format, img.size) == ("PNG", (charts.WIDTH, charts.HEIGHT)) == ("PNG", (800, 300)), name
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 20, f"{name} is blank"
    assert charts.weekly(weekly) == charts.weekly(weekly)  # same figures, same bytes


def test_report_html_escapes_what_comes_from_the_database(weekly):
    hostile = {**weekly, "webhooks": [{**weekly["webhooks"][0], "webhook_name": '<script>x</script>"&$x$'}]}
    html = render.render(hostile, images="inline")["html"]
    assert "<script>x" not in html and "&lt;script&gt;x&lt;/script&gt;&#34;&amp;$x$" in html
    assert html.count('src="data:image/png;base64,') == 3 and "cid:" not in html


# -- the email -------------------------------------------------------------------------------------

def _settings(sink) -> Settings:
    return Settings(resend_api_key="re_test_key_0123456789", resend_api_url=sink.resend_api_url,
                    alert_email_recipients="ops@example.com", from_email="reports@example.com", from_name="opsfleet")


BASE = {"channels": {"email": {"kind": "email"}}, "routes": [{"match": {}, "channels": ["email"]}]}
ROUTING = Routing.model_validate({**BASE, "digest": {}})


def test_weekly_email_reaches_resend_with_its_charts_inline_once(app, sink):
    with app.begin() as conn:
        conn.execute(sa.text("DELETE FROM fleet.notifications WHERE dedup_key LIKE 'report:%'"))
    nid = mail.enqueue(app, app, "weekly", "email", NOW)
    assert nid is not None
    assert mail.enqueue(app, app, "weekly", "email", NOW + timedelta(minutes=1)) is None  # a doubled beat
    assert mail.enqueue(app, app, "monthly", "email", NOW) is not None
    assert mail.enqueue(app, app, "monthly", "email", NOW) is None
    with app.connect() as conn:
        keys = conn.execute(sa.text("SELECT dedup_key FROM fleet.notifications WHERE dedup_key LIKE 'report:%' "
                                    "ORDER BY 1")).scalars().all()
    assert keys == ["report:monthly:email:2026-10", "report:weekly:email:2026-11-16"]

    assert deliver(nid, fleet=app, settings=_settings(sink), routing=ROUTING, now=NOW).status == "sent"
    assert len(sink.emails) == 1
    email = sink.emails[0]
    assert email["subject"].startswith("[opsfleet] weekly performance 2026-11-16 to 2026-11-22: ")
    assert "Mon 2026-11-16" in email["text"] and "generate-confirmation" in email["text"]
    attachments = email["attachments"]
    assert {a["content_id"] for a in attachments} == {"volume", "processing", "webhooks"}
    assert set(re.findall(r'src="cid:([^"]+)"', email["html"])) == {a["content_id"] for a in attachments}
    for a in attachments:
        assert a["filename"] == f"{a['content_id']}.png" and a["content_type"] == "image/png"
        assert _png(base64.b64decode(a["content"], validate=True)).size == (800, 300)
    assert "data:image" not in email["html"]


def test_the_resend_fake_refuses_attachments_real_resend_would(sink):
    def post(attachments):
        return requests.post(f"{sink.resend_api_url}/emails", timeout=5,
                             headers={"Authorization": "Bearer re_test_key_0123456789"},
                             json={"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "html": "<p>x</p>",
                                   "attachments": attachments})

    png = base64.b64encode(charts.growth([])).decode()
    bad = post([{"filename": "a.png", "content": "iVBORw0K!!!!", "content_id": "a"}])
    assert bad.status_code == 422 and "base64" in bad.json()["message"]
    nameless = post([{"content": png, "content_id": "a"}])
    assert nameless.status_code == 422 and "filename" in nameless.json()["message"]
    assert post([{"filename": "a.png", "content": png, "content_type": "image/png", "content_id": "a"}]).status_code == 200
    assert len(sink.emails) == 1


# -- schedule, tasks, CLI ----------------------------------------------------------------------------

def test_reports_are_scheduled_monday_and_the_first_at_eight_by_default():
    sched = reports_beat(load_config(REPO / "config", packs=[]).reports)
    weekly, monthly = sched["reports:weekly"], sched["reports:monthly"]
    assert (weekly["task"], weekly["options"]) == ("digest.weekly_report", {"queue": "digest"})
    assert (monthly["task"], monthly["options"]) == ("digest.monthly_growth", {"queue": "digest"})
    assert (weekly["schedule"].hour, weekly["schedule"].minute, weekly["schedule"].day_of_week) == ({8}, {0}, {1})
    assert (monthly["schedule"].hour, monthly["schedule"].day_of_month) == ({8}, {1})
    assert not {"digest:weekly_report", "digest:monthly_growth"} & set(beat_entries(ROUTING))  # the reports' own


def _routing_yaml(tmp_path, text: str):
    (tmp_path / "routing.yaml").write_text(yaml.safe_dump(BASE) + text)
    return tmp_path


def test_the_reports_section_sets_their_schedule_and_channel(tmp_path):
    cfg = load_config(_routing_yaml(tmp_path, 'reports: {channel: email, weekly: "0 9 * * 5", monthly: null}\n'),
                      packs=[])
    sched = reports_beat(cfg.reports)
    assert sched["reports:weekly"]["schedule"].day_of_week == {5} and "reports:monthly" not in sched
    assert cfg.reports.channel == "email"
    with pytest.raises(ConfigError, match=r"routing.yaml:\d+: reports.weekly: .*") as err:
        load_config(_routing_yaml(tmp_path, 'reports: {weekly: "0 25 * * *"}\n'), packs=[])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"reports.channel 'pager' is not under `channels:`"):
        load_config(_routing_yaml(tmp_path, "reports: {channel: pager}\n"), packs=[])


def test_the_old_digest_keys_are_read_with_a_deprecation_line(tmp_path):
    text = 'digest:\n  channel: email\n  weekly_schedule: "0 9 * * 5"\n  monthly_schedule: null\n'
    with structlog.testing.capture_logs() as logs:
        cfg = load_config(_routing_yaml(tmp_path, text), packs=[])
    sched = reports_beat(cfg.reports)
    assert sched["reports:weekly"]["schedule"].day_of_week == {5} and "reports:monthly" not in sched
    lines = [entry for entry in logs if entry["event"] == "config_deprecated"]
    assert [entry["where"] for entry in lines] == [f"{tmp_path / 'routing.yaml'}:{n}" for n in (
        text.count("\n", 0, text.index("weekly")) + 1 + len(yaml.safe_dump(BASE).splitlines()),
        text.count("\n", 0, text.index("monthly")) + 1 + len(yaml.safe_dump(BASE).splitlines()))]
    assert "reports.weekly" in lines[0]["message"] and "reports.monthly" in lines[1]["message"]
    # without either, a digest still sends both reports at the defaults, on its channel
    plain = load_config(_routing_yaml(tmp_path, "digest: {channel: email}\n"), packs=[]).reports
    assert (plain.channel, plain.weekly.text, plain.monthly.text) == ("email", "0 8 * * 1", "0 8 1 * *")


def test_report_tasks_take_only_a_known_target():
    for fn in (tasks.reports.weekly_report, tasks.reports.monthly_growth):
        with pytest.raises(ArgumentError, match=r"unknown argument 'channel'.*Accepted arguments: target \("):
            fn(channel="email")
        with pytest.raises(ArgumentError, match=r"target='nowhere' is not known"):
            fn(target="nowhere")


def test_report_cli_writes_the_file_and_refuses_bad_input_in_one_line(env, app, app_db_url, tmp_path):
    e = {**env, "DATABASE_URL": app_db_url}
    out = tmp_path / "x.html"
    proc = run_cli(["report", "weekly", "--out", str(out), "--now", NOW.isoformat()], e)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    html = out.read_text()
    assert html.count('src="data:image/png;base64,') == 3 and "Mon 16 Nov" in html and "cid:" not in html
    for args, needle, rc in ((["report", "weekly", "--now", "yesterday"], "Invalid value for '--now'", 2),
                             (["report", "yearly"], "No such command 'yearly'", 2)):
        proc = run_cli(args, e)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == rc and len(lines) == 1 and needle in lines[0], proc.stderr
    proc = run_cli(["report", "monthly"], {**e, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 3 and len(lines) == 1 and "cannot reach the monitored database" in lines[0], proc.stderr


def test_weekly_report_screenshot(weekly, tmp_path):
    """Rendered in headless Chromium; OPSFLEET_SCREENSHOT=1 keeps it as docs/report-weekly.png."""
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("no /usr/bin/chromium: the screenshot needs Debian's chromium")
    from playwright.sync_api import sync_playwright

    page_file = render.write_file(weekly, tmp_path / "weekly.html")
    shot = tmp_path / "report-weekly.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            page.goto(page_file.as_uri())
            assert page.evaluate("document.documentElement.scrollWidth") <= 900  # nothing wider than the page
            assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth === 800)")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert _png(shot.read_bytes()).size[0] == 900
    if os.environ.get("OPSFLEET_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "docs" / "report-weekly.png")
