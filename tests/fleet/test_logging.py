"""Secrets never reach a log line: ours, Celery's, or an exception's."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO

RESEND_KEY = "re_4fQk9ZsecretKEY_abcdef123456"
WEBHOOK = "https://hooks.slack.com/services/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"
BOT_TOKEN = "xoxb-1234567890-0987654321-SeCrEtBoTtOkEn"
DSN_PASSWORD = "pg-Pa55w0rd-secret"
DSN = f"postgresql://fleet:{DSN_PASSWORD}@db.internal:5432/app"

SCRIPT = f"""
import logging
from worker.fleet.logs import configure_logging, get_logger
configure_logging()
log = get_logger("test")
log.info("provider_configured", key={RESEND_KEY!r}, webhook={WEBHOOK!r}, dsn={DSN!r})
log.info("nested", config={{"slack": {{"token": {BOT_TOKEN!r}}}, "urls": [{DSN!r}]}})
log.info("in the event text " + {WEBHOOK!r} + " and " + {RESEND_KEY!r})
logging.getLogger("celery.worker").warning("celery says %s and %s", {DSN!r}, {BOT_TOKEN!r})
try:
    raise RuntimeError("connect failed for " + {DSN!r})
except RuntimeError:
    log.exception("failure")
    logging.getLogger("celery").exception("celery failure")
"""


def _run(fmt: str, extra_env: dict[str, str]) -> str:
    env = {"PATH": "/usr/bin:/bin", "LOG_FORMAT": fmt, **extra_env}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, cwd=REPO,  # noqa: S603
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def test_secrets_are_masked_in_json_logs():
    out = _run("json", {})
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == 6, out
    assert any(line.get("logger") == "celery.worker" for line in lines)
    for secret in (RESEND_KEY, WEBHOOK, "XyZsecretWebhookToken123", BOT_TOKEN, DSN_PASSWORD):
        assert secret not in out
    assert "***" in out


def test_secrets_from_settings_are_masked_even_without_a_pattern():
    # a Resend key that does not look like re_..., and a webhook on a custom host
    odd_key, odd_hook = "plainsecretvalue42", "https://chat.internal/hook/abcdefsecret"
    script_env = {"RESEND_API_KEY": odd_key, "ALERT_SLACK_WEBHOOK_URL": odd_hook}
    env = {"PATH": "/usr/bin:/bin", "LOG_FORMAT": "console", **script_env}
    code = ("from worker.fleet.logs import configure_logging, get_logger; configure_logging(); "
            f"get_logger('t').info('x', k={odd_key!r}, h={odd_hook!r})")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO,  # noqa: S603
                          timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert odd_key not in out and odd_hook not in out
    assert "x" in out


def test_console_format_is_readable_and_masked():
    out = _run("console", {})
    assert "provider_configured" in out
    assert not out.lstrip().startswith("{")
    for secret in (RESEND_KEY, BOT_TOKEN, DSN_PASSWORD):
        assert secret not in out
