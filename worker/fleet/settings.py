"""Settings from the environment (pydantic-settings). The variable names are the contract."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.fleet.errors import SettingsError
from worker.fleet.timeutil import parse_duration

REPO_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"

# One line per variable for the README table and `opsfleet config env`.
DOCS: dict[str, str] = {
    "DATABASE_URL": "the monitored application's Postgres (postgresql://user:pass@host:5432/db)",
    "FLEET_DATABASE_URL": "where the fleet keeps its state (schema fleet); default DATABASE_URL",
    "FLEET_DATABASE_POOLED": "true when FLEET_DATABASE_URL (default DATABASE_URL) goes through a transaction pooler "
                             "(PgBouncer pool_mode=transaction, Supabase's pooler): the fleet's connections then "
                             "prepare no statements (monitored databases' never do); default false",
    "MAINTENANCE_DATABASE_URL": "the monitored database as a role that may write, for maintenance jobs, backlogs and "
                                "the system_alerts table; default DATABASE_URL (which checks use: make it a "
                                "read-only monitoring role)",
    "CELERY_BROKER_URL": "the broker; default redis://127.0.0.1:6379/0",
    "CELERY_RESULT_BACKEND": "results of progress-reporting tasks; default REDIS_URL",
    "REDIS_URL": "Redis itself (RedBeat's lock, rate-limit buckets, follow-up keys, redis checks); default "
                 "CELERY_BROKER_URL when that is Redis, required with RabbitMQ",
    "RESEND_API_KEY": "Resend API key (re_...) for email alerts",
    "RESEND_API_URL": "Resend base URL; default https://api.resend.com (a fake's address in tests)",
    "FROM_EMAIL": "sender address of alert emails",
    "FROM_NAME": "sender name of alert emails; default opsfleet",
    "ALERT_EMAIL_RECIPIENTS": "comma-separated recipients of alert emails",
    "ALERT_SLACK_WEBHOOK_URL": "Slack incoming webhook URL",
    "SLACK_BOT_TOKEN": "Slack bot token (xoxb-...); with SLACK_CHANNEL, the Web API instead of a webhook",
    "SLACK_CHANNEL": "Slack channel for the Web API (#alerts or an id)",
    "SLACK_API_URL": "Slack Web API base URL override (a fake's address in tests)",
    "OPSFLEET_CONFIG_DIR": "the config folder (packs.yaml, routing.yaml, the packs); default ./config",
    "OPSFLEET_PACKS": "the packs to run, comma-separated, or all; default: the config folder's packs.yaml",
    "OPSFLEET_PACKS_DIR": "where the shipped packs are (the image: /opt/opsfleet/packs); default ./config",
    "FLOWER_BASIC_AUTH": "user:password for Flower (required by the compose file)",
    "OPSFLEET_UI_AUTH": "user:password for the status page and /api/ of `opsfleet serve` (refused without it)",
    "OPSFLEET_METRICS_AUTH": "credentials /metrics asks for: user:password (basic auth) or `Bearer TOKEN`; without "
                             "it /metrics is open (it carries check labels: set it)",
    "SLACK_SIGNING_SECRET": "the Slack app's signing secret: `opsfleet serve` takes its interaction payloads (the "
                            "Approve buttons) at /slack/interactions only when it is set and the signature holds",
    "SLACK_TEAM_ID": "the Slack workspace (T...) whose interaction payloads are taken; a payload from another is "
                     "refused (403); default: any workspace whose payload is signed with the secret",
    "OPSFLEET_ACTION_SECRET": "the key that signs the approval links of alert emails (single-use, expiring); "
                              "without it emails carry no approval link (the page and Slack still approve)",
    "OPSFLEET_PUBLIC_URL": "the status page's address as people reach it (https://opsfleet.example.com): alert "
                           "messages link to the alert and its silence form",
    "HEARTBEAT_URL": "a dead-man's switch (healthchecks.io, Cronitor, ...): pinged every HEARTBEAT_INTERVAL only "
                     "while the fleet is well, so its silence pages someone",
    "HEARTBEAT_INTERVAL": "how often the heartbeat runs; default 1m (set the receiver's period to it)",
    "HEARTBEAT_FAIL": "true: when unwell, POST the reasons to HEARTBEAT_URL/fail (healthchecks.io's signal) "
                      "instead of staying silent; default true for hc-ping.com",
    "LOG_FORMAT": "json or console; default json when stderr is not a terminal",
    "LOG_LEVEL": "DEBUG, INFO, WARNING, ERROR; default INFO",
}

REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+socket")
BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "redis+socket", "memory")
# A setting is secret by its name: API keys, tokens, credentials (`..._auth`: user:password or a bearer
# token), webhook and heartbeat URLs (the URL is the credential). SECRET_FIELDS is derived from the model
# below, so a new setting named so is masked without a list to remember; a password inside any other
# `..._url` (a DSN, a broker URL) is masked too.
SECRET_NAME = re.compile(r"(_key|_token|_auth|_password|_secret|webhook_url|heartbeat_url)$")


def is_loopback_http(url: str) -> bool:
    """http:// to 127.0.0.1, localhost or [::1]: a fake on this machine, the only place plain http is
    accepted for a provider that requires https."""
    return url.startswith("http://") and (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def _check_db_url(name: str, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(f"{name} must be a postgresql:// URL, got scheme {parts.scheme!r}")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str | None = None
    fleet_database_url: str | None = None
    fleet_database_pooled: bool = False
    maintenance_database_url: str | None = None
    celery_broker_url: str = "redis://127.0.0.1:6379/0"
    celery_result_backend: str | None = None
    redis_url: str | None = None
    resend_api_key: str | None = None
    resend_api_url: str = "https://api.resend.com"
    from_email: str = "alerts@example.com"
    from_name: str = "opsfleet"
    alert_email_recipients: str = ""
    alert_slack_webhook_url: str | None = None
    slack_bot_token: str | None = None
    slack_channel: str | None = None
    slack_api_url: str | None = None
    pagerduty_routing_key: str | None = None
    pagerduty_api_url: str | None = None  # default https://events.pagerduty.com (a loopback fake in tests)
    alert_webhook_url: str | None = None
    opsfleet_config_dir: Path = Field(default=REPO_CONFIG_DIR)
    flower_basic_auth: str | None = None
    opsfleet_ui_auth: str | None = None
    opsfleet_metrics_auth: str | None = None
    opsfleet_public_url: str | None = None
    slack_signing_secret: str | None = None
    slack_team_id: str | None = None
    opsfleet_action_secret: str | None = None
    heartbeat_url: str | None = None
    heartbeat_interval: str = "1m"
    heartbeat_fail: bool | None = None
    log_format: str | None = None
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        return _check_db_url("DATABASE_URL", v)

    @field_validator("fleet_database_url")
    @classmethod
    def _fleet_database_url(cls, v: str | None) -> str | None:
        return _check_db_url("FLEET_DATABASE_URL", v)

    @field_validator("maintenance_database_url")
    @classmethod
    def _maintenance_database_url(cls, v: str | None) -> str | None:
        return _check_db_url("MAINTENANCE_DATABASE_URL", v)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        scheme = urlsplit(v).scheme
        if scheme not in REDIS_SCHEMES:
            raise ValueError(f"REDIS_URL must be redis://host:6379/0 (or rediss://, unix://), got scheme {scheme!r}")
        return v

    @field_validator("pagerduty_api_url")
    @classmethod
    def _pagerduty_api_url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not (v.startswith("https://") or is_loopback_http(v)):
            raise ValueError(f"PAGERDUTY_API_URL must be https://... (http:// only on 127.0.0.1), got {v!r}")
        return v

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if v not in ("json", "console"):
            raise ValueError(f"LOG_FORMAT must be json or console, got {v!r}")
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        v = v.upper()
        if v not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {v!r}")
        return v

    @field_validator("flower_basic_auth", "opsfleet_ui_auth")
    @classmethod
    def _basic_auth(cls, v: str | None, info) -> str | None:
        if v and (":" not in v or not v.split(":", 1)[0] or not v.split(":", 1)[1]):
            raise ValueError(f"{info.field_name.upper()} must be user:password")
        return v or None

    @field_validator("opsfleet_metrics_auth")
    @classmethod
    def _metrics_auth(cls, v: str | None) -> str | None:
        if not v:
            return None
        scheme, _, token = v.partition(" ")
        if scheme.lower() == "bearer":
            if not token.strip() or " " in token.strip():
                raise ValueError("OPSFLEET_METRICS_AUTH: `Bearer TOKEN` needs one token after Bearer")
            return f"Bearer {token.strip()}"
        if ":" not in v or not v.split(":", 1)[0] or not v.split(":", 1)[1]:
            raise ValueError("OPSFLEET_METRICS_AUTH must be user:password (basic auth) or `Bearer TOKEN`")
        return v

    @field_validator("heartbeat_url")
    @classmethod
    def _heartbeat_url(cls, v: str | None) -> str | None:
        if v and (urlsplit(v).scheme not in ("http", "https") or not urlsplit(v).netloc):
            raise ValueError("HEARTBEAT_URL must be an http(s) address (https://hc-ping.com/<uuid>)")
        return v.rstrip("/") if v else None

    @field_validator("heartbeat_interval")
    @classmethod
    def _heartbeat_interval(cls, v: str) -> str:
        if parse_duration(v).total_seconds() < 1:
            raise ValueError("HEARTBEAT_INTERVAL must be at least 1s")
        return v

    @field_validator("opsfleet_public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v and (urlsplit(v).scheme not in ("http", "https") or not urlsplit(v).netloc):
            raise ValueError(f"OPSFLEET_PUBLIC_URL must be an http(s) address, got {v!r}")
        return v.rstrip("/") if v else None

    # -- derived ---------------------------------------------------------------------------------
    @property
    def heartbeat_seconds(self) -> float:
        return parse_duration(self.heartbeat_interval).total_seconds()

    @property
    def heartbeat_signals_fail(self) -> bool:
        if self.heartbeat_fail is not None:
            return self.heartbeat_fail
        return bool(self.heartbeat_url) and urlsplit(self.heartbeat_url).hostname in ("hc-ping.com", "hchk.io")

    @property
    def recipients(self) -> list[str]:
        return [r.strip() for r in self.alert_email_recipients.split(",") if r.strip()]

    @property
    def result_backend(self) -> str:
        return self.celery_result_backend or self.redis()

    def redis(self) -> str:
        """What needs Redis itself: RedBeat's lock and schedule, the rate-limit buckets, the follow-up
        keys, the redis checks. REDIS_URL, else CELERY_BROKER_URL when the broker is Redis."""
        if self.redis_url:
            return self.redis_url
        if urlsplit(self.celery_broker_url).scheme in REDIS_SCHEMES:
            return self.celery_broker_url
        raise SettingsError(
            "REDIS_URL is not set: the broker (CELERY_BROKER_URL) is not Redis, and the fleet needs Redis itself "
            "for RedBeat's lock, the rate-limit buckets and the follow-up keys: export REDIS_URL=redis://host:6379/0")

    def broker_url(self) -> str:
        """CELERY_BROKER_URL, checked where a broker is used (the Celery app, ping), not on every
        settings load: reading config files needs no broker."""
        scheme = urlsplit(self.celery_broker_url).scheme
        if scheme not in BROKER_SCHEMES:
            raise SettingsError(f"invalid environment: CELERY_BROKER_URL must be redis://... or amqp://..., "
                                f"got scheme {scheme!r}")
        return self.celery_broker_url

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SettingsError(
                "DATABASE_URL is not set: export DATABASE_URL=postgresql://user:password@host:5432/dbname "
                "(or run `opsfleet demo`, which starts its own)"
            )
        return self.database_url

    def require_fleet_database_url(self) -> str:
        return self.fleet_database_url or self.require_database_url()

    def require_maintenance_database_url(self) -> str:
        """The monitored database for what writes to it (maintenance, backlogs, system_alerts)."""
        return self.maintenance_database_url or self.require_database_url()

    def secret_values(self) -> list[str]:
        """Exact secret strings to mask in logs, besides the patterns logging knows: each secret setting
        (and the password of user:password, the token of `Bearer TOKEN`), each password in a URL."""
        values = []
        for f in SECRET_FIELDS:
            v = getattr(self, f)
            if isinstance(v, str) and v:
                values.append(v)
                if f.endswith("_auth"):
                    values.append(v.partition(" ")[2] if v.startswith("Bearer ") else v.partition(":")[2])
        for f in URL_FIELDS:
            url = getattr(self, f)
            pw = urlsplit(url).password if isinstance(url, str) and url else None
            if pw:
                values.append(pw)
        return [v for v in values if v and len(v) >= 4]


SECRET_FIELDS = tuple(n for n in Settings.model_fields if SECRET_NAME.search(n))
URL_FIELDS = tuple(n for n in Settings.model_fields if n.endswith(("_url", "_backend")) and n not in SECRET_FIELDS)


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]).upper() if err["loc"] else "settings"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{field}: {msg}")
    return "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(f"invalid environment: {_format_validation_error(exc)}") from None


def reload_settings() -> Settings:
    get_settings.cache_clear()
    return get_settings()


def environ_summary() -> dict[str, bool]:
    """Which documented variables are set (never their values)."""
    return {name: bool(os.environ.get(name)) for name in DOCS}
