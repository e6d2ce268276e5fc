"""What the tests of worker/actions/ share: the secrets, the credentials and the check that proposes
terminate_session for a session of the application `victim` idle in a transaction."""

from pathlib import Path

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ACTION_SECRET = "links-key-0123456789abcdef"
AUTH = "ops:s3cret-pw"
CHECK = """\
checks:
  - name: idle_victim
    description: a session of the application `victim` idle in a transaction (a test check)
    schedule: 1m
    query: |
      SELECT pid::text AS pid, usename AS "user", application_name AS application,
             EXTRACT(EPOCH FROM (:now - state_change)) AS value
      FROM pg_stat_activity WHERE state = 'idle in transaction' AND application_name = 'victim'
    condition: "> 1"
    severity: warning
    summary: "pid {{ labels.pid }} idle in a transaction for {{ value | int }} s"
    evidence: [sessions_in_transaction]
    actions:
      - {kind: terminate_session, params: {min_idle_s: 1}}
"""
ROUTING = """\
channels:
  email: {kind: email}
  slack: {kind: slack}
routes:
  - match: {}
    channels: [email, slack]
    group_wait: 0s
"""


def app_config(root: Path, checks: str, routing: str) -> Path:
    """A config folder at `root`: only a test pack `app` enabled, with `checks` as its checks.yaml, and
    `routing` as routing.yaml."""
    (root / "app").mkdir(parents=True)
    (root / "packs.yaml").write_text("enabled: [app]\n")
    (root / "app" / "pack.yaml").write_text("description: a test pack\n")
    (root / "app" / "checks.yaml").write_text(checks)
    (root / "routing.yaml").write_text(routing)
    return root
