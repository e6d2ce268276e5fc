"""The status page's dead notifications: listed in the outbox section with why a retry would refuse
one, retried by a POST carrying the page's token (never by a GET), behind the page's basic auth; the
requeued row is the same row (dedup key, idempotency key), sent once by the next delivery."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.support import REPO
from tests.support.notify import T0, check, fire, note, routing, settings_for
from worker.checks.engine import run_check
from worker.config import load_config
from worker.fleet.settings import Settings
from worker.notify.delivery import deliver
from worker.web.server import Fleet, make_server

AUTH = "ops:s3cret-pw"


@pytest.fixture
def page(db, fleet_db, redis_url, sink):
    cfg = load_config(REPO / "config", packs="all")
    cfg.routing = routing()
    settings = Settings(database_url=fleet_db, celery_broker_url=redis_url, opsfleet_ui_auth=AUTH)
    server = make_server(Fleet(settings, cfg, engine=db, cache_s=60), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call(url, *, method="GET", form=None, doc=None, auth=AUTH):
    data, ctype = None, None
    if form is not None:
        data, ctype = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
    if doc is not None:
        data, ctype = json.dumps(doc).encode(), "application/json"
    req = urllib.request.Request(url, data=data, method=method)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310 - loopback test server
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _dead_emails(db, sink):
    """Two alerts whose emails went dead (a wrong Resend key); the second alert has resolved since."""
    bad = settings_for(sink, resend_api_key="wrong-key")
    out = []
    for name in ("gauge_high", "gauge_gone"):
        ids = fire(db, name=name)
        for nid in ids:
            deliver(nid, fleet=db, settings=bad, routing=routing(), now=T0)
        out.append(next(i for i in ids if note(db, i).channel == "email"))
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE gauge SET v = 1"))
    run_check(check(name="gauge_gone"), monitored=db, fleet=db, now=T0 + timedelta(minutes=5), routing=routing())
    return out


def test_a_dead_email_is_retried_from_the_page_by_a_post_with_its_token_and_sent_once(db, sink, page):
    live, gone = _dead_emails(db, sink)
    status, html = call(page + "/")
    assert status == 200 and f'data-id="{live}"' in html and f'data-id="{gone}"' in html
    assert f'name="id" value="{live}"' in html and f'name="id" value="{gone}"' not in html  # no button: refused
    assert "refused: its alert has resolved since" in html
    token = html.split('name="token" value="')[1].split('"')[0]
    assert call(page + "/outbox/retry?id=" + live)[0] == 404  # a GET changes nothing
    assert call(page + "/outbox/retry", method="POST", form={"id": live})[0] == 400  # no token: refused
    assert call(page + "/outbox/retry", method="POST", form={"id": live, "token": token}, auth=None)[0] == 401
    assert note(db, live).status == "dead"
    status, html = call(page + "/outbox/retry", method="POST", form={"id": live, "token": token})
    assert status == 200 and "1 requeued" in html, html
    row = note(db, live)
    assert row.status == "pending"
    # what the sweeper's worker then does, with the channel fixed (the right key)
    assert deliver(live, fleet=db, settings=settings_for(sink), routing=routing(), now=row.next_attempt_at).status \
        == "sent"
    keys = [r.headers.get("Idempotency-Key") for r in sink.requests_for("resend.emails")]
    assert len(sink.emails) == 1 and keys.count(live) == 2  # the refused attempt and the one sent: one key


def test_the_api_retries_by_id_and_says_why_it_refuses_one(db, sink, page):
    live, gone = _dead_emails(db, sink)
    status, body = call(page + "/api/outbox/retry", method="POST", doc={"ids": [gone, live[:8]]})
    assert status == 200, body
    got = {r["id"]: r for r in json.loads(body)["retried"]}
    assert got[live]["requeued"] and not got[gone]["requeued"]
    assert "its alert has resolved since" in got[gone]["reason"]
    assert (note(db, live).status, note(db, gone).status) == ("pending", "dead")
    status, body = call(page + "/api/outbox/retry", method="POST", doc={"ids": ["zzz"]})
    assert status == 400 and "is not a notification id" in json.loads(body)["error"]
    status, body = call(page + "/api/outbox/retry", method="POST", doc={"all_dead": True, "channel": "fax"})
    assert status == 400 and "no channel 'fax'" in json.loads(body)["error"]
