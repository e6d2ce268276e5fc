"""The status page's targets overview and its `?target=` filter, and /api/'s targets: three real target
databases (one unreachable), their checks evaluated by the real engine, a real server on a free port,
and headless Chromium (Debian's, through Playwright) clicking from the overview to one target."""

from __future__ import annotations

import base64
import json
import os
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.db import clear_alert_state
from tests.support.targets_web import UNREACHABLE, evaluate, jobs_database, write_config
from worker.checks import store
from worker.checks.engine import run_check
from worker.config import load_config
from worker.fleet.db import checks_engine, create
from worker.fleet.settings import Settings
from worker.watch.targets import overview
from worker.web.server import Fleet, make_server

CHROMIUM = Path("/usr/bin/chromium")
AUTH = ("ops", "s3cret-pw")
T0 = datetime(2026, 12, 7, 9, 0, 30, tzinfo=UTC)


def call(url: str):
    req = urllib.request.Request(url)
    req.add_header("Authorization", "Basic " + base64.b64encode(":".join(AUTH).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback test server
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def api(url: str):
    status, body = call(url)
    assert status == 200, body
    return json.loads(body)


@pytest.fixture
def fleet(fleet_db):
    engine = create(fleet_db)
    with engine.begin() as conn:
        clear_alert_state(conn)
        conn.execute(sa.text("DELETE FROM fleet.check_schedule"))
    yield engine
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM fleet.check_schedule"))
    engine.dispose()


def serve(cfg, fleet, fleet_db, redis_url):
    settings = Settings(database_url=fleet_db, celery_broker_url=redis_url, opsfleet_ui_auth=":".join(AUTH))
    server = make_server(Fleet(settings, cfg, engine=fleet, cache_s=600), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def three(tmp_path, fresh_database, fleet, fleet_db, redis_url):
    """Targets orders (5 jobs waiting: a critical and a warning fire), billing (none waiting) and legacy
    (nothing answers: its database_up failed twice, so its database_down fires), evaluated just now."""
    urls = {"orders": jobs_database(fresh_database, 5), "billing": jobs_database(fresh_database, 0),
            "legacy": UNREACHABLE}
    cfg = load_config(write_config(tmp_path / "config", urls, labels={"orders": {"team": "<b>pay</b>"}}),
                      packs=["fleet"])
    now = datetime.now(UTC)
    with fleet.begin() as conn:
        store.record_schedule(conn, cfg.scheduled_checks(), now - timedelta(hours=1))
    for t in ("orders", "billing"):
        for check in ("jobs_backlog", "jobs_waiting"):
            assert evaluate(cfg, fleet, check, t, now).status == "ok"
    now = datetime.now(UTC)  # the sentinel's runs last: the targets are up for a window (1m) from here
    for at in (now - timedelta(minutes=1), now):
        for t in urls:
            assert evaluate(cfg, fleet, "database_up", t, at).status == ("error" if t == "legacy" else "ok")
    fired = evaluate(cfg, fleet, "database_down", None, now).transitions
    assert [(tr.labels.get("target"), tr.to_state) for tr in fired] == [("legacy", "firing")]
    server, url = serve(cfg, fleet, fleet_db, redis_url)
    yield url, cfg
    server.shutdown()
    server.server_close()


def test_the_api_lists_every_target_up_or_down_with_its_firing_by_severity_and_last_run(three):
    url, _ = three
    got = {t["name"]: t for t in api(url + "/api/targets")}
    assert list(got) == ["orders", "billing", "legacy"]  # every target, in targets.yaml's order
    assert {k for t in got.values() for k in t} == {"name", "up", "reason", "firing", "last_run", "last_run_age_s",
                                                     "last_ok", "window_s"}
    assert (got["orders"]["up"], got["billing"]["up"], got["legacy"]["up"]) == (True, True, False), got
    assert got["legacy"]["reason"] == "database_down is firing: its database does not answer"
    assert got["orders"]["reason"] is None
    assert got["orders"]["firing"] == {"critical": 1, "high": 0, "warning": 1, "medium": 0, "info": 0}
    assert sum(got["billing"]["firing"].values()) == 0
    assert got["legacy"]["firing"]["critical"] == 1  # its database_down, a fleet check about it
    for t in got.values():  # legacy's runs ended in error: it ran, nothing succeeded
        assert t["last_run"] is not None and 0 <= t["last_run_age_s"] < 120, t
    assert got["legacy"]["last_ok"] is None and got["orders"]["last_ok"] is not None
    assert got["orders"]["window_s"] == 60  # twice its most frequent check's gap (db_long_running_queries, 30s)
    (billing,) = api(url + "/api/targets?target=billing")
    assert {**billing, "last_run_age_s": None} == {**got["billing"], "last_run_age_s": None}  # the clock moved on
    assert [t["name"] for t in api(url + "/api/status")["targets"]] == ["orders", "billing", "legacy"]


def test_every_alert_names_the_target_it_is_about_and_target_narrows_the_alerts_and_checks(three):
    url, _ = three
    assert {(a["check"], a["target"]) for a in api(url + "/api/alerts")} == {
        ("jobs_backlog", "orders"), ("jobs_waiting", "orders"), ("database_down", "legacy")}
    assert [a["check"] for a in api(url + "/api/alerts?target=legacy")] == ["database_down"]
    assert api(url + "/api/alerts?target=billing") == []
    checks = {c["name"]: c for c in api(url + "/api/checks?target=billing")}
    assert {"jobs_backlog", "jobs_waiting", "database_up"} <= set(checks) and "database_down" not in checks
    assert all("billing" in c["targets"] for c in checks.values())
    assert checks["jobs_backlog"]["last_status"] == "ok" and checks["jobs_backlog"]["states"] == ["inactive"]
    assert api(url + "/api/checks?target=legacy")[0]["targets"] == ["orders", "billing", "legacy"]
    legacy = {c["name"]: c for c in api(url + "/api/checks?target=legacy")}
    assert legacy["database_up"]["last_status"] == "error" and legacy["jobs_backlog"]["last_run"] is None
    doc = api(url + "/api/status?target=orders")
    assert doc["target"] == "orders" and {a["target"] for a in doc["alerts"]} == {"orders"}
    assert doc["counts"] == {"firing": 2, "pending": 0}
    assert [t["name"] for t in doc["targets"]] == ["orders", "billing", "legacy"]  # the overview stays whole
    status, page = call(url + "/?target=legacy")
    assert status == 200 and page.count('class="alert-row"') == 1 and "database_down" in page
    assert "Alerts and checks of target <strong>legacy</strong> only" in page


def test_an_unknown_target_is_a_400_with_one_line_and_what_is_given_is_escaped(three):
    url, _ = three
    status, body = call(url + "/api/alerts?target=nope")
    assert status == 400
    error = json.loads(body)["error"]
    assert error == "target: no target 'nope' (targets: orders, billing, legacy); drop ?target= to see them all"
    for path in ("/api/status", "/api/checks", "/api/targets"):
        assert call(url + path + "?target=nope")[0] == 400, path
    status, page = call(url + "/?target=%3Cscript%3Ex%3C/script%3E")
    assert status == 400 and "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("no target") == 1


def test_a_target_is_down_when_no_check_of_it_succeeded_within_twice_its_most_frequent_checks_gap(
        tmp_path, fresh_database, fleet):
    urls = {"orders": jobs_database(fresh_database, 0), "legacy": UNREACHABLE}
    cfg = load_config(write_config(tmp_path / "config", urls), packs=["fleet"])
    with fleet.begin() as conn:
        store.record_schedule(conn, cfg.scheduled_checks(), T0 - timedelta(hours=1))
    for t in urls:
        evaluate(cfg, fleet, "database_up", t, T0)

    def states(at):
        with fleet.connect() as conn:
            return {t["name"]: (t["up"], t["reason"]) for t in overview(conn, cfg, at)}

    assert states(T0 + timedelta(seconds=55)) == {
        "orders": (True, None), "legacy": (False, "no check of it succeeded in the last 1m 00s")}
    # its last success is older than twice the gap of its most frequent check (db_long_running_queries,
    # 30s): down, though database_up (1m) is not late yet
    assert states(T0 + timedelta(seconds=65))["orders"] == (False, "no check of it succeeded in the last 1m 00s")
    # a beat that started less than a window ago has not had the time to tell
    with fleet.begin() as conn:
        store.record_schedule(conn, cfg.scheduled_checks(), T0 + timedelta(minutes=2))
    assert states(T0 + timedelta(minutes=2, seconds=30))["legacy"] == (
        None, "not judged yet: the beat started 30s ago")


def test_without_targets_yaml_the_page_keeps_its_look_and_the_api_has_the_one_target_default(
        tmp_path, fresh_database, fleet, fleet_db, redis_url):
    cfg = load_config(write_config(tmp_path / "config", None), packs=["fleet", "app"])
    assert not cfg.targets_declared and list(cfg.targets) == ["default"]
    app = jobs_database(fresh_database, 5)
    now = datetime.now(UTC)
    assert run_check(cfg.checks["jobs_backlog"], monitored=checks_engine(url=app), fleet=fleet, now=now,
                     routing=cfg.routing).status == "ok"
    server, url = serve(cfg, fleet, fleet_db, redis_url)
    try:
        (default,) = api(url + "/api/targets")
        assert default["name"] == "default" and default["firing"]["critical"] == 1 and default["last_run"]
        assert [(a["check"], a["target"]) for a in api(url + "/api/alerts")] == [("jobs_backlog", "default")]
        assert api(url + "/api/alerts?target=default")[0]["labels"] == {}  # no `target` label, as before
        status, page = call(url + "/")
        assert status == 200 and 'id="targets"' not in page and 'class="alert-row"' in page
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="install Debian's chromium (apt-get install chromium) for the "
                                                   "browser tests of the status page")
def test_in_a_browser_the_overview_shows_each_target_and_a_click_narrows_the_page_to_it(three, tmp_path):
    from playwright.sync_api import sync_playwright

    url, _ = three
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            ctx = browser.new_context(http_credentials={"username": AUTH[0], "password": AUTH[1]},
                                      viewport={"width": 1100, "height": 900})
            page = ctx.new_page()
            assert page.goto(url + "/").status == 200
            rows = page.locator("#targets .target-row")
            assert rows.count() == 3
            by_name = {rows.nth(i).get_attribute("data-target"): rows.nth(i).inner_text() for i in range(3)}
            assert "up" in by_name["orders"] and "1 critical" in by_name["orders"] and "1 warning" in by_name["orders"]
            assert "up" in by_name["billing"] and "none" in by_name["billing"]
            assert "down" in by_name["legacy"] and "database_down is firing" in by_name["legacy"]
            assert page.locator("#alerts .alert-row").count() == 3
            assert "team=<b>pay</b>" in page.locator("#alerts").inner_text()  # a label's value, as text
            assert page.locator("#alerts b").count() == 0 and page.locator("script").count() == 0
            page.screenshot(path=str(tmp_path / "targets.png"), full_page=True)
            page.locator("#targets").get_by_role("link", name="legacy").click()
            page.wait_for_url("**/?target=legacy*")
            assert page.locator("#alerts .alert-row").count() == 1
            assert "database_down" in page.locator("#alerts .alert-row").inner_text()
            assert page.locator("#targets tr.selected").get_attribute("data-target") == "legacy"
            assert "jobs_backlog" in page.locator("#checks").inner_text()  # the checks that run on legacy
            page.screenshot(path=str(tmp_path / "legacy.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})  # a phone: the overview scrolls in its box
            page.goto(url + "/")
            assert page.locator("#targets .target-row").count() == 3
            assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
            page.screenshot(path=str(tmp_path / "phone.png"))
        finally:
            browser.close()
    if os.environ.get("OPSFLEET_SCREENSHOT_DIR"):  # to look at it: OPSFLEET_SCREENSHOT_DIR=/tmp/shots pytest ...
        for name in ("targets.png", "legacy.png", "phone.png"):
            (Path(os.environ["OPSFLEET_SCREENSHOT_DIR"]) / name).write_bytes((tmp_path / name).read_bytes())


def test_the_history_narrows_to_one_target_and_says_why_held_back_counts_are_left_out(three):
    url, _ = three
    everything = api(url + "/api/history")
    orders = api(url + "/api/history?target=orders")
    assert {e["check"] for e in orders["entries"]} == {"jobs_backlog", "jobs_waiting"}
    assert all(e["labels"].get("target") == "orders" for e in orders["entries"])
    assert len(orders["entries"]) < len(everything["entries"])  # legacy's database_down is not orders'
    assert api(url + "/api/history?target=billing")["entries"] == []  # nothing of billing moved
    assert orders["held_back"] is None and everything["held_back"] is not None  # counted per check only
    status, page = call(url + "/history?target=orders")
    assert status == 200 and "Counted per check, not per target" in page and "<option selected>orders" in page
    status, page = call(url + "/history?target=%3Cb%3Ezz")
    assert status == 400 and "no target" in page and "<b>zz" not in page
