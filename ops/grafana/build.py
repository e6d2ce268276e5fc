"""Write ops/grafana/*.json: `python -m ops.grafana.build` (tests/ops/test_dashboards.py checks the files are
what this writes). `--check` exits 1, naming the files, when one differs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.grafana import confirmations, ticketing
from ops.grafana.panels import Board, prom

HERE = Path(__file__).resolve().parent


def fleet() -> dict[str, Any]:
    """The fleet's own health (opsfleet_* of worker/watch/metrics.py)."""
    b = Board("opsfleet", "opsfleet", refresh="1m", tags=("fleet",),
              description="The fleet's own health: alerts, notifications, the outbox, check runs, maintenance jobs. "
                          "Variable `target` filters every per-check, per-alert and per-job panel (`fleet`: what "
                          "runs once for the whole fleet); notifications and the outbox are the whole fleet's.")
    b.by_target()
    for title, expr, legend in (
        ("Firing alerts by severity", 'sum by (severity) (opsfleet_alerts{state="firing"})', "{{severity}}"),
        ("Pending alerts by severity", 'sum by (severity) (opsfleet_alerts{state="pending"})', "{{severity}}"),
        ("Notifications (24 h) by status", "sum by (status) (opsfleet_notifications)", "{{status}}"),
        ("Delivery failures by channel and reason", "opsfleet_notification_failures", "{{channel}} {{reason}}"),
        ("Outbox due", "opsfleet_outbox_due", "due"),
        ("Check errors (1 h)", 'sum by (check, target) (opsfleet_check_runs{status="error"}) > 0',
         "{{check}} @{{target}}"),
        ("Seconds since each check ran", "opsfleet_check_last_run_age_seconds", "{{check}} @{{target}}"),
        ("Maintenance: last run duration", "opsfleet_job_last_run_duration_seconds", "{{job}} @{{target}}"),
        ("Check series dropped (over the cap)", "opsfleet_check_series_dropped > 0", "{{check}} @{{target}}"),
        ("Firing check instances", 'sum by (check, target, severity) (opsfleet_check_state{state="firing"}) > 0',
         "{{check}} @{{target}} ({{severity}})"),
    ):
        b.add(prom(title, "timeseries", (expr, legend)), w=12)
    return b.json()


DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "opsfleet-dashboard.json": fleet,
    "confirmations.json": confirmations.dashboard,
    "ticketing-live.json": ticketing.live,
    "ticketing-performance.json": ticketing.performance,
    "ticketing-errors.json": ticketing.errors,
}


def render(build: Callable[[], dict[str, Any]]) -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for name, build in DASHBOARDS.items():
        text, path = render(build), HERE / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"ops/grafana: {', '.join(stale)} differ from ops/grafana/build.py: run python -m ops.grafana.build",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
