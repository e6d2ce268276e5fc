"""Fixtures of the tests of worker/channels/: none of their own. The channels send to the root
conftest's `sink` (the ProviderSink, speaking Resend, Slack, PagerDuty and the webhook); their
messages and channels are tests/support/channels.py's. test_pagerduty.py's `pd` and `db` and
test_alert_messages.py's `db` are each one module's."""
