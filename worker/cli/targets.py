"""`opsfleet targets`: the databases the fleet watches (config/targets.yaml, or DATABASE_URL alone)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from worker.cli.common import console, emit_json, settings, table

targets_app = typer.Typer(no_args_is_help=True, help="The databases the fleet watches (config/targets.yaml).")

TARGET_FIELDS = {"name": "the target's name (the `target` label)",
                 "reachable": "whether its database answered a connection just now",
                 "error": "why not, when it did not (one line, no secret)",
                 "packs": "the packs it runs",
                 "checks": "how many checks run on it",
                 "firing": "its alerts firing now",
                 "last_run": "its latest check run (ISO 8601), or null"}


def _probe(url: str, timeout: float) -> tuple[bool, str | None]:
    import psycopg

    from worker.fleet.db import normalize_url
    from worker.fleet.logs import mask_text

    dsn = normalize_url(url).replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, int(timeout)), application_name="opsfleet-targets") as conn:
            conn.execute("SELECT 1")
        return True, None
    except psycopg.Error as exc:
        return False, mask_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


@targets_app.command("list")
def list_targets(json_out: Annotated[bool, typer.Option("--json", help="a JSON list, one object per target: "
                                                        + ", ".join(TARGET_FIELDS))] = False,
                 timeout: Annotated[float, typer.Option(min=1, max=30, help="seconds to wait for each database")] = 3.0,
                 ) -> None:
    """Each target: reachable or not, its packs, how many checks run on it, its firing alerts, its last run."""
    import sqlalchemy as sa

    from worker.config import get_config
    from worker.fleet.db import fleet_engine

    s = settings()
    cfg = get_config()
    per_target: dict[str, int] = {}
    for name in cfg.checks:
        for t in cfg.targets_of(name):
            if t:
                per_target[t] = per_target.get(t, 0) + 1
    firing: dict[str, int] = {}
    last: dict[str, Any] = {}
    with fleet_engine().connect() as conn:
        for r in conn.execute(sa.text("SELECT target, count(*) AS n FROM fleet.alerts WHERE state = 'firing' "
                                      "GROUP BY target")):
            firing[r.target] = r.n
        for r in conn.execute(sa.text("SELECT target, max(started_at) AS at FROM fleet.check_runs GROUP BY target")):
            last[r.target] = r.at
    out = []
    for t in cfg.targets.values():
        ok, error = _probe(t.database_url(s), timeout)
        out.append({"name": t.name, "reachable": ok, "error": error, "packs": list(t.packs),
                    "checks": per_target.get(t.name, 0), "firing": firing.get(t.key, 0),
                    "last_run": last.get(t.key)})
    if json_out:
        emit_json(out)
        return
    tab = table("target", "reachable", "packs", "checks", "firing", "last run")
    for o in out:
        tab.add_row(o["name"], "yes" if o["reachable"] else f"no: {o['error']}", ", ".join(o["packs"]),
                    str(o["checks"]), str(o["firing"]), o["last_run"].isoformat(timespec="seconds") if o["last_run"] else "-")
    console.print(tab)
