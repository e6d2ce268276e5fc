"""The `opsfleet` command: the command groups (one module each) on one typer app, and `main()`, which
turns every error a user can act on into one line and an exit code, never a traceback."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from worker.cli import checks, dev, fleet, jobs, notify, report, targets
from worker.cli.common import VERBOSITY, err
from worker.fleet.errors import OpsfleetError, ServiceUnavailable

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="opsfleet: a Celery worker fleet that watches and repairs a Postgres database.")
@app.callback()
def _root(verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                               help="log lines on stderr at INFO (-v) or DEBUG (-vv); "
                                                    "default WARNING")] = 0) -> None:
    """opsfleet: a Celery worker fleet that watches and repairs a Postgres database."""
    VERBOSITY["level"] = {0: "WARNING", 1: "INFO"}.get(verbose, "DEBUG")


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
app.add_typer(report.report_app, name="report")
app.add_typer(targets.targets_app, name="targets")
app.add_typer(fleet.task_app, name="task")
app.command("test")(dev.rule_test)
app.command()(fleet.ping)
app.command()(fleet.metrics)
app.command()(fleet.health)
app.command()(fleet.serve)
app.command()(fleet.init)
app.command()(dev.demo)
app.command("demo-show")(dev.demo_show)


_LABELS = {"Path": "PATH", "int": "INTEGER", "float": "NUMBER", "str": "TEXT"}


def tidy_help(command) -> None:
    """Help that reads well at 80 columns, for every command of the tree: a docstring's hard-wrapped
    lines joined into paragraphs (typer's rich panels keep a docstring's line breaks, so a summary
    came out ragged), and click's value labels instead of typer's Python types (`--dry-run` and
    `--help` have none, `--target TEXT`, an argument `NAME`, not `name <str>`)."""
    import inspect

    for attr in ("help", "short_help"):
        text = getattr(command, attr, None)
        if text:
            setattr(command, attr, "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n")))
    for param in command.params:
        _label(param)
    help_option = command.get_help_option

    def get_help_option(ctx, make=help_option):
        option = make(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)


def _label(param) -> None:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    inner = getattr(annotation, "__args__", (annotation,))[0]
    label = _LABELS.get(getattr(inner, "__name__", ""), "VALUE")
    if param.param_type_name == "option":
        if param.metavar is None:
            param.metavar = "" if param.is_flag or param.count else label
    elif param.param_type_name == "argument":
        param.metavar = (param.metavar or param.name.upper()) + ("..." if param.nargs != 1 else "")
        param.display_type_rich = lambda ctx: None  # its name says it: no `<str>` after it
        param.get_usage_pieces = (lambda ctx, p=param: [p.metavar if p.required else f"[{p.metavar}]"])


def _usage_line(exc) -> str:
    """One line for a usage error: the command, what is wrong, where the help is."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "opsfleet"
    message = " ".join(exc.format_message().split())
    command = where.removeprefix("opsfleet").strip()
    return f"opsfleet: error: {command + ': ' if command else ''}{message} (see `{where} --help`)"


def _sqlalchemy_error(name: str) -> type[BaseException] | tuple[()]:
    """SQLAlchemy's error class `name`, or nothing to catch when the command imported no SQLAlchemy (it
    raised none then): `opsfleet --help` and the commands that read no database do not import it."""
    module = sys.modules.get("sqlalchemy.exc")
    return getattr(module, name) if module is not None else ()


def main() -> None:
    import click
    from typer._click import exceptions as typer_click

    click_errors = (click.ClickException, typer_click.ClickException)
    try:
        command = typer.main.get_command(app)
        tidy_help(command)
        rc = command(standalone_mode=False, prog_name="opsfleet")
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except OpsfleetError as exc:
        err.print(f"opsfleet: error: {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except _sqlalchemy_error("OperationalError") as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        err.print(f"opsfleet: error: {ServiceUnavailable.__name__}: the database did not answer: {reason}",
                  highlight=False, soft_wrap=True)
        sys.exit(3)
    except _sqlalchemy_error("DBAPIError") as exc:  # e.g. a table this command reads is not in that database
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        err.print(f"opsfleet: error: the database answered: {reason} (is DATABASE_URL the database this command "
                  "reads? `opsfleet config validate` names what each pack needs)", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, click.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except (typer.Exit, click.exceptions.Exit) as exc:
        sys.exit(exc.exit_code)
    except (typer_click.NoArgsIsHelpError, click.exceptions.NoArgsIsHelpError) as exc:
        print(exc.ctx.get_help())  # a group given no command: its help, as `--help` shows it
        sys.exit(2)
    except click_errors as exc:  # usage errors (typer ships its own copy of click: both are caught)
        err.print(_usage_line(exc) if isinstance(exc, (click.UsageError, typer_click.UsageError))
                  else f"opsfleet: error: {' '.join(exc.format_message().split())}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
