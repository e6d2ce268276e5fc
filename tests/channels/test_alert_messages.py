"""The messages people read: each alert of a message a row (check, severity, value against its
condition, labels, since, runbook, the status page's links), worst first, no internal field; a
resolved notice says how long it fired. Through the real engine, outbox, delivery and channels."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support import REPO
from tests.support.notify import settings_for
from worker.checks.engine import run_check
from worker.checks.spec import Check
from worker.notify.delivery import deliver
from worker.notify.routing import Routing

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
PUBLIC = "https://opsfleet.example.com"
CHROMIUM = Path("/usr/bin/chromium")


def grouping_routing(channel: str = "email") -> Routing:
    """Every alert to one channel, grouped for 30 s: one message for a storm."""
    return Routing.model_validate({
        "channels": {"email": {"kind": "email"}, "slack": {"kind": "slack"}},
        "routes": [{"match": {}, "channels": [channel], "group_wait": "30s"}],
    })


def check(name: str, severity: str, table: str) -> Check:
    return Check.model_validate({
        "name": name, "description": "test", "schedule": "1m", "severity": severity,
        "query": f"SELECT name AS item, v AS value FROM {table}", "condition": "> 10",  # noqa: S608 - a test table
        "summary": "{{ labels.item }} at {{ value }} <script>alert(1)</script>",
        "runbook": "ops/runbooks/fleet.md",
    })


@pytest.fixture
def db(db):
    """The shared `db` (tests/support/notify.py) and a second gauge, gauge2, for a second check."""
    with db.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS gauge2"))
        conn.execute(sa.text("CREATE TABLE gauge2 (name text, v numeric)"))
    return db


def storm(db, sink, channel: str, public: str | None = PUBLIC):
    """Two warnings of one check and a critical of another inside group_wait: one message."""
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO gauge VALUES ('a', 50), ('b', 12.5)"))
        conn.execute(sa.text("INSERT INTO gauge2 VALUES ('x', 99)"))
    r = grouping_routing(channel)
    ids = run_check(check("queue_depth", "warning", "gauge"), monitored=db, fleet=db, now=T0, routing=r).notification_ids
    ids += run_check(check("db_down", "critical", "gauge2"), monitored=db, fleet=db, now=T0 + timedelta(seconds=5),
                     routing=r).notification_ids
    s = settings_for(sink, opsfleet_public_url=public)
    statuses = [deliver(n, fleet=db, settings=s, routing=r, now=T0 + timedelta(seconds=40)).status for n in ids]
    assert statuses.count("sent") == 1, statuses
    return r, s


def test_a_grouped_email_shows_each_alert_as_a_row_worst_first(db, sink):
    storm(db, sink, "email")
    [mail] = sink.emails
    html, text = mail["html"], mail["text"]
    rows = re.findall(r'<span class="sev"[^>]*>(\w+)</span>\s*<strong>(\w+)</strong>', html)
    assert rows == [("CRITICAL", "db_down"), ("WARNING", "queue_depth"), ("WARNING", "queue_depth")]
    assert mail["subject"].startswith("[CRITICAL] x at 99")
    for value in ("99 (&gt; 10)", "50 (&gt; 10)", "12.5 (&gt; 10)"):  # the value against the condition
        assert value in html
    assert "item=a" in html and "item=b" in html and "item=x" in html  # labels
    assert "2026-11-23 10:00 UTC" in html and "since: 2026-11-23 10:00 UTC" in text
    assert f'<a href="{PUBLIC}/runbooks/fleet.md">Runbook</a>' in html
    with db.connect() as conn:
        fps = dict(conn.execute(sa.text("SELECT labels->>'item', fingerprint FROM fleet.alerts")).all())
    assert f'href="{PUBLIC}/alerts/{fps["x"]}"' in html and f'href="{PUBLIC}/alerts/{fps["x"]}#silence"' in html
    assert f"silence: {PUBLIC}/alerts/{fps['a']}#silence" in text
    # no internal field: no JSON block, no fold count, no fingerprint or notification id as text
    for internal in ("folded", "Fingerprint", "Notification ID", "{", "several checks", fps["a"] + "<"):
        assert internal not in html.split("<body>")[1].replace("{ ", ""), internal
    assert "<script>" not in html and "&lt;script&gt;" in html
    # worst first in the text part too
    assert text.index("[CRITICAL] db_down") < text.index("[WARNING] queue_depth")


def test_without_a_public_url_no_status_page_link_is_made(db, sink):
    storm(db, sink, "email", public=None)
    html = sink.emails[0]["html"]
    assert "/alerts/" not in html and "View alert" not in html
    assert "Runbook: ops/runbooks/fleet.md" in html  # the path, not a dead link


def test_a_resolved_notice_says_how_long_it_fired(db, sink):
    r = Routing.model_validate({"channels": {"email": {"kind": "email"}},
                                "routes": [{"match": {}, "channels": ["email"], "group_wait": "0s"}]})
    s = settings_for(sink, opsfleet_public_url=PUBLIC)
    c = check("queue_depth", "warning", "gauge")
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO gauge VALUES ('a', 50)"))
    for nid in run_check(c, monitored=db, fleet=db, now=T0, routing=r).notification_ids:
        deliver(nid, fleet=db, settings=s, routing=r, now=T0)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE gauge SET v = 1"))
    later = T0 + timedelta(minutes=65)
    for nid in run_check(c, monitored=db, fleet=db, now=later, routing=r).notification_ids:
        assert deliver(nid, fleet=db, settings=s, routing=r, now=later).status == "sent"
    resolved = sink.emails[-1]
    assert resolved["subject"].startswith("[RESOLVED]")
    assert "fired for 1h 05m" in resolved["html"] and "(fired for 1h 05m)" in resolved["text"]


def test_a_grouped_slack_message_shows_each_alert_as_a_row(db, sink):
    storm(db, sink, "slack")
    [msg] = sink.slack_messages
    rows = [b["text"]["text"] for b in msg["blocks"] if b["type"] == "section" and "*[" in b["text"]["text"]]
    assert [re.search(r"\*\[(\w+)\] (\w+)\*", r).groups() for r in rows] == [
        ("CRITICAL", "db_down"), ("WARNING", "queue_depth"), ("WARNING", "queue_depth")]
    assert "*Value* 99 (&gt; 10)" in rows[0] and "`item=x`" in rows[0] and "*Since* 2026-11-23T10:00:05" in rows[0]
    assert f"<{PUBLIC}/runbooks/fleet.md|Runbook>" in rows[0] and f"<{PUBLIC}/alerts/" in rows[0]
    mrkdwn = [b for b in msg["blocks"] if b["type"] != "header"]  # a header is plain_text: Slack shows it as is
    assert "&lt;script&gt;" in rows[0] and "<script>" not in str(mrkdwn)
    assert "folded" not in str(msg)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="install Debian's chromium for the rendered-email screenshot")
def test_the_grouped_email_renders_in_a_browser(db, sink, tmp_path):
    """Headless Chromium renders the grouped email; OPSFLEET_SCREENSHOT=1 keeps the screenshot in docs/."""
    from playwright.sync_api import sync_playwright

    storm(db, sink, "email")
    page_file = tmp_path / "alert.html"
    page_file.write_text(sink.emails[0]["html"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 720, "height": 560})
        page.goto(page_file.as_uri())
        cells = page.locator("table.alerts tr").count()
        shot = tmp_path / "alert-email.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert cells == 4  # a header row and three alerts
    assert shot.stat().st_size > 10_000
    if os.environ.get("OPSFLEET_SCREENSHOT") == "1":
        (REPO / "docs" / "alert-email.png").write_bytes(shot.read_bytes())
