"""fleet.job_runs and fleet.job_schedule, written here only, and the advisory-lock keys of the whole fleet, in one scheme.

Every advisory lock the fleet takes is `lock_key(space, n)`: what kind of thing is locked (the
space) in the top 16 bits of the bigint, which one (a run id, a transaction id, a name's hash) in the
low 48. Two spaces never share a key, so a maintenance job and a backlog job of the same name, or a
run id and a transaction id, cannot take each other's lock by accident.

A run (maintenance or backlog) is recorded the same way whatever it does (the shape of superset's
report execution log): `start()` takes the job's lock on a connection of its own to the fleet
database (exclusive for a maintenance job: two runs never overlap; shared for a backlog: any number
run at once) and the run's own liveness lock, inserts the `running` row, and closes the rows of runs
whose worker died (their liveness lock is gone with its connection); `Run.heartbeat()` keeps the
figures current; `Run.finish()` records the outcome and lets the locks go. A run that finds its job
busy, and a dry run, are one row that starts and finishes at once (`record()`).

A job of a pack runs once per target that enables it (config/targets.yaml): its runs, its lock and its
schedule are the job's on that target (`target` holds the target's key: "" for the implicit default
target and for what runs once for the whole fleet, so a fleet of one database keeps its rows and locks
where they were, migration 0009).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine


class Space(IntEnum):
    """What an advisory lock locks (the key's top 16 bits)."""

    MIGRATIONS = 1  # `opsfleet db upgrade`, one at a time
    SAMPLE_APP = 2  # the sample application's schema, created once at a time
    MAINTENANCE_JOB = 3  # a maintenance job, by name: one run at a time
    BACKLOG_JOB = 4  # a backlog, by name: shared by its runs
    RUN = 5  # a run in progress, by its job_runs id: held while its worker lives
    CONFIRMATION_GROUP = 6  # confirmation emails being sent, by the transaction id that made them pending


FAMILIES = {"maintenance": Space.MAINTENANCE_JOB, "backlog": Space.BACKLOG_JOB}
_LOW = 48


def lock_key(space: Space, n: int) -> int:
    """The bigint pg_advisory_lock key of thing `n` in `space`."""
    if not 0 <= n < 1 << _LOW:
        raise ValueError(f"lock id {n} out of range for {space.name}")
    return (int(space) << _LOW) | n


def name_key(space: Space, name: str) -> int:
    """The lock key of a named thing (48 bits of its sha256)."""
    return lock_key(space, int.from_bytes(hashlib.sha256(name.encode()).digest()[:6], "big"))


def job_key(family: str, job: str, target: str = "") -> int:
    """The lock of `job` on `target` (its key): the same job on two targets never waits for the other."""
    return name_key(FAMILIES[family], f"{job}@{target}" if target else job)


@dataclass(frozen=True)
class Place:
    """Where beat runs a job (FleetConfig.scheduled_maintenance / scheduled_backlogs): the target its
    runs are given (None: the job has one target and needs none, as before targets) and that target's
    key in the fleet's state ("": the implicit default, or the fleet itself)."""

    target: str | None = None
    key: str = ""

    @property
    def suffix(self) -> str:
        """What a beat entry's name ends with: `@target`, or nothing (the names of before)."""
        return f"@{self.target}" if self.target else ""

    def kwargs(self) -> dict[str, str]:
        return {"target": self.target} if self.target else {}


class Busy(Exception):
    """Another run holds the job's exclusive lock; this one was recorded as skipped."""

    def __init__(self, run_id: int) -> None:
        super().__init__("another run of this job is in progress")
        self.run_id = run_id


@dataclass
class Run:
    id: int
    job: str
    conn: Connection  # holds the job's and the run's locks while the run lives

    def heartbeat(self, rows: int, batches: int) -> None:
        self.conn.execute(sa.text("UPDATE fleet.job_runs SET rows_affected = :r, batches = :b WHERE id = :id"),
                          {"r": rows, "b": batches, "id": self.id})
        self.conn.commit()

    def abandon(self) -> None:
        """The run ends without a record (the process is going away): its session and locks end with
        it, and the next run closes its row as lost, as after a kill."""
        _drop(self.conn)

    def finish(self, status: str, *, rows: int, batches: int, error: str | None = None,
               extra: dict[str, Any] | None = None) -> None:
        """Record the outcome (`extra` is merged into the row's params) and let the locks go."""
        try:
            self.conn.rollback()  # (a failed statement of the run's own must not block the record)
            self.conn.execute(sa.text(
                """UPDATE fleet.job_runs SET finished_at = now(), rows_affected = :r, batches = :b, status = :s,
                          error = :e, params = params || CAST(:extra AS jsonb) WHERE id = :id"""),
                {"r": rows, "b": batches, "s": status, "e": error, "id": self.id,
                 "extra": json.dumps(extra or {}, default=str)})
            self.conn.commit()
            self.conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
            self.conn.commit()
        except BaseException:
            _drop(self.conn)  # the session ends, and its locks with it
            raise
        self.conn.close()


def start(fleet: Engine, *, family: str, job: str, kind: str, params: dict[str, Any], task_id: str | None,
          exclusive: bool, target: str = "") -> Run:
    """Begin a recorded run of `job` on `target` (a key; see the module docstring). Raises Busy when
    `exclusive` and another run holds the job on that target."""
    conn = fleet.connect()
    try:
        fn = "pg_try_advisory_lock" if exclusive else "pg_try_advisory_lock_shared"
        got = conn.execute(sa.text(f"SELECT {fn}(:k)"), {"k": job_key(family, job, target)}).scalar()
        conn.commit()
        if not got:
            conn.close()
            raise Busy(record(fleet, job=job, kind=kind, status="skipped", params=params, task_id=task_id,
                              error="another run of this job is in progress", target=target))
        run_id = conn.execute(sa.text("SELECT nextval(pg_get_serial_sequence('fleet.job_runs', 'id'))")).scalar()
        # the liveness lock is taken before the row exists, so no one ever sees the row without it
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(Space.RUN, run_id)})
        conn.execute(sa.text(
            """INSERT INTO fleet.job_runs (id, job, target, kind, started_at, status, params, task_id)
               VALUES (:id, :j, :tg, :k, now(), 'running', CAST(:p AS jsonb), :t)"""),
            {"id": run_id, "j": job, "tg": target, "k": kind, "p": json.dumps(params, default=str), "t": task_id})
        conn.commit()
        close_orphaned(conn)
    except Busy:
        raise
    except BaseException:
        _drop(conn)
        raise
    return Run(run_id, job, conn)


def _drop(conn: Connection) -> None:
    """Close the connection's session for good (not back to the pool, which would keep its locks)."""
    try:
        conn.invalidate()
    finally:
        conn.close()


def record(fleet: Engine, *, job: str, kind: str, status: str, params: dict[str, Any], task_id: str | None,
           error: str | None = None, target: str = "") -> int:
    """A run that starts and finishes at once (skipped, dry run); its id."""
    with fleet.begin() as conn:
        return conn.execute(sa.text(
            """INSERT INTO fleet.job_runs (job, target, kind, started_at, finished_at, status, error, params, task_id)
               VALUES (:j, :tg, :k, now(), now(), :s, :e, CAST(:p AS jsonb), :t) RETURNING id"""),
            {"j": job, "tg": target, "k": kind, "s": status, "e": error, "p": json.dumps(params, default=str),
             "t": task_id}).scalar()


def _live(conn: Connection) -> set[int]:
    """Advisory lock keys held in this database (a bigint key shows as classid, objid)."""
    return set(conn.execute(sa.text(
        """SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks
           WHERE locktype = 'advisory' AND objsubid = 1 AND granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""")).scalars())


def close_orphaned(conn: Connection) -> int:
    """Runs still `running` whose liveness lock is free (their worker is gone) become errors."""
    live = _live(conn)
    running = conn.execute(sa.text("SELECT id FROM fleet.job_runs WHERE status = 'running'")).scalars().all()
    dead = [i for i in running if lock_key(Space.RUN, i) not in live]
    if dead:
        conn.execute(sa.text("""UPDATE fleet.job_runs SET status = 'error', finished_at = now(),
                                error = 'worker lost before the run finished' WHERE id = ANY(:ids)"""), {"ids": dead})
    conn.commit()
    return len(dead)


def running(fleet: Engine, kind: str, target: str | None = None) -> list[dict[str, Any]]:
    """The runs of `kind` in progress (on `target`, a key, if given), oldest first, each with whether
    its worker is alive."""
    with fleet.connect() as conn:
        live = _live(conn)
        runs = [dict(m) for m in conn.execute(sa.text(
            """SELECT id, job, target, status, started_at, rows_affected, batches, task_id, params
               FROM fleet.job_runs WHERE kind = :k AND status = 'running'
                 AND (CAST(:tg AS text) IS NULL OR target = :tg) ORDER BY started_at"""),
            {"k": kind, "tg": target}).mappings()]
    for run in runs:
        run["alive"] = lock_key(Space.RUN, run["id"]) in live
    return runs


def last_finished(fleet: Engine, kind: str, target: str | None = None) -> list[dict[str, Any]]:
    """The last finished run of each (job, target) of `kind` (on `target`, a key, if given)."""
    with fleet.connect() as conn:
        return [dict(m) for m in conn.execute(sa.text(
            """SELECT DISTINCT ON (job, target) id, job, target, status, started_at, finished_at, rows_affected,
                      batches, error
               FROM fleet.job_runs WHERE kind = :k AND status <> 'running'
                 AND (CAST(:tg AS text) IS NULL OR target = :tg) ORDER BY job, target, started_at DESC"""),
            {"k": kind, "tg": target}).mappings()]


def last_by_job(fleet: Engine) -> dict[tuple[str, str], dict[str, Any]]:
    """Each job's latest run on each target (any status but dry_run), by (job, target key)."""
    with fleet.connect() as conn:
        return {(m["job"], m["target"]): dict(m) for m in conn.execute(sa.text(
            """SELECT DISTINCT ON (job, target) id, job, target, kind, status, started_at, finished_at, rows_affected,
                      batches, error
               FROM fleet.job_runs WHERE status <> 'dry_run' ORDER BY job, target, started_at DESC""")).mappings()}


# -- job_schedule ----------------------------------------------------------------------------------------
def record_schedule(conn: Connection, jobs: list[dict[str, Any]], now: datetime) -> None:
    """The maintenance jobs and backlogs a beat schedules (`scheduled_jobs` of each domain's spec) in
    fleet.job_schedule, replacing what was there: `maintenance_job_health` compares each job's last
    run with it (a job that is late, or never ran since the beat started), on each target (a row's
    `target`, a key; "" when it has none)."""
    conn.execute(sa.text("DELETE FROM fleet.job_schedule"))
    if jobs:
        conn.execute(sa.text("""INSERT INTO fleet.job_schedule (family, job, target, queue, longest_gap_s, enabled,
                                                                recorded_at)
                                VALUES (:family, :job, :target, :queue, :longest_gap_s, :enabled, :at)"""),
                     [{"target": "", **j, "at": now} for j in jobs])
