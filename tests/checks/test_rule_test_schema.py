"""`opsfleet test` against the application's own tables (worker/checks/testschema.py): a real database's
catalog copied (DATABASE_URL's by default, or --schema-from URL), and real `pg_dump -s` output taken as
--schema as it is (its psql meta lines, CREATE SCHEMA public, its empty search_path); a table the
schema lacks is named with the options that give it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from tests.support import REPO
from tests.support.cli import run_cli
from worker.checks import testschema
from worker.checks.ruletest import Runner, discover
from worker.checks.spec import Check
from worker.config import load_config
from worker.fleet.db import create
from worker.fleet.errors import ArgumentError, ConfigError
from worker.fleet.migrate import upgrade

# A shop as an application has it: an enum, serial, bigserial and identity keys, defaults, a second
# schema that the role's search_path names, a view, a function, a foreign key, an index.
SHOP = """
CREATE TYPE order_status AS ENUM ('new', 'paid', 'failed');
CREATE TABLE customers (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE,
                        created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id serial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers(id),
                     status order_status NOT NULL DEFAULT 'new', amount numeric(10,2), tags text[],
                     meta jsonb DEFAULT '{}'::jsonb, created_at timestamptz NOT NULL DEFAULT now(),
                     line integer GENERATED ALWAYS AS IDENTITY);
CREATE INDEX ON orders (created_at);
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (id int PRIMARY KEY, order_id int REFERENCES orders(id), total numeric NOT NULL);
CREATE FUNCTION failed_since(since timestamptz) RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT count(*) FROM public.orders WHERE status = 'failed' AND created_at > since $$;
CREATE VIEW failed_orders AS SELECT * FROM orders WHERE status = 'failed';
"""
CHECKS = [
    {"name": "orders_failed", "description": "failed orders in the last hour", "schedule": "5m",
     "query": "SELECT count(*) AS value FROM failed_orders WHERE created_at > :now - interval '1 hour'",
     "condition": "> 2", "severity": "warning", "summary": "{{ value }} failed orders"},
    {"name": "orders_failed_fn", "description": "the same through the application's function", "schedule": "5m",
     "query": "SELECT failed_since(:now - interval '1 hour') AS value", "condition": "> 2", "severity": "warning",
     "summary": "{{ value }} failed orders"},
    {"name": "invoices_unpaid", "description": "invoices of failed orders (billing is on the search_path)",
     "schedule": "5m", "query": "SELECT count(*) AS value FROM invoices i JOIN orders o ON o.id = i.order_id "
                                "WHERE o.status = 'failed'",
     "condition": "> 0", "severity": "warning", "summary": "{{ value }} invoices"},
]
RULE_TEST = """check: {check}
tests:
  - name: three failed orders fire
    rows:
      customers:
        - {{email: a@example.com}}
      orders:
        - {{customer_id: 1, status: failed, created_at: -5m, repeat: 3}}
        - {{customer_id: 1, status: paid, created_at: -5m}}
      billing.invoices:
        - {{id: 7, order_id: 2, total: 10}}
    expect: {{alerts: [{{state: firing, value: {value}}}]}}
  - name: old ones do not
    rows:
      customers:
        - {{email: a@example.com}}
      orders:
        - {{customer_id: 1, status: failed, created_at: -2h, repeat: 3}}
    expect: {{alerts: []}}
"""


def _pg_dump() -> str:
    found = shutil.which("pg_dump") or next((str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))), None)
    if found is None:
        pytest.skip("no pg_dump (apt-get install postgresql-client)")
    return found


@pytest.fixture(scope="module")
def shop(fresh_database):
    """The application's database: SHOP, with its role's search_path naming billing (as ALTER ROLE would)."""
    url = fresh_database()
    engine = create(url)
    with engine.begin() as conn:
        conn.execute(sa.text(SHOP))
        name = conn.execute(sa.text("SELECT current_database()")).scalar()
        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET search_path = "$user", public, billing'))
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def tests_dir(tmp_path_factory):
    """A config folder with the shop's checks and a rule test of each."""
    cfg = tmp_path_factory.mktemp("shopcfg")
    (cfg / "checks").mkdir()
    (cfg / "checks" / "shop.yaml").write_text(yaml.safe_dump({"checks": CHECKS}))
    (cfg / "tests").mkdir()
    for check, value in (("orders_failed", 3), ("orders_failed_fn", 3)):
        (cfg / "tests" / f"{check}.yaml").write_text(RULE_TEST.format(check=check, value=value))
    (cfg / "tests" / "invoices_unpaid.yaml").write_text(
        RULE_TEST.format(check="invoices_unpaid", value=1).split("  - name: old ones")[0])
    return cfg


_ENGINES = []


@pytest.fixture(autouse=True, scope="module")
def _dispose_engines():
    yield
    for engine in _ENGINES:
        engine.dispose()


def _runner(url: str, checks=None, routing=None, schema: str = "this test's") -> Runner:
    engine = create(url)
    _ENGINES.append(engine)
    return Runner(engine, checks or {c["name"]: Check.model_validate(c) for c in CHECKS}, routing, schema)


def _throwaway(fresh_database) -> str:
    url = fresh_database()
    upgrade(url)
    return url


def _run_all(runner: Runner, folder: Path) -> list[str]:
    failures = []
    for path in discover([folder]):
        result = runner.run(path)
        failures += result.failures
    return failures


def test_the_tables_of_a_real_database_are_copied_and_the_rule_tests_run_on_them(shop, tests_dir, fresh_database):
    target = _throwaway(fresh_database)
    loaded = testschema.copy_catalog(shop, target)
    assert loaded.what == {"tables": 3, "views": 1, "functions": 1, "types": 1}, loaded
    assert loaded.warnings == [] and "billing" in loaded.search_path
    assert _run_all(_runner(target), tests_dir) == []


def test_real_pg_dump_output_is_taken_as_it_is(shop, tests_dir, fresh_database, tmp_path):
    dump = tmp_path / "shop.sql"
    subprocess.run([_pg_dump(), "-s", "-f", str(dump), testschema.conninfo(shop)], check=True, timeout=60)  # noqa: S603
    text = dump.read_text()
    assert "SELECT pg_catalog.set_config('search_path', '', false);" in text  # what made the app's tables unfindable
    target = _throwaway(fresh_database)
    loaded = testschema.load_script(dump, target)
    assert loaded.warnings == [] and loaded.search_path == '"$user", public, "billing"'
    assert _run_all(_runner(target), tests_dir) == []


def test_pg_dump_of_one_schema_with_its_create_schema_public_and_meta_lines(shop, fresh_database, tmp_path):
    dump = tmp_path / "public.sql"
    subprocess.run([_pg_dump(), "-s", "-n", "public", "-f", str(dump), testschema.conninfo(shop)], check=True, timeout=60)  # noqa: S603
    assert "CREATE SCHEMA public;" in dump.read_text()
    dump.write_text("\\restrict abc\n" + dump.read_text() + "\\unrestrict abc\n")  # as pg_dump 15.14+ writes them
    target = _throwaway(fresh_database)
    testschema.load_script(dump, target)
    with _runner(target).engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM failed_orders")).scalar() == 0


def test_an_error_in_a_schema_file_names_its_line(fresh_database, tmp_path):
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE a (id int);\n\n-- the next one is wrong\nCREATE TABLE b (id nosuchtype);\n")
    with pytest.raises(ArgumentError) as exc:
        testschema.load_script(bad, _throwaway(fresh_database))
    assert str(exc.value) == f'--schema {bad}:4: type "nosuchtype" does not exist'


def test_opsfleet_test_copies_database_url_s_tables_by_default(env, shop, tests_dir):
    e = {**env, "DATABASE_URL": shop, "OPSFLEET_CONFIG_DIR": str(tests_dir), "OPSFLEET_PACKS": ""}
    proc = run_cli(["test"], e, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 files, 5 tests, 5 evaluations: 0 failing expectations" in proc.stdout
    assert "application schema: copied from DATABASE_URL" in proc.stderr and "3 tables" in proc.stderr


def test_shipped_rule_tests_pass_on_a_copy_of_the_sample_application(app_db_url, fresh_database):
    """The copy is faithful enough for the shipped rule tests (`opsfleet test --schema-from` of the
    sample's database passes all 73 files; two here: a check calling a function, one with enum-like
    text columns and a partial index's table)."""
    cfg = load_config(REPO / "config", packs="all")
    target = _throwaway(fresh_database)
    loaded = testschema.copy_catalog(app_db_url, target)
    assert loaded.warnings == [] and loaded.what["functions"] >= 3 and loaded.what["views"] >= 2
    runner = _runner(target, cfg.checks, cfg.routing)
    for path in (cfg.packs["ace_engage"].folder / "tests" / "backup_verification_failed.yaml",
                 cfg.packs["ticketing"].folder / "tests" / "double_booking_attempts.yaml"):
        result = runner.run(path)
        assert result.ok and result.tests >= 2, result.failures


def test_a_source_that_does_not_answer_is_one_line(env, tests_dir):
    e = {**env, "OPSFLEET_CONFIG_DIR": str(tests_dir), "OPSFLEET_PACKS": ""}
    proc = run_cli(["test", "--schema-from", "postgresql://nobody:secret@127.0.0.1:1/x"], e, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith("opsfleet: error: --schema-from ") and "cannot read its catalog" in line
    assert "secret" not in proc.stderr
    both = run_cli(["test", "--schema-from", "postgresql://x/y", "--sample-schema"], e)
    assert both.returncode == 2 and "--schema-from and --sample-schema: give one of them" in both.stderr


def test_a_missing_table_names_the_schema_it_looked_in(app_db_url, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("check: confirmation_backlog\ntests:\n  - name: x\n    rows:\n      nope:\n        - {a: 1}\n")
    cfg = load_config(REPO / "config", packs="all")
    with pytest.raises(ConfigError) as exc:
        _runner(app_db_url, cfg.checks, cfg.routing, "copied from DATABASE_URL x").run(path)
    assert "(copied from DATABASE_URL x): `opsfleet test --schema-from URL`" in str(exc.value)
