"""Fixtures of the tests of the opsfleet CLI (worker/cli/): `env` (root conftest) with its email and
Slack channels pointed at the sink. The CLI itself runs through tests/support/cli.py's run_cli; the
fleet database's cleared state is the root conftest's `fleet` and `clean_fleet`."""

from __future__ import annotations

import pytest


@pytest.fixture
def cli_env(env, sink):
    return {**env, "RESEND_API_KEY": "re_test_key_0123456789", "RESEND_API_URL": sink.resend_api_url,
            "ALERT_SLACK_WEBHOOK_URL": sink.slack_webhook_url, "ALERT_EMAIL_RECIPIENTS": "ops@example.com"}
