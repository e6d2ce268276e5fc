"""SQLAlchemy engines for the monitored database and the fleet's state database."""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
import weakref
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.psycopg import dialect as _psycopg_dialect
from sqlalchemy.engine import Engine, make_url

from worker.fleet.errors import ServiceUnavailable
from worker.fleet.settings import get_settings
from worker.fleet.stale import once_more_if_stale

POOL_RECYCLE_S = 1800  # a pooled (or kept) connection older than this is closed and replaced
# No named prepared statements (psycopg's default prepares a statement at its 6th run on a connection):
# behind a transaction pooler (PgBouncer pool_mode=transaction, Supabase's pooler) a server connection
# serves many clients one transaction at a time, so a statement one client prepared meets the next
# client ("prepared statement "_pg3_1" already exists") or is missing where it runs next. Every
# connection to a monitored database takes this; the fleet database's too with FLEET_DATABASE_POOLED
# (fleet_engine: there prepared statements save measurable server CPU per check run, bench/RESULTS.md).
# tests/reliability/test_transaction_pooler.py.
NO_PREPARED: dict[str, Any] = {"prepare_threshold": None}


def normalize_url(url: str) -> str:
    """postgresql:// or postgres:// -> postgresql+psycopg:// (psycopg 3)."""
    u = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return make_url(normalize_url(url)).render_as_string(hide_password=True)


def create(url: str, *, application_name: str = "opsfleet", pool_size: int = 5, pre_ping: bool = True,
           prepared: bool = False, **options: Any) -> Engine:
    """An engine with the fleet's pool settings (`options`: more sqlalchemy.create_engine arguments);
    `prepared`: let psycopg prepare repeated statements (not through a transaction pooler: NO_PREPARED)."""
    engine = sa.create_engine(
        normalize_url(url),
        pool_pre_ping=pre_ping,
        pool_size=pool_size,
        max_overflow=5,
        pool_recycle=POOL_RECYCLE_S,
        connect_args={**({} if prepared else NO_PREPARED), "application_name": application_name, "connect_timeout": 5},
        **options,
    )
    _ENGINES.add(engine)
    return engine


@lru_cache(maxsize=1)
def monitored_engine() -> Engine:
    """The monitored database as DATABASE_URL's role, for what only reads it (the digest, the reports,
    the CLI's status; checks: checks_engine)."""
    return create(get_settings().require_database_url(), application_name="opsfleet")


@lru_cache(maxsize=1)
def maintenance_engine() -> Engine:
    """The monitored database as MAINTENANCE_DATABASE_URL's role (default DATABASE_URL), for what writes
    to it: maintenance jobs, backlogs, the system_alerts channel."""
    return create(get_settings().require_maintenance_database_url(), application_name="opsfleet-maintenance")


_maintenance_engines: dict[str, Engine] = {}


def maintenance_engine_at(url: str | None) -> Engine:
    """A target's database as its maintenance role (Target.maintenance_database_url): one engine per
    URL per process; None is maintenance_engine() (MAINTENANCE_DATABASE_URL, the implicit target)."""
    if url is None:
        return maintenance_engine()
    engine = _maintenance_engines.get(url)
    if engine is None:
        engine = _maintenance_engines.setdefault(url, create(url, application_name="opsfleet-maintenance"))
    return engine


_ROLE = sa.text("""
    SELECT current_user AS role, r.rolsuper AS superuser,
           (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'fleet')
              AND n.nspname NOT LIKE 'pg_toast%'
              AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')) AS writable
    FROM pg_roles r WHERE r.rolname = current_user""")


def checks_role_warnings(engine: Engine) -> list[str]:
    """What is wrong with the role checks run as (DATABASE_URL): a superuser, or one that may write the
    application's tables. A READ ONLY transaction does not stop pg_terminate_backend, advisory locks,
    large objects or dblink; only a role that cannot do harm does."""
    with engine.connect() as conn:
        r = conn.execute(_ROLE).one()
    out = []
    if r.superuser:
        out.append(f"checks run as {r.role}, a superuser (DATABASE_URL): a query could still signal backends or "
                   "write through dblink; give DATABASE_URL a monitoring role (README, Least privilege) and "
                   "MAINTENANCE_DATABASE_URL the role that writes")
    elif r.writable:
        out.append(f"checks run as {r.role} (DATABASE_URL), which may write {r.writable} table(s) of the application: "
                   "give DATABASE_URL a read-only monitoring role (README, Least privilege) and "
                   "MAINTENANCE_DATABASE_URL the role that writes")
    return out


@lru_cache(maxsize=1)
def fleet_engine() -> Engine:
    settings = get_settings()
    return create(settings.require_fleet_database_url(), application_name="opsfleet",
                  prepared=not settings.fleet_database_pooled)


@lru_cache(maxsize=1)
def hot_fleet_engine() -> Engine:
    """The fleet database for the hot paths' short transactions, the check runs'
    (worker.checks.engine.run_check) and the deliveries' (worker.notify.delivery.deliver): fleet_engine()'s
    settings without the pre-ping at every checkout (BEGIN, SELECT 1 and ROLLBACK: three round trips,
    nine of a delivery's 22). Each retries once when a transaction meets a connection that died while
    idle (a restart), which is all the ping guards against: that transaction wrote nothing, and the
    slot's claim, the row's lease and the idempotent marks make the retry safe."""
    settings = get_settings()
    return create(settings.require_fleet_database_url(), application_name="opsfleet", pre_ping=False,
                  prepared=not settings.fleet_database_pooled)


def fleet_now(engine: Engine | None = None) -> datetime:
    """The fleet's clock: the fleet database's `clock_timestamp()`, the one clock every worker and beat
    shares. Tasks take `now` from it, not from their host, so a worker whose clock runs ahead or
    jumps neither sends a retry before its Retry-After, nor takes another worker's lease early, nor
    evaluates a slot that has not begun (tests/reliability/test_clock_skew.py)."""
    return once_more_if_stale(_clock, engine or fleet_engine())


def _clock(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(_CLOCK).scalar_one().astimezone(UTC)


_CLOCK = sa.text("SELECT clock_timestamp()")


def create_for_checks(url: str, *, application_name: str = "opsfleet-checks", pool_size: int = 5) -> Engine:
    """An engine only for read_only_query (the sql checks), whose per-check cost is all fixed overhead:
    each thread keeps one pool connection from check to check; autocommit connections (read_only_query
    sends its own BEGIN READ ONLY with the timeouts, so the connection is never switched back and forth);
    no pre-ping (collect_sql retries once on a connection that went away); no reset on return
    (read_only_query ends every use with ROLLBACK, or invalidates a broken connection). Not for
    Connection.begin(): every statement would commit on its own."""
    engine = create(url, application_name=application_name, pool_size=pool_size, pre_ping=False,
                    isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
    kept = _KEPT[engine] = _Kept(recycle=POOL_RECYCLE_S)
    sa.event.listen(engine, "engine_disposed", lambda _engine: kept.close())
    weakref.finalize(engine, kept.close)
    return engine


_checks_engines: dict[str, Engine] = {}


def checks_engine(database: str = "monitored", *, url: str | None = None) -> Engine:
    """Where the sql checks of `database` (a check's `database:` field: monitored | fleet) run, or, with
    `url`, those of a target (config/targets.yaml): one engine per database URL per process."""
    key = url or database
    engine = _checks_engines.get(key)
    if engine is None:  # (two threads racing here both get the engine that setdefault kept)
        settings = get_settings()
        if url is None:
            url = settings.require_fleet_database_url() if database == "fleet" else settings.require_database_url()
        engine = _checks_engines.setdefault(key, create_for_checks(url))
    return engine


def kept_connections_cap() -> int:
    """OPSFLEET_CHECK_CONNECTIONS: how many check connections one worker thread keeps open across
    databases (a prefork child has one thread: per worker process). Past it, the connection used
    least recently is closed before another database's is opened, so each monitored server sees at
    most this many from a worker process, whatever the number of targets; a target whose connection
    was closed pays one connect at its next check. Default 10."""
    raw = os.environ.get("OPSFLEET_CHECK_CONNECTIONS", "").strip()
    try:
        return max(1, int(raw)) if raw else 10
    except ValueError:
        return 10


def ping(engine: Engine, what: str) -> None:
    """Raise ServiceUnavailable with one clear line when the database cannot be reached."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ServiceUnavailable(
            f"cannot reach {what} at {engine.url.render_as_string(hide_password=True)}: {reason} "
            "(is Postgres running, and is the URL right?)"
        ) from None


class ConnectionLost(Exception):
    """The pooled connection broke under a query (a restart, a terminated backend); retry on a new one."""


_DIALECT = _psycopg_dialect()


@lru_cache(maxsize=1024)
def psycopg_text(query: str) -> tuple[str, tuple[str, ...]]:
    """A text() query (`:name` binds, `::` casts, literal `%`) as psycopg sends it, and its bind names.

    SQLAlchemy's own compilation, so the query means what it means through text(); cached per text.
    """
    compiled = sa.text(query).compile(dialect=_DIALECT)
    return str(compiled), tuple(compiled.params)


class _OneSyncPipeline(psycopg.Pipeline):
    """psycopg's pipeline, closed by its Sync alone. psycopg's own exit sends a Flush after that Sync
    whenever the results have not all arrived yet; Postgres answers a Flush with no ReadyForQuery, so
    a transaction pooler (PgBouncer 1.18) that had already released the server on the Sync's answer
    links the server to this client again on the Flush and holds it there until the client's next
    Sync: every other client of a small pool waits (until query_wait_timeout). After the Sync, the
    results come anyway: they are read without asking for a flush."""

    def _exit_gen(self):  # noqa: ANN202 (psycopg's generator type)
        try:
            self._enqueue_sync()
            yield from self._communicate_gen()
        finally:
            yield from self._fetch_gen(flush=False)


@contextlib.contextmanager
def one_sync_pipeline(conn: psycopg.Connection):
    """`conn.pipeline()` (psycopg 3.3's, whose internals this mirrors), closed by _OneSyncPipeline."""
    with conn.lock:
        conn._check_connection_ok()  # noqa: SLF001
        assert conn._pipeline is None, "no pipeline is open on a checks connection"  # noqa: SLF001, S101
        pipeline = conn._pipeline = _OneSyncPipeline(conn)  # noqa: SLF001
    try:
        with pipeline:
            yield pipeline
    finally:
        with conn.lock:
            conn._pipeline = None  # noqa: SLF001


_TIMEOUTS = ("SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true), "
             "set_config('plan_cache_mode', 'force_custom_plan', true)")  # SET LOCAL, as one statement


def read_only_query(engine: Engine, query: str, params: dict[str, Any], *, statement_timeout_ms: int,
                    lock_timeout_ms: int = 2000) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The checks' query path: `query` (psycopg's %(name)s placeholders, see psycopg_text) in a READ ONLY
    transaction with statement and lock timeouts, always rolled back; (column names, rows).

    One round trip: BEGIN READ ONLY, the timeouts (set_config(..., is_local)), the query and ROLLBACK
    go in one pipeline, answered at its one Sync, with nothing after it (_OneSyncPipeline: a
    transaction pooler keeps a server for a client until its last message's answer) (a failed statement skips the rest: the ROLLBACK is
    then sent on its own). Every statement goes through the extended protocol, which takes exactly
    one statement, so a query cannot end the read-only transaction (`...; COMMIT; DELETE ...`), as the
    unnamed statement: psycopg sends a query without parameters as a simple Query (any number of
    statements) unless in pipeline mode, hence the pipeline; and no named statement, which a
    transaction pooler would leave on a server connection another client gets next (NO_PREPARED).
    Planned afresh each time (force_custom_plan, as a prepared statement would be). On a create_for_checks() engine each thread keeps its
    pool connection from one check to the next (no checkout per check); on any other engine it is
    checked out and back. A connection that broke is invalidated and ConnectionLost raised; any other
    error propagates as psycopg's.
    """
    kept = _KEPT.get(engine)
    fairy = kept.connection(engine) if kept is not None else engine.raw_connection()
    conn: psycopg.Connection = fairy.driver_connection
    switch = not conn.autocommit  # a create_for_checks() engine's connections already are
    try:
        if switch:
            conn.autocommit = True  # we send BEGIN ourselves, together with the settings
        try:
            cur, control = conn.cursor(), conn.cursor()
            with one_sync_pipeline(conn):  # the extended protocol even without parameters: one statement only
                control.execute("BEGIN READ ONLY", prepare=False)
                control.execute(_TIMEOUTS, (str(int(statement_timeout_ms)), str(int(lock_timeout_ms))), prepare=False)
                cur.execute(query, params, prepare=False)
                control.execute("ROLLBACK", prepare=False)
            description = cur.description
            if description is None:
                return [], []
            return [c.name for c in description], cur.fetchall()
        finally:
            if not conn.broken:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.pgconn.exec_(b"ROLLBACK")  # the pipeline stopped at a failed statement
                if switch:
                    conn.autocommit = False
    except psycopg.OperationalError as exc:
        if conn.broken:
            if kept is not None:
                kept.forget()
            fairy.invalidate(exc)
            raise ConnectionLost(str(exc).strip().splitlines()[0] if str(exc).strip() else "connection lost") from exc
        raise
    finally:
        if kept is None:
            fairy.close()


class _Kept:
    """The pool connection each thread keeps for its checks, on one create_for_checks() engine.

    Handed back to the pool (which closes it) once older than the pool's recycle time, invalidated when
    it breaks or the engine is disposed, forgotten (not touched: the parent owns it) in a forked child.
    """

    def __init__(self, recycle: float) -> None:
        self.recycle = recycle
        self.by_thread: dict[int, tuple[Any, float]] = {}  # thread id -> (pooled connection, since)

    def connection(self, engine: Engine) -> Any:
        key = threading.get_ident()
        _mark_used(self)
        held = self.by_thread.get(key)
        if held is not None:
            if time.monotonic() - held[1] < self.recycle:
                return held[0]
            self.forget()
            held[0].close()
        fairy = engine.raw_connection()
        self.by_thread[key] = (fairy, time.monotonic())
        return fairy

    def drop(self) -> None:
        """Close this thread's kept connection for good (the cap across databases was reached)."""
        held = self.by_thread.pop(threading.get_ident(), None)
        if held is not None:
            with contextlib.suppress(Exception):
                held[0].invalidate()  # closed, not handed back to an idle pool that would keep it open

    def forget(self) -> None:
        self.by_thread.pop(threading.get_ident(), None)

    def close(self) -> None:
        while self.by_thread:
            _, (fairy, _) = self.by_thread.popitem()
            with contextlib.suppress(Exception):
                fairy.invalidate()  # (another thread may be using it: it gets ConnectionLost and retries)


_KEPT: weakref.WeakKeyDictionary[Engine, _Kept] = weakref.WeakKeyDictionary()
_RECENT = threading.local()  # per thread: the _Kept it used, least recently first


def _mark_used(kept: _Kept) -> None:
    """`kept` is this thread's most recent database; past the cap, the least recent one's connection
    is closed (only this thread's: another thread's may be in use)."""
    order = getattr(_RECENT, "order", None)
    if order is None:
        order = _RECENT.order = collections.OrderedDict()
    order[id(kept)] = weakref.ref(kept)
    order.move_to_end(id(kept))
    cap = kept_connections_cap()
    while len(order) > cap:
        _, ref = order.popitem(last=False)
        victim = ref()
        if victim is not None:
            victim.drop()


_INHERITED: list[Any] = []  # a forked child's copies of its parent's kept connections: never used, never closed
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()  # every engine made here, for the fork hook


def _forget_in_child() -> None:
    """After a fork (Celery's prefork pool): the parent's connections are the parent's. Dropping the
    kept copies would check them in, and the child's next checkout would share the parent's socket;
    closing them would end the parent's sessions. So they are kept aside untouched, and every engine
    gets a new, empty pool (SQLAlchemy's recipe: dispose(close=False) in the child)."""
    for kept in list(_KEPT.values()):
        _INHERITED.extend(fairy for fairy, _ in kept.by_thread.values())
        kept.by_thread.clear()
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_in_child)
