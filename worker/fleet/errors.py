"""Errors a user can act on: one clear line, no traceback."""


class OpsfleetError(Exception):
    """An error with a message meant for a human; the CLI prints it as one line and exits non-zero."""

    exit_code = 2


class SettingsError(OpsfleetError):
    """A missing or malformed environment variable."""


class ConfigError(OpsfleetError):
    """An invalid file under config/: the message names file:line and field."""


class ServiceUnavailable(OpsfleetError):
    """Postgres or Redis cannot be reached."""

    exit_code = 3


class ArgumentError(OpsfleetError, ValueError):
    """A task's arguments (from `celery call`, which sends them unchecked) are wrong: nothing was done."""
