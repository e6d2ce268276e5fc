"""The status page of `opsfleet serve` and its JSON API: a real server on a free port over the test
fleet database, a real check firing through the engine, and headless Chromium (Debian's, through
Playwright) clicking through it; the silence added in the browser holds back the alert's next notice
(checked in the outbox)."""

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

from tests.support import REPO
from tests.support.db import clear_alert_state, fresh_gauge
from worker.checks.engine import run_check
from worker.checks.spec import Check
from worker.config import load_config
from worker.fleet.db import create
from worker.fleet.settings import Settings
from worker.notify.delivery import deliver
from worker.notify.routing import Routing
from worker.web.server import Fleet, make_server

CHROMIUM = Path("/usr/bin/chromium")
AUTH = ("ops", "s3cret-pw")
ROUTING = Routing.model_validate({"channels": {"email": {"kind": "email"}},
                                  "routes": [{"match": {}, "channels": ["email"], "group_wait": "0s",
                                              "repeat_interval": "5m"}]})
CHECK = Check.model_validate({
    "name": "gauge_high", "description": "test", "schedule": "1m", "severity": "critical",
    "query": "SELECT name AS item, v AS value FROM gauge", "condition": "> 10", "runbook": "ops/runbooks/fleet.md",
    "summary": "{{ labels.item }} at {{ value }} <script>alert(1)</script>",
})


@pytest.fixture
def served(fleet_db, redis_url, sink):
    engine = create(fleet_db)
    with engine.begin() as conn:
        clear_alert_state(conn)
    fresh_gauge(engine, "name text, v numeric")
    cfg = load_config(REPO / "config", packs="all")
    cfg.checks[CHECK.name] = CHECK  # the planted check, beside the shipped catalog
    cfg.routing = ROUTING
    settings = Settings(database_url=fleet_db, celery_broker_url=redis_url, opsfleet_ui_auth=":".join(AUTH),
                        resend_api_key="re_test_key_0123456789", resend_api_url=sink.resend_api_url,
                        alert_email_recipients="ops@example.com")
    server = make_server(Fleet(settings, cfg, engine=engine, cache_s=60), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "engine": engine, "settings": settings}
    server.shutdown()
    server.server_close()
    engine.dispose()


def fire(engine, settings, now):
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM gauge"))
        conn.execute(sa.text("INSERT INTO gauge VALUES ('disk-a', 50)"))
    ids = run_check(CHECK, monitored=engine, fleet=engine, now=now, routing=ROUTING).notification_ids
    return [deliver(n, fleet=engine, settings=settings, routing=ROUTING, now=now) for n in ids]


def call(url: str, *, auth=AUTH, method="GET", data: bytes | None = None, ctype: str | None = None):
    req = urllib.request.Request(url, data=data, method=method)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310 - loopback test server
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_the_page_and_the_api_refuse_without_credentials_and_are_off_without_the_setting(served, fleet_db):
    for path in ("/", "/api/status", "/alerts/abcdef", "/history"):
        status, _, headers = call(served["url"] + path, auth=None)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic"), path
        assert call(served["url"] + path, auth=("ops", "wrong"))[0] == 401
    assert call(served["url"] + "/silences", auth=None, method="POST", data=b"check=x")[0] == 401
    assert call(served["url"] + "/health", auth=None)[0] in (200, 503)  # load balancers need no password
    # without OPSFLEET_UI_AUTH the page is off, not open
    off = make_server(Fleet(Settings(database_url=fleet_db), load_config(REPO / "config"), engine=served["engine"]),
                      "127.0.0.1", 0)
    threading.Thread(target=off.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        status, body, _ = call(f"http://127.0.0.1:{off.server_address[1]}/", auth=None)
        assert status == 503 and "OPSFLEET_UI_AUTH" in body
    finally:
        off.shutdown()
        off.server_close()


def test_the_api_tells_the_firing_alert_and_takes_and_expires_a_silence(served):
    now = datetime.now(UTC)
    assert [d.status for d in fire(served["engine"], served["settings"], now)] == ["sent"]
    status, body, _ = call(served["url"] + "/api/status")
    doc = json.loads(body)
    [alert] = doc["alerts"]
    assert status == 200 and doc["counts"] == {"firing": 1, "pending": 0}
    assert (alert["check"], alert["state"], alert["labels"], alert["value"], alert["condition"]) == (
        "gauge_high", "firing", {"item": "disk-a"}, 50.0, "> 10")
    gauge = next(c for c in doc["checks"] if c["name"] == "gauge_high")
    assert gauge["states"] == ["firing"] and gauge["last_status"] == "ok" and gauge["next_run"] > now.isoformat()
    assert {c["channel"]: c["sent_24h"] for c in doc["outbox"]["channels"]} == {"email": 1}
    assert set(doc["health"]["services"]) >= {"database", "redis", "broker"}
    # one alert, with its history: the transition and the email sent for it
    _, body, _ = call(served["url"] + f"/api/alerts/{alert['fingerprint']}")
    hist = json.loads(body)["history"]
    assert [(e["kind"], e["what"], e["channel"], e["status"]) for e in hist] == [
        ("notification", "firing", "email", "sent"), ("transition", "inactive -> firing", None, None)]
    # a silence through the API, refused with a clear message when it names no known check
    bad = call(served["url"] + "/api/silences", method="POST", data=b'{"check": "nope", "author": "me"}',
               ctype="application/json")
    assert bad[0] == 400 and "no check 'nope'" in bad[1]
    assert call(served["url"] + "/api/silences", method="POST", data=b"check=gauge_high",
                ctype="application/x-www-form-urlencoded")[0] == 400  # the API takes JSON only
    status, body, _ = call(served["url"] + "/api/silences", method="POST", ctype="application/json",
                           data=json.dumps({"check": "gauge_high", "labels": {"item": "disk-a"}, "duration": "1h",
                                            "author": "ana", "comment": "disk swap"}).encode())
    sid = json.loads(body)["id"]
    assert status == 201 and [s["id"] for s in json.loads(call(served["url"] + "/api/silences")[1])] == [sid]
    assert json.loads(call(served["url"] + "/api/alerts")[1])[0]["silenced_by"] == sid
    assert call(served["url"] + f"/api/silences/{sid}", method="DELETE")[0] == 200
    assert json.loads(call(served["url"] + "/api/silences")[1]) == []
    # a form post without the page's token is refused (another site cannot silence through a logged-in browser)
    status, body, _ = call(served["url"] + "/silences", method="POST", ctype="application/x-www-form-urlencoded",
                           data=b"check=gauge_high&author=x&comment=y&duration=1h")
    assert status == 400 and "stale" in body
    assert json.loads(call(served["url"] + "/api/silences")[1]) == []
    assert call(served["url"] + "/api/history?since=soon")[0] == 400
    # other bad input: one clear answer each, nothing written, the server still serving
    for data, needle in ((b"[1, 2]", "must be a JSON object"), (b"{not json", "not JSON"),
                         (b'{"check": "gauge_high", "author": "a", "comment": "c", "duration": "soon"}', "duration"),
                         (b'{"check": "gauge_high", "author": "a", "comment": ""}', "needs a comment")):
        status, body, _ = call(served["url"] + "/api/silences", method="POST", data=data, ctype="application/json")
        assert status == 400 and needle in body, (data, status, body)
    raw = urllib.request.Request(served["url"] + "/silences", data=b"x", method="POST",
                                 headers={"Content-Length": "lots", "Authorization": "Basic " + base64.b64encode(
                                     ":".join(AUTH).encode()).decode()})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(raw, timeout=20)  # noqa: S310 - loopback test server
    assert err.value.code == 400 and b"Content-Length" in err.value.read()
    assert json.loads(call(served["url"] + "/api/silences")[1]) == []
    assert call(served["url"] + "/api/status")[0] == 200


@pytest.mark.skipif(not CHROMIUM.exists(), reason="install Debian's chromium (apt-get install chromium) for the "
                                                   "browser tests of the status page")
def test_in_a_browser_the_page_lists_the_alert_and_a_silence_added_by_the_form_holds_back_its_next_notice(served,
                                                                                                     tmp_path):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    engine, settings = served["engine"], served["settings"]
    now = datetime.now(UTC)
    assert [d.status for d in fire(engine, settings, now)] == ["sent"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            anonymous = browser.new_context()
            try:  # headless Chromium ends a 401 with no credentials to offer as a navigation error
                assert anonymous.new_page().goto(served["url"] + "/").status == 401
            except PlaywrightError as exc:
                assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
            assert anonymous.request.get(served["url"] + "/").status == 401
            ctx = browser.new_context(http_credentials={"username": AUTH[0], "password": AUTH[1]},
                                      viewport={"width": 390, "height": 844})  # a phone
            page = ctx.new_page()
            assert page.goto(served["url"] + "/").status == 200
            row = page.locator("#alerts .alert-row")
            assert row.count() == 1
            text = row.inner_text()
            assert "gauge_high" in text and "item=disk-a" in text and "50 (> 10)" in text and "firing" in text
            assert "<script>alert(1)</script>" in row.text_content()  # the summary as text (hidden on a phone)
            assert page.locator("script").count() == 0  # escaped: no script element made it into the page
            assert page.locator("section#checks").inner_text().count("gauge_high") == 1
            assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # nothing wider than a phone
            page.screenshot(path=str(tmp_path / "phone.png"))  # the first screen
            # silence it through the form on the alert's own page
            row.get_by_role("link", name="silence").click()
            page.fill("#author", "ana")
            page.fill("#comment", "replacing the disk")
            page.select_option("#duration", "1h")
            page.get_by_role("button", name="Add silence").click()
            page.wait_for_url("**/alerts/**")
            page.goto(served["url"] + "/")
            assert "silenced" in page.locator("#alerts .alert-row").inner_text()
            silences = page.locator("#silences .silence-row")
            assert silences.count() == 1 and "replacing the disk" in silences.inner_text()
            assert "gauge_high item=disk-a" in silences.inner_text()
        finally:
            browser.close()
    # the next notice (a repeat after repeat_interval) is held back by that silence, in the outbox
    later = now + timedelta(minutes=6)
    outcome = fire(engine, settings, later)
    assert [d.status for d in outcome] == ["suppressed"]
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT status, suppressed_reason, transition FROM fleet.notifications "
                                   "WHERE id = :id"), {"id": outcome[0].notification_id}).one()
    assert tuple(row) == ("suppressed", "silenced", "repeat")
    # the history tells it: the notice held back, by which silence; sent and held back per channel
    doc = json.loads(call(served["url"] + "/api/history?since=1h&check=gauge_high")[1])
    held = [e for e in doc["entries"] if e["status"] == "suppressed"]
    assert [(e["what"], e["channel"]) for e in held] == [("repeat", "email")]
    assert held[0]["detail"].startswith("silenced by silence ")
    assert doc["sent"] == {"email": {"sent": 1, "suppressed": 1}} and doc["held_back"] == {"silenced": {"email": 1}}
    if os.environ.get("OPSFLEET_SCREENSHOT") == "1":
        (REPO / "docs" / "status-page-phone.png").write_bytes((tmp_path / "phone.png").read_bytes())


def test_a_check_without_instances_says_whether_it_ran_quiet_or_never_ran(served):
    """The state cell is never empty: a check whose last run's query returned no rows says `no data`,
    one that never ran says so."""
    import re

    with served["engine"].begin() as conn:
        conn.execute(sa.text("DELETE FROM gauge"))
    run_check(CHECK, monitored=served["engine"], fleet=served["engine"], now=datetime.now(UTC), routing=ROUTING)
    status, html, _ = call(served["url"] + "/")
    assert status == 200

    def state_cell(check: str) -> str:
        row = re.search(rf"<strong>{check}</strong>.*?</tr>", html, re.S).group(0)
        return re.sub(r"<[^>]+>", "", re.findall(r"<td>(.*?)</td>", row, re.S)[0]).strip()

    assert state_cell("gauge_high") == "no data"
    assert state_cell("confirmation_backlog") == "not run yet"
