"""A loopback HTTP server that speaks the Resend and Slack HTTP APIs.

`opsfleet demo` points RESEND_API_URL / ALERT_SLACK_WEBHOOK_URL / SLACK_API_URL at it to capture
every outgoing message locally; tests use it as the provider fake, driving the real SDKs.

    with ProviderSink(capture_path="out.jsonl") as sink:
        EmailChannel(..., api_url=sink.resend_api_url).send(msg)
        sink.script("resend.emails", [Reply(500), Reply(429, headers={"Retry-After": "2"})])
        assert len(sink.emails) == 1

Routes (names for `script`):

    resend.emails           POST /emails                   {"id": ...}; Idempotency-Key honoured
    resend.emails.batch     POST /emails/batch             {"data": [{"id": ...}, ...]}; max 100
    resend.emails.get       GET  /emails/{id}              the stored email
    resend.domains          GET  /domains                  {"object": "list", "data": []} (a full-access key);
                                                           401 restricted_api_key for a key in restricted_keys
    slack.webhook           POST /services/T.../B.../...   "ok" | 400 invalid_payload | 404 no_service
    slack.chat.postMessage  POST /api/chat.postMessage     {"ok": true, "channel", "ts", "message"}
    slack.chat.update       POST /api/chat.update          needs the channel id and an existing ts
    slack.auth.test         POST /api/auth.test

A scripted `Reply` replaces the next response of its route. A 2xx Reply without a body means
"process normally" (so `Reply(hang=5)` accepts and records the message, then stalls before
answering: the provider got it but the client never hears back, and a retry with the same
Idempotency-Key replays the original answer instead of recording a second email). A non-2xx Reply
answers with that provider's realistic error body for the status unless `body` is given.

Optional rate limits (off by default): `ProviderSink(rate_limits={"resend": 2.0, "slack": 1.0})` keeps a
token bucket per provider target (Resend: per API key, i.e. per team; Slack: per webhook URL or per
channel of the Web API) and answers a request over the limit the way the provider does: 429 with
Retry-After (Resend's rate_limit_exceeded JSON with its ratelimit-* headers; Slack's "rate_limited"
webhook body or {"ok": false, "error": "ratelimited"}). A value is the rate per second, or
(rate, burst); the burst defaults to max(1, int(rate)). A request refused this way takes no token, is
not recorded as a message, and is marked `rate_limited` in `requests`. Scripted replies bypass it.

Run standalone: `python -m ops.devkit.sink --port 8025 --capture /tmp/opsfleet-sink.jsonl`
(add `--rate-limit resend=2 --rate-limit slack=1` to enforce the providers' limits).
"""

from ops.devkit.sink.base import ROUTES, RecordedRequest, Reply
from ops.devkit.sink.server import ProviderSink

__all__ = ["ROUTES", "ProviderSink", "RecordedRequest", "Reply"]
