"""The email channel (worker/channels/email.py) drives the real resend client against the loopback
ProviderSink: single sends, batches, idempotency, and every class of failure.

No mocks and no database: every assertion is about what crossed the HTTP boundary. The channel tests
use the root conftest's `sink`.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket

import pytest
import requests

from ops.devkit.sink import ProviderSink, Reply
from tests.support.channels import API_KEY, email_channel, make_message, send_error
from worker.channels.base import DeliveryError
from worker.channels.email import EmailChannel


def test_email_is_sent_with_html_and_text_parts(sink):
    result = email_channel(sink).send(make_message())

    [email] = sink.emails
    assert result.provider_id == email["id"]
    assert email["subject"] == "[CRITICAL] High Error Rate Detected"
    assert email["from"] == "ACE Engage Alerts <alerts@example.com>"
    assert email["to"] == ["ops@company.com", "admin@company.com"]
    assert ">High Error Rate Detected</h1>" in email["html"]
    assert "Detected 12 errors in the last hour" in email["text"]
    assert "<h1" not in email["text"] and "[CRITICAL] high_error_rate" in email["text"]
    assert email["idempotency_key"] == "notif-1"
    assert email["request_headers"]["Authorization"].startswith("Bearer re_t")
    assert API_KEY not in json.dumps(email["request_headers"])  # the sink redacts the key


def test_resolved_email_subject_says_resolved(sink):
    email_channel(sink).send(make_message(status="resolved"))
    assert sink.emails[0]["subject"] == "[RESOLVED] High Error Rate Detected"


def test_email_html_escapes_alert_text(sink):
    title = 'Disk <script>alert("x")</script> & more'
    email_channel(sink).send(
        make_message(title=title, summary="<img src=x onerror=alert(1)>", runbook="javascript:alert(1)")
    )
    html = sink.emails[0]["html"]
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; more" in html
    assert "<img" not in html
    assert 'href="javascript:' not in html  # a non-http runbook is shown as text, never linked
    assert title in sink.emails[0]["text"]  # the text part is not HTML: no entities


def test_runbook_link_keeps_its_query_string(sink):
    email_channel(sink).send(make_message())
    assert 'href="https://runbooks.example.com/errors?x=1&amp;y=2"' in sink.emails[0]["html"]


def test_idempotency_key_dedups_a_retried_send(sink):
    channel = email_channel(sink)
    first = channel.send(make_message())
    second = channel.send(make_message())  # same notification id -> same Idempotency-Key

    assert first.provider_id == second.provider_id
    assert len(sink.emails) == 1
    attempts = sink.requests_for("resend.emails")
    assert [r.replayed for r in attempts] == [False, True]


def test_same_idempotency_key_with_another_body_is_a_permanent_conflict(sink):
    channel = email_channel(sink)
    channel.send(make_message())
    err = send_error(channel, make_message(title="Something else"))
    assert (err.reason, err.permanent, err.status) == ("client_error", True, 409)
    assert len(sink.emails) == 1


def test_hung_request_times_out_and_the_retry_records_one_email(sink):
    channel = email_channel(sink, timeout=0.5)
    sink.script("resend.emails", [Reply(hang=60.0)])  # answers when the sink stops (teardown)

    err = send_error(channel, make_message())
    assert (err.reason, err.permanent) == ("timeout", False)
    assert sink.resend_in_flight() == 1  # cut by the client's timeout: the provider has not answered yet

    retried = channel.send(make_message())  # the provider had accepted it: the key replays the answer
    assert len(sink.emails) == 1
    assert retried.provider_id == sink.emails[0]["id"]
    assert len(sink.requests_for("resend.emails")) == 2


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(sink, status):
    sink.script("resend.emails", [Reply(status)])
    err = send_error(email_channel(sink), make_message())
    assert (err.reason, err.permanent, err.status) == ("server_error", False, status)
    assert sink.emails == []


def test_server_errors_then_success_sends_once(sink):
    channel = email_channel(sink)
    sink.script("resend.emails", [Reply(500), Reply(500), Reply(200)])
    outcomes = []
    for _ in range(3):
        try:
            channel.send(make_message())
            outcomes.append("sent")
        except DeliveryError as exc:
            outcomes.append(exc.reason)
    assert outcomes == ["server_error", "server_error", "sent"]
    assert len(sink.emails) == 1
    assert len(sink.requests_for("resend.emails")) == 3


def test_rate_limit_is_transient_with_retry_after(sink):
    sink.script("resend.emails", [Reply(429, headers={"Retry-After": "2"})])
    err = send_error(email_channel(sink), make_message())
    assert (err.reason, err.permanent, err.retry_after, err.status) == ("rate_limited", False, 2.0, 429)


def test_validation_error_is_permanent(sink):
    sink.script("resend.emails", [Reply(422)])
    err = send_error(email_channel(sink), make_message())
    assert (err.reason, err.permanent, err.status) == ("invalid", True, 422)


def test_invalid_sender_is_rejected_by_the_provider_as_permanent(sink):
    err = send_error(email_channel(sink, from_email="not-an-address", from_name=None), make_message())
    assert (err.reason, err.permanent, err.status) == ("invalid", True, 422)
    assert "from" in err.message
    assert sink.emails == []


def test_unauthorized_is_a_permanent_auth_error(sink):
    sink.script("resend.emails", [Reply(401)])
    err = send_error(email_channel(sink), make_message())
    assert (err.reason, err.permanent, err.status) == ("auth", True, 401)


def test_wrong_api_key_is_a_permanent_auth_error():
    with ProviderSink(resend_api_keys={"re_right"}) as strict:
        err = send_error(email_channel(strict, api_key="re_wrong"), make_message())
    assert (err.reason, err.permanent, err.status) == ("auth", True, 403)


def test_refused_connection_is_a_transient_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    channel = EmailChannel(
        API_KEY, "alerts@example.com", None, ["ops@company.com"], api_url=f"http://127.0.0.1:{port}"
    )
    err = send_error(channel, make_message())
    assert (err.reason, err.permanent) == ("connection", False)


def test_channels_with_different_keys_do_not_cross_in_threads():
    with ProviderSink(resend_api_keys={"re_one", "re_two"}) as strict:
        one = email_channel(strict, api_key="re_one")
        two = email_channel(strict, api_key="re_two")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [
                pool.submit((one if i % 2 else two).send, make_message(notification_id=f"n-{i}"))
                for i in range(16)
            ]
            results = [f.result() for f in futures]
        assert len({r.provider_id for r in results}) == 16
        assert len(strict.emails) == 16


def test_batch_send_returns_ids_in_order_and_dedups(sink):
    channel = email_channel(sink)
    batch = [
        {"to": [f"user{i}@example.com"], "subject": f"Confirmation {i}", "text": f"Your number is {i}"}
        for i in range(3)
    ]
    ids = channel.send_batch(batch, idempotency_key="backlog-batch-1")
    again = channel.send_batch(batch, idempotency_key="backlog-batch-1")

    assert ids == again
    assert [e["id"] for e in sink.emails] == ids
    assert [e["to"] for e in sink.emails] == [
        ["user0@example.com"],
        ["user1@example.com"],
        ["user2@example.com"],
    ]
    assert all(e["from"] == "ACE Engage Alerts <alerts@example.com>" and e["batch"] for e in sink.emails)


def test_permissive_batch_fails_a_bad_address_alone(sink):
    """send_batch_each: Resend's permissive validation sends the good emails and names the bad one."""
    channel = email_channel(sink)
    batch = [{"to": [addr], "subject": "Confirmation", "text": "Your number"}
             for addr in ("good1@example.com", "not-an-address", "good2@example.com")]
    items = channel.send_batch_each(batch, idempotency_key="permissive-1")
    assert [bool(i.provider_id) for i in items] == [True, False, True]
    assert items[1].error.startswith("Invalid `to` field")
    assert [e["to"] for e in sink.emails] == [["good1@example.com"], ["good2@example.com"]]
    assert [e["id"] for e in sink.emails] == [items[0].provider_id, items[2].provider_id]
    assert channel.send_batch_each([], idempotency_key="empty") == []


def test_batch_over_100_is_refused(sink):
    one = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
    with pytest.raises(DeliveryError) as info:
        email_channel(sink).send_batch([one] * 101, idempotency_key="k")
    assert (info.value.reason, info.value.permanent) == ("invalid", True)

    resp = requests.post(
        sink.resend_api_url + "/emails/batch",
        json=[one] * 101,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=5,
    )
    assert resp.status_code == 422
    assert resp.json()["name"] == "validation_error"
    assert sink.emails == []


def test_long_email_subject_is_bounded(sink):
    email_channel(sink).send(make_message(title="line1\r\nBcc: evil@example.com " + "x" * 1000))
    subject = sink.emails[0]["subject"]
    assert "\n" not in subject and "\r" not in subject
    assert len(subject) <= 250


@pytest.mark.parametrize("name", ["Ops, Inc.", 'Zoë "Q" Ops', "ACE Engage Alerts"])
def test_sender_names_with_specials_are_accepted(sink, name):
    email_channel(sink, from_name=name).send(make_message())
    assert sink.emails[0]["from"].endswith(" <alerts@example.com>")


