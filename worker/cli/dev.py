"""The demo kit's commands: `opsfleet sample-app`, `opsfleet demo` and `opsfleet test` (rule tests in a
throwaway database). The only production module that reaches ops/ (the sample app and the devkit),
and only inside its commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli.common import console, err, settings
from worker.fleet.errors import OpsfleetError

sample_app = typer.Typer(no_args_is_help=True, help="The sample application (ops/sample_app/).")


@sample_app.command("init")
def sample_init() -> None:
    """Create the sample application's tables and functions in DATABASE_URL (idempotent)."""
    from ops import sample_app as app_schema
    from worker.fleet.db import monitored_engine, ping

    settings()
    engine = monitored_engine()
    ping(engine, "DATABASE_URL")
    app_schema.init(engine)
    console.print("sample app schema ready")


@sample_app.command("seed")
def sample_seed(scale: Annotated[int, typer.Option(min=100, help="number of registrations")] = 10_000,
                seed: Annotated[int, typer.Option(help="random seed")] = 42) -> None:
    """Write realistic data with planted problems (streams in batches)."""
    from ops import sample_app as app_schema
    from worker.fleet.db import monitored_engine, ping

    settings()
    engine = monitored_engine()
    ping(engine, "DATABASE_URL")
    app_schema.init(engine)
    counts = app_schema.seed_with_progress(engine, scale, seed)
    console.print(f"seeded: {sum(counts.values()):,} rows in {len(counts)} tables")


def demo(duration: Annotated[float | None, typer.Option(help="stop after S seconds (default: until Ctrl-C)")] = None,
         scale: Annotated[int, typer.Option(help="registrations to seed")] = 20_000,
         run_dir: Annotated[Path | None, typer.Option(help="folder for the embedded servers and logs")] = None) -> None:
    """Run the whole fleet on an embedded Postgres and Redis with sample data and planted problems."""
    from ops.devkit.demo import run_demo

    code = run_demo(duration=duration, scale=scale, run_dir=run_dir)
    if code:
        raise typer.Exit(code)


def demo_show(n: Annotated[int | None, typer.Argument(help="which message (1-based, as the demo numbers them); "
                                                           "default the last")] = None,
              run_dir: Annotated[Path | None, typer.Option(help="the demo's folder")] = None) -> None:
    """Print a message the demo captured, whole: an email's headers and text part, a Slack message's text."""
    from ops.devkit.demo_show import show

    console.print(show(n, run_dir), highlight=False, soft_wrap=True, markup=False)


def rule_test(
    files: Annotated[list[Path] | None, typer.Argument(help="rule test files (default: <pack>/tests/*.yaml of "
                                                           "the config folder and its enabled packs)")] = None,
    schema: Annotated[Path | None, typer.Option(help="an SQL file that creates the application's tables; "
                                                     "`pg_dump -s` output as it is")] = None,
    schema_from: Annotated[str | None, typer.Option(help="a database URL whose tables (columns, types, primary "
                                                         "keys, defaults), views and functions are copied")] = None,
    sample_schema: Annotated[bool, typer.Option("--sample-schema",
                                                help="the sample application's tables (ops/sample_app/)")] = False,
) -> None:
    """Run rule tests: fixture rows, evaluation instants, expected alerts and notifications, against a
    throwaway database (on DATABASE_URL's server, or an embedded one when it is not set).

    Its application tables are copied from DATABASE_URL's database (the sample application's when that
    has none, or DATABASE_URL is not set), or from --schema-from, --schema or --sample-schema."""
    import contextlib
    import os
    import tempfile

    import psycopg

    from worker.checks import testschema
    from worker.checks.ruletest import Runner, discover
    from worker.config import get_config
    from worker.fleet.db import create, safe_url
    from worker.fleet.errors import ArgumentError, ConfigError
    from worker.fleet.migrate import upgrade

    given = [o for o, v in (("--schema", schema), ("--schema-from", schema_from), ("--sample-schema", sample_schema)) if v]
    if len(given) > 1:
        raise ArgumentError(f"{' and '.join(given)}: give one of them (where the application's tables come from)")
    if schema is not None and not schema.is_file():
        raise ArgumentError(f"--schema {schema}: no such file")
    cfg = get_config()
    paths = list(files or discover([cfg.root, *(p.folder for p in cfg.packs.values())]))
    if not paths:
        raise OpsfleetError(f"no rule tests: none under {cfg.root}/tests/ or the enabled packs' tests/ folders")
    for p in paths:
        if not p.is_file():
            raise OpsfleetError(f"{p}: no such rule test file")
    database_url = os.environ.get("DATABASE_URL")
    source, option = (schema_from, "--schema-from") if schema_from else (database_url, "DATABASE_URL")
    catalog = None
    if schema is None and not sample_schema and source:
        try:  # before any database is made: a source that does not answer is said at once
            catalog = testschema.read_catalog(source)
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArgumentError(f"{option} {safe_url(source)}: cannot read its catalog: {reason}") from None
        if not catalog.tables and not schema_from:  # a database of the fleet's only: the demo's tables
            catalog = None
    with contextlib.ExitStack() as stack:
        from ops.devkit.servers import PostgresServer, throwaway_database

        server_url = database_url
        if not server_url:
            err.print("starting an embedded Postgres for the rule tests ...", highlight=False)
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="opsfleet-test-")))
            server = PostgresServer(run_dir / "postgres").start()
            stack.callback(server.stop)
            server_url = server.url
        url = stack.enter_context(throwaway_database(server_url))
        upgrade(url)
        if schema is not None:
            loaded, what = testschema.load_script(schema, url), f"--schema {schema}"
        elif catalog is not None:
            loaded, what = testschema.copy_catalog(catalog, url, option), f"copied from {option} {safe_url(source or '')}"
        else:
            from ops.sample_app import schema_sql as sample_sql

            loaded = testschema.load_sql(sample_sql(), "the sample application's schema", url)
            what = "the sample application's" + ("" if sample_schema or not database_url
                                                 else "; DATABASE_URL's database has no tables")
        for line in loaded.warnings:
            err.print(f"warning: {line}", highlight=False, markup=False, soft_wrap=True)
        err.print(f"application schema: {what} ({loaded.summary()}; search_path {loaded.search_path})",
                  highlight=False, markup=False, soft_wrap=True)
        engine = create(url)
        stack.callback(engine.dispose)
        from worker.config import load_config

        # a file may test a check of a pack this folder does not enable: every pack's checks are known
        runner = Runner(engine, {**load_config(cfg.root, packs="all").checks, **cfg.checks}, cfg.routing, what)
        tests = evaluations = failing = broken = 0
        for path in paths:
            shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
            try:
                result = runner.run(path)
            except ConfigError as exc:
                broken += 1
                console.print(f"ERROR {str(exc).replace(str(path), shown)}", highlight=False, markup=False)
                continue
            tests, evaluations = tests + result.tests, evaluations + result.evaluations
            if result.ok:
                console.print(f"ok    {shown} ({result.tests} tests, {result.evaluations} evaluations)",
                              highlight=False, markup=False)
                continue
            failing += len(result.failures)
            console.print(f"FAIL  {shown}", highlight=False, markup=False)
            for line in result.failures:
                console.print(f"  {line.replace(str(path), shown)}", highlight=False, markup=False, soft_wrap=True)
        summary = (f"{len(paths)} files, {tests} tests, {evaluations} evaluations: "
                   f"{failing} failing expectations" + (f", {broken} files with errors" if broken else ""))
        console.print(summary, highlight=False, markup=False)
    if failing or broken:
        raise typer.Exit(1)
