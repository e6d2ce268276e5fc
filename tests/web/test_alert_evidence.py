"""An alert's evidence where people look for it: the status page's alert view (every row, escaped),
/api/alerts/<fingerprint> and `opsfleet alerts show FP [--json]`."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request

import pytest
import sqlalchemy as sa

from tests.support import REPO
from tests.support.cli import run_cli
from tests.support.notify import T0, routing
from worker.checks.engine import run_check
from worker.checks.spec import Check
from worker.config import load_config
from worker.fleet.settings import Settings
from worker.web.server import Fleet, make_server

AUTH = "ops:s3cret-pw"
CHECK = Check.model_validate({
    "name": "gauge_high", "description": "test", "schedule": "1m",
    "query": "SELECT name AS item, v AS value FROM gauge", "condition": "> 10", "severity": "critical",
    "summary": "{{ labels.item }} at {{ value }}",
    "evidence": [{"name": "the_gauge", "query": "SELECT name, v, '<b>bold</b>' AS note FROM gauge "
                                                 "WHERE name = CAST(:item AS text) ORDER BY name", "rows": 5},
                 "connections"]})


@pytest.fixture
def fired(db):
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO gauge VALUES ('disk-<a>', 50)"))
    outcome = run_check(CHECK, monitored=db, fleet=db, now=T0, routing=routing())
    assert [t.to_state for t in outcome.transitions] == ["firing"]
    return outcome.transitions[0].fingerprint


@pytest.fixture
def page(db, fleet_db, redis_url):
    cfg = load_config(REPO / "config", packs="all")
    cfg.checks[CHECK.name], cfg.routing = CHECK, routing()
    server = make_server(Fleet(Settings(database_url=fleet_db, celery_broker_url=redis_url, opsfleet_ui_auth=AUTH),
                               cfg, engine=db, cache_s=60), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url: str) -> str:
    req = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()})
    with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310 - loopback test server
        return resp.read().decode()


def test_the_alert_view_and_the_api_show_every_section_escaped(fired, page):
    html = get(f"{page}/alerts/{fired}")
    section = html.split('id="evidence"', 1)[1].split("</section>", 1)[0]
    assert "the_gauge" in section and "connections by user, application and state" in section
    assert "disk-&lt;a&gt;" in section and "&lt;b&gt;bold&lt;/b&gt;" in section and "<b>bold" not in section
    doc = json.loads(get(f"{page}/api/alerts/{fired}"))
    gauge = next(s for s in doc["evidence"]["sections"] if s["name"] == "the_gauge")
    assert gauge["rows"] == [{"name": "disk-<a>", "v": 50.0, "note": "<b>bold</b>"}]  # the instance's label bound
    assert doc["evidence"]["reason"] == "firing"


def test_alerts_show_prints_the_evidence_and_its_json(fired, env):
    text = run_cli(["alerts", "show", fired[:10]], env)
    assert text.returncode == 0, text.stderr
    assert "the_gauge" in text.stdout and "disk-<a>" in text.stdout and "evidence gathered" in text.stdout
    doc = json.loads(run_cli(["alerts", "show", fired, "--json"], env).stdout)
    assert doc["fingerprint"] == fired and {s["name"] for s in doc["evidence"]["sections"]} == {"the_gauge", "connections"}
    for bad in ("zz", "0000000000"):
        proc = run_cli(["alerts", "show", bad], env)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "ALERT" in lines[0], proc.stderr


def post(url: str, form: dict[str, str]) -> tuple[int, str]:
    import urllib.parse

    req = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST", headers={
        "Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode(),
        "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310 - loopback test server
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_page_gathers_it_again_on_a_post_with_its_token_never_on_a_get(fired, page, db):
    html = get(f"{page}/alerts/{fired}")
    token = html.split('name="token" value="')[1].split('"')[0]
    assert f'action="/alerts/{fired}/evidence"' in html
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE gauge SET v = 70"))
    with pytest.raises(urllib.error.HTTPError, match="404"):
        get(f"{page}/alerts/{fired}/evidence")  # a GET gathers nothing
    assert post(f"{page}/alerts/{fired}/evidence", {"token": "stale"})[0] == 400
    before = json.loads(get(f"{page}/api/alerts/{fired}"))["evidence"]
    assert before["reason"] == "firing" and before["sections"][0]["rows"][0]["v"] == 50.0
    status, _ = post(f"{page}/alerts/{fired}/evidence", {"token": token})
    assert status == 200  # followed the redirect to the alert's page
    after = json.loads(get(f"{page}/api/alerts/{fired}"))["evidence"]
    assert after["reason"] == "asked" and after["sections"][0]["rows"][0]["v"] == 70.0


CHROMIUM = "/usr/bin/chromium"


def test_a_blocked_sessions_alert_view_in_a_browser_shows_who_blocks_whom(db, page, tmp_path):
    """A real blocker and a real waiter, db_blocked_sessions fired through the engine, the alert's page
    in headless Chromium: the evidence table names both sessions. OPSFLEET_SCREENSHOT=1 keeps the
    screenshot as docs/alert-evidence.png."""
    import os
    import shutil
    import time
    from datetime import UTC, datetime, timedelta

    import psycopg

    if not os.path.exists(CHROMIUM):
        pytest.skip("no /usr/bin/chromium: the alert view's screenshot needs Debian's chromium")
    from playwright.sync_api import sync_playwright

    url = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with db.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS seats"))
        conn.execute(sa.text("CREATE TABLE seats (id int PRIMARY KEY, held_by text)"))
        conn.execute(sa.text("INSERT INTO seats VALUES (7, NULL)"))
    holder = psycopg.connect(url, autocommit=True, application_name="billing")
    waiter = psycopg.connect(url, autocommit=True, application_name="checkout")
    holder.execute("BEGIN")
    holder.execute("UPDATE seats SET held_by = 'order-1' WHERE id = 7")
    blocked = threading.Thread(target=lambda: waiter.execute("UPDATE seats SET held_by = 'order-2' WHERE id = 7"))
    blocked.start()
    try:
        deadline = time.monotonic() + 20
        with db.connect() as conn:
            while time.monotonic() < deadline and not conn.execute(sa.text(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = :p AND wait_event_type = 'Lock'"),
                    {"p": waiter.info.backend_pid}).first():
                time.sleep(0.05)
        check = load_config(REPO / "config", packs="all").checks["db_blocked_sessions"]
        at = datetime.now(UTC) + timedelta(minutes=3)
        outcome = run_check(check, monitored=db, fleet=db, now=at, routing=routing(), slot=at)
        fp = next(t.fingerprint for t in outcome.transitions if t.labels["pid"] == str(waiter.info.backend_pid))
        user, password = AUTH.split(":")
        shot = tmp_path / "alert-evidence.png"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                ctx = browser.new_context(viewport={"width": 1100, "height": 900},
                                          http_credentials={"username": user, "password": password})
                view = ctx.new_page()
                view.goto(f"{page}/alerts/{fp}#evidence")
                table = view.locator("section#evidence table").first
                text = table.inner_text()
                assert "billing" in text and "checkout" in text and str(holder.info.backend_pid) in text
                assert table.locator("tr").count() >= 3  # a header, the holder, the waiter
                view.screenshot(path=str(shot), full_page=True)
            finally:
                browser.close()
        assert shot.stat().st_size > 10_000
        if os.environ.get("OPSFLEET_SCREENSHOT") == "1":
            shutil.copyfile(shot, REPO / "docs" / "alert-evidence.png")
    finally:
        holder.execute("ROLLBACK")
        blocked.join(20)
        holder.close()
        waiter.close()
