"""The application's schema in the throwaway database of `opsfleet test` (worker/cli/dev.py):

- `copy_catalog(source, target)` reads a database's catalog (DATABASE_URL's, or `--schema-from URL`)
  and creates what a check's query and a rule test's rows need: its schemas, extensions, enum and
  domain types, tables (columns, types, NOT NULL, identity and serial columns, primary keys; a
  materialized view, a foreign table or a partitioned one as a plain table), functions, views, and
  the columns' defaults where they can be made (one that cannot is left out). Foreign keys, CHECK
  and UNIQUE constraints, indexes, triggers and rows are not copied: a rule test's rows stand alone.
- `load_script(path, target)` runs an SQL file (`--schema FILE`), plain `pg_dump -s` output included:
  psql's meta lines (`\\restrict`, `\\connect`, ...) are left out, `CREATE SCHEMA public` is taken as
  IF NOT EXISTS, owners, grants and default privileges are left out (their roles need not exist
  here), and an extension the server lacks is a warning, not an error.

Either sets the throwaway database's search_path (the source's own, or `public` and the schemas the
file created), so that unqualified names in checks resolve as they do on the application's database.
Errors are one line naming the file and line, or the object; warnings are returned for the caller to
print.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql as q

from worker.fleet.errors import ArgumentError
from worker.fleet.sqltext import statements

_SKIP = re.compile(r"^(ALTER\s+\S+(\s+\S+)*?\s+OWNER\s+TO\s|GRANT\s|REVOKE\s|ALTER\s+DEFAULT\s+PRIVILEGES\s|"
                   r"SECURITY\s+LABEL\s|CREATE\s+(PUBLICATION|SUBSCRIPTION)\s|ALTER\s+(PUBLICATION|SUBSCRIPTION)\s|"
                   r"CREATE\s+EVENT\s+TRIGGER\s|ALTER\s+EVENT\s+TRIGGER\s|COMMENT\s+ON\s+EXTENSION\s)", re.I | re.S)
_CREATE_SCHEMA = re.compile(r"^CREATE\s+SCHEMA\s+(?!IF\s+NOT\s+EXISTS)", re.I)
_EXTENSION = re.compile(r"^CREATE\s+EXTENSION\s", re.I)
_META = re.compile(r"^[ \t]*\\.*$", re.M)
_SERIAL = {"integer": "serial", "bigint": "bigserial", "smallint": "smallserial"}
SYSTEM = ("pg_catalog", "information_schema", "pg_toast", "fleet")  # the fleet's schema is the throwaway's own


@dataclass
class Loaded:
    """What was made: counts per kind, the search_path set, and what could not be made."""
    what: dict[str, int] = field(default_factory=dict)
    search_path: str = ""
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return ", ".join(f"{n} {k}" for k, n in self.what.items() if n) or "nothing"


def conninfo(url: str) -> str:
    """A libpq URL for psycopg from a SQLAlchemy one (postgresql+psycopg:// -> postgresql://)."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url.replace("postgres://", "postgresql://", 1))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _set_search_path(conn: psycopg.Connection, path: str) -> None:
    database = conn.execute("SELECT current_database()").fetchone()[0]
    conn.execute(q.SQL("ALTER DATABASE {} SET search_path TO {}").format(q.Identifier(database), q.SQL(path)))


# -- a script: --schema FILE -----------------------------------------------------------------------
def load_script(path: Path, target: str, option: str = "--schema") -> Loaded:
    """Run the SQL file `path` in the database `target`: load_sql. ArgumentError `option FILE: ...`."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArgumentError(f"{option} {path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return load_sql(text, f"{option} {path}", target)


def load_sql(text: str, name: str, target: str) -> Loaded:
    """Run the SQL script `text` in the database `target`, in one transaction, on a connection of its
    own (a dump's `set_config('search_path', '', false)` ends with it). ArgumentError `name:LINE: error`."""
    loaded = Loaded(what={"statements": 0})
    text = _META.sub("", text)  # psql's meta lines (\restrict KEY, \connect db): not SQL
    with psycopg.connect(conninfo(target), autocommit=True, connect_timeout=10) as conn:
        before = _schemas(conn)
        with conn.transaction():
            for line, stmt in statements(text):
                head = stmt.lstrip()
                if _SKIP.match(head):
                    continue
                if _CREATE_SCHEMA.match(head):
                    stmt = _CREATE_SCHEMA.sub("CREATE SCHEMA IF NOT EXISTS ", head, count=1)
                try:
                    with conn.transaction():
                        conn.execute(stmt.encode())  # bytes: no client-side parameters, `%` as written
                except psycopg.Error as exc:
                    if _EXTENSION.match(head):
                        loaded.warnings.append(f"{name}:{line}: left out: {_first_line(exc)}")
                        continue
                    raise ArgumentError(f"{name}:{line}: {_first_line(exc)}") from None
                loaded.what["statements"] += 1
        conn.execute("RESET search_path")
        made = [s for s in _schemas(conn) if s not in before]
        loaded.search_path = ", ".join(['"$user"', "public", *(q.Identifier(s).as_string(conn) for s in made)])
        _set_search_path(conn, loaded.search_path)
    return loaded


def _schemas(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> ALL(%s) ORDER BY nspname",
        [list(SYSTEM)])]


# -- a database's catalog: --schema-from URL, or DATABASE_URL's ------------------------------------------
# (an extension's own objects are the extension's: CREATE EXTENSION makes them)
_TABLES = """
    SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm', 'f', 'v') AND NOT c.relispartition AND n.nspname = ANY(%s)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') ORDER BY n.nspname, c.relname"""
_COLUMNS = """
    SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
           a.attgenerated, pg_get_expr(d.adbin, d.adrelid)
    FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"""
_TYPES = """
    SELECT n.nspname, t.typname, t.typtype, format_type(t.typbasetype, t.typtypmod),
           ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE t.typtype IN ('e', 'd') AND n.nspname = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')
    ORDER BY t.oid"""
_FUNCTIONS = """
    SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.prokind IN ('f', 'p') AND n.nspname = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') ORDER BY p.oid"""


@dataclass
class Catalog:
    search_path: str
    schemas: list[str]
    extensions: list[str]
    types: list[tuple]
    tables: list[tuple[str, str, str, list[tuple], str | None]]  # schema, name, relkind, columns, primary key
    views: list[tuple[str, str, str]]
    functions: list[tuple[str, str]]


def read_catalog(source: str) -> Catalog:
    """What copy_catalog makes, read from the database `source` (a read-only session: it only reads
    pg_catalog, with an empty search_path so that every name it returns is qualified)."""
    with psycopg.connect(conninfo(source), autocommit=True, connect_timeout=10) as conn:
        search_path = conn.execute("SELECT current_setting('search_path')").fetchone()[0]
        conn.execute("SET search_path = ''")
        schemas = _schemas(conn)
        extensions = [r[0] for r in conn.execute("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY oid")]
        types = conn.execute(_TYPES, [schemas]).fetchall()
        tables, views = [], []
        for oid, schema, name, kind, *_ in conn.execute(_TABLES, [schemas]).fetchall():
            if kind == "v":
                views.append((schema, name, conn.execute("SELECT pg_get_viewdef(%s)", [oid]).fetchone()[0]))
                continue
            pk = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s AND contype = 'p'",
                              [oid]).fetchone()
            tables.append((schema, name, kind, conn.execute(_COLUMNS, [oid]).fetchall(), pk[0] if pk else None))
        functions = conn.execute(_FUNCTIONS, [schemas]).fetchall()
    return Catalog(search_path, schemas, extensions, types, tables, views, functions)


def _column(col: tuple) -> tuple[q.Composable, q.Composable | None]:
    """The column's definition in CREATE TABLE, and its default to set afterwards (None: none, or made here)."""
    name, typ, notnull, identity, generated, default = col
    default_sql = None
    if identity:
        spec = q.SQL("{} {} GENERATED BY DEFAULT AS IDENTITY").format(q.Identifier(name), q.SQL(typ))
    elif default and default.startswith("nextval(") and typ in _SERIAL:  # a serial: its own sequence, OWNED BY it
        spec = q.SQL("{} {}").format(q.Identifier(name), q.SQL(_SERIAL[typ]))
    else:  # a generated column is a plain one here: a rule test's rows may set it
        spec = q.SQL("{} {}").format(q.Identifier(name), q.SQL(typ))
        if default and not generated and not default.startswith("nextval("):
            default_sql = q.SQL(default)
    if notnull and not identity:
        spec = q.SQL("{} NOT NULL").format(spec)
    return spec, default_sql


def copy_catalog(source: str | Catalog, target: str, option: str = "--schema-from") -> Loaded:
    """Make in `target` what read_catalog(source) found (see the module's docstring); an object that
    cannot be made (a type of an extension this server lacks) is a warning naming it."""
    cat = read_catalog(source) if isinstance(source, str) else source
    loaded = Loaded(what={"tables": 0, "views": 0, "functions": 0, "types": 0})
    with psycopg.connect(conninfo(target), autocommit=True, connect_timeout=10) as conn, conn.transaction():
        conn.execute("SET LOCAL check_function_bodies = off")

        def make(what: str, stmt: q.Composable, count: str | None = None) -> bool:
            try:
                with conn.transaction():
                    conn.execute(stmt)
            except psycopg.Error as exc:
                loaded.warnings.append(f"{option}: {what} left out: {_first_line(exc)}")
                return False
            if count:
                loaded.what[count] += 1
            return True

        for s in cat.schemas:
            make(f"schema {s}", q.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(q.Identifier(s)))
        for e in cat.extensions:
            make(f"extension {e}", q.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(q.Identifier(e)))
        for schema, name, kind, base, labels in cat.types:
            ident = q.Identifier(schema, name)
            make(f"type {schema}.{name}", q.SQL("CREATE TYPE {} AS ENUM ({})").format(ident, q.SQL(", ").join(map(q.Literal, labels)))
                 if kind == "e" else q.SQL("CREATE DOMAIN {} AS {}").format(ident, q.SQL(base)), "types")
        defaults = []
        for schema, name, _, columns, pk in cat.tables:
            specs = [_column(c) for c in columns]
            parts = [s for s, _ in specs] + ([q.SQL(pk)] if pk else [])
            if make(f"table {schema}.{name}", q.SQL("CREATE TABLE {} ({})").format(
                    q.Identifier(schema, name), q.SQL(", ").join(parts)), "tables"):
                defaults += [(schema, name, c[0], d) for (_, d), c in zip(specs, columns, strict=True) if d is not None]
        for fname, definition in cat.functions:
            make(f"function {fname}", q.SQL(definition), "functions")
        pending = list(cat.views)
        while pending:  # a view may read another: make what can be made until nothing more can
            left = []
            for schema, name, definition in pending:
                try:
                    with conn.transaction():
                        conn.execute(q.SQL("CREATE VIEW {} AS {}").format(q.Identifier(schema, name), q.SQL(definition)))
                    loaded.what["views"] += 1
                except psycopg.Error as exc:
                    left.append((schema, name, definition, _first_line(exc)))
            if len(left) == len(pending):
                loaded.warnings += [f"{option}: view {s}.{n} left out: {why}" for s, n, _, why in left]
                break
            pending = [v[:3] for v in left]
        for schema, table, column, default in defaults:
            make(f"the default of {schema}.{table}.{column}", q.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
                q.Identifier(schema, table), q.Identifier(column), default))
        loaded.search_path = cat.search_path
        _set_search_path(conn, cat.search_path or "public")
    return loaded
