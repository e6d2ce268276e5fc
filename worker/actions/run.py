"""Running an approved action: once (store.start lets one run act), on the target's database as its
maintenance role (never the checks' read-only one), its guard re-checked there first; the result or
the refusal recorded. run_job and run_backlog send the task they name."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.actions import store
from worker.actions.catalog import KINDS, GuardFailed
from worker.fleet.db import normalize_url
from worker.fleet.logs import get_logger, mask_text

log = get_logger(__name__)
STATEMENT_TIMEOUT_MS = 600_000  # a VACUUM may take minutes; a terminate or a cancel takes milliseconds


def maintenance_url(cfg: Any, settings: Any, target_key: str) -> str:
    where = next((t for t in cfg.targets.values() if t.key == target_key), None)
    if where is None:
        raise GuardFailed(f"the alert's target {target_key!r} is no longer in the config")
    return where.maintenance_database_url(settings)


def run(action_id: str, *, fleet: Engine, cfg: Any, settings: Any, now: datetime, send_task: Any) -> dict[str, Any]:
    with fleet.begin() as conn:
        row = store.get(conn, action_id)
        if row is None:
            return {"action": action_id, "state": "unknown"}
        if not store.start(conn, action_id, now):
            return {"action": action_id, "state": row.state, "ran": False}  # not approved, or already run
    kind = KINDS[row.kind]
    state, result = "done", ""
    try:
        if kind.enqueues == "maintenance.run":
            sent = send_task("maintenance.run", kwargs={"job": row.params["job"], **_target_kw(cfg, row.target)})
            result = f"sent maintenance.run job={row.params['job']} (task {sent})"
        elif kind.enqueues == "backlog":
            sent = send_task(row.params["task"], kwargs={**(row.params.get("kwargs") or {}), **_target_kw(cfg, row.target)})
            result = f"sent {row.params['task']} (task {sent})"
        else:
            url = sa.make_url(normalize_url(maintenance_url(cfg, settings, row.target))).set(drivername="postgresql")
            with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True, connect_timeout=10,
                                 application_name="opsfleet-action") as conn:
                conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
                result = kind.run(conn, dict(row.labels), dict(row.params))
    except GuardFailed as exc:
        state, result = "refused", str(exc)
    except psycopg.Error as exc:
        state, result = "failed", mask_text(" ".join(str(exc).split())[:1000])
    with fleet.begin() as conn:
        store.finish(conn, action_id, state=state, result=result, at=now)
    log.info("action_finished", action=action_id, kind=row.kind, state=state, result=result)
    return {"action": action_id, "kind": row.kind, "state": state, "result": result}


def _target_kw(cfg: Any, key: str) -> dict[str, str]:
    where = next((t for t in cfg.targets.values() if t.key == key), None)
    return {"target": where.name} if where is not None and where.where else {}
