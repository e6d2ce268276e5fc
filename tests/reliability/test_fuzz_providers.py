"""Provider answers nobody planned (hypothesis): generated status codes, headers (Retry-After as
seconds, as an HTTP-date, or garbage) and bodies (JSON of any shape, text, bytes, nothing), scripted
into the loopback sink (ops/devkit/sink Reply) and sent through the real channels (Resend email, Slack
webhook and Web API, PagerDuty, the webhook): each answer is a DeliveryResult or a DeliveryError with
a reason from worker.channels.base.REASONS, never another exception. parse_retry_after and
classify_status likewise over generated input.

Failing example this found (fixed in worker/channels/base.py): `Retry-After: inf` (and `1e400`) read
as an infinite wait."""

from __future__ import annotations

import email.utils
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.devkit.sink import ProviderSink, Reply
from worker.channels.base import (
    REASONS,
    TRANSIENT_REASONS,
    DeliveryError,
    DeliveryResult,
    Message,
    classify_status,
    parse_retry_after,
)
from worker.channels.email import EmailChannel
from worker.channels.pagerduty import PagerDutyChannel
from worker.channels.slack import SlackChannel
from worker.channels.webhook import WebhookChannel

pytestmark = pytest.mark.reliability
NOW = 1_800_000_000.0
http_dates = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9999, 1, 1)).map(
    lambda d: email.utils.format_datetime(d.replace(tzinfo=UTC), usegmt=True))
retry_after = st.one_of(st.integers(-10, 10 ** 12).map(str), st.floats(allow_nan=True).map(str), http_dates,
                        st.sampled_from(["inf", "-inf", "nan", "1e400", "", " 5 ", "Fri, 31 Dec 99999 23:59:59 GMT",
                                         "Mon, 32 Foo 2026", "120s", "0x10"]),
                        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30))


@settings(derandomize=True, max_examples=500, deadline=None)
@given(value=st.one_of(st.none(), retry_after, st.text()))
def test_parse_retry_after_is_none_or_a_finite_wait(value):
    got = parse_retry_after(value, now=NOW)
    assert got is None or (math.isfinite(got) and got >= 0), (value, got)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(status=st.integers(-1000, 10 ** 6), wait=st.one_of(st.none(), st.floats(0, 1e6)))
def test_classify_status_covers_every_status(status, wait):
    err = classify_status(status, wait)
    if 200 <= status < 300:
        assert err is None
        return
    assert isinstance(err, DeliveryError) and err.reason in REASONS
    assert err.transient == (err.reason in TRANSIENT_REASONS) == (status in (408, 429) or 500 <= status < 600)


@pytest.fixture(scope="module")
def provider():
    with ProviderSink() as s:
        yield s


def message() -> Message:
    return Message(notification_id="2b0c4f2e-58a4-4c55-9a43-1c3e5f1f0a11", channel="x", check="disk_full",
                   severity="critical", status="firing", title="Disk full", summary="97% used", labels={"host": "db1"},
                   value=97.0, fingerprint="fp-1", started_at=datetime(2026, 1, 1, tzinfo=UTC) - timedelta(hours=1))


CHANNELS = {
    "resend.emails": lambda s: EmailChannel("re_test_key", "alerts@example.com", "Alerts", ["ops@example.com"],
                                            api_url=s.resend_api_url, timeout=2),
    "slack.webhook": lambda s: SlackChannel(webhook_url=s.slack_webhook_url, timeout=2),
    "slack.chat.postMessage": lambda s: SlackChannel(bot_token="xoxb-test-token", channel="#alerts",
                                                     api_url=s.slack_api_url, timeout=2),
    "pagerduty.enqueue": lambda s: PagerDutyChannel("R0UT1NGKEY0123456789ABCDEFGHIJKL", api_url=s.pagerduty_api_url,
                                                    timeout=2),
    "webhook": lambda s: WebhookChannel(s.webhook_url, timeout=2),
}
json_bodies = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["ok", "error", "id", "ts", "status", "message", "name", "dedup_key",
                                                "statusCode", "errors", "x"]) | st.text(max_size=5), inner, max_size=4),
                           max_leaves=8)
bodies = st.one_of(st.none(), json_bodies.filter(lambda b: b is not None), st.text(max_size=40),
                   st.binary(max_size=40), st.sampled_from(["ok", "<html>502</html>", "{\"ok\": tru", "[]"]))
headers = st.dictionaries(st.sampled_from(["Retry-After", "retry-after", "X-RateLimit-Reset", "Content-Type", "X-Foo"]),
                          retry_after.filter(lambda v: "\n" not in v and "\r" not in v), max_size=3)
statuses = st.one_of(st.sampled_from([200, 201, 202, 204, 400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503]),
                     st.integers(200, 599))


@settings(derandomize=True, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=st.sampled_from(sorted(CHANNELS)), status=statuses, body=bodies, extra=headers)
def test_any_provider_answer_is_a_result_or_a_classified_error(provider, route, status, body, extra):
    provider.reset()
    provider.script(route, [Reply(status=status, body=body, headers=extra)] * 3)
    try:
        out = CHANNELS[route](provider).send(message())
    except DeliveryError as err:
        assert err.reason in REASONS, repr(err)
        assert err.retry_after is None or (math.isfinite(err.retry_after) and err.retry_after >= 0), repr(err)
        if err.status is not None and 200 <= err.status < 300:
            assert err.reason in ("invalid", "server_error", "client_error"), repr(err)  # a 2xx the API says failed
    else:
        assert isinstance(out, DeliveryResult)
    assert 1 <= len(provider.requests_for(route)) <= 2  # one attempt (a Web API may look up once more)
