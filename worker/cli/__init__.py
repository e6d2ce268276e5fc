"""The `opsfleet` command: the command groups (one module each) on one typer app, and `main()`, which
turns every error a user can act on into one line and an exit code, never a traceback."""

from __future__ import annotations

import sys

import typer

from worker.cli import checks, dev, fleet, jobs, notify
from worker.cli.common import err
from worker.fleet.errors import OpsfleetError, ServiceUnavailable

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="opsfleet: a Celery worker fleet that watches and repairs a Postgres database.")
app.add_typer(fleet.db_app, name="db")
app.add_typer(fleet.config_app, name="config")
app.add_typer(dev.sample_app, name="sample-app")
app.add_typer(checks.checks_app, name="checks")
app.add_typer(checks.alerts_app, name="alerts")
app.add_typer(jobs.maint_app, name="maintenance")
app.add_typer(notify.silence_app, name="silence")
app.add_typer(notify.notify_app, name="notify")
app.add_typer(notify.digest_app, name="digest")
app.add_typer(jobs.backlog_app, name="backlog")
app.command()(fleet.ping)
app.command()(fleet.metrics)
app.command()(dev.demo)


def main() -> None:
    import sqlalchemy.exc

    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except OpsfleetError as exc:
        err.print(f"opsfleet: error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except sqlalchemy.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        err.print(f"opsfleet: error: {ServiceUnavailable.__name__}: the database did not answer: {reason}",
                  highlight=False, soft_wrap=True)
        sys.exit(3)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


