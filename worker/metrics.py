"""Prometheus metrics for the fleet itself, and the application's figures its checks measure, read
from the fleet's state on each scrape.

Postgres is the source of truth, so the exporter is one small process (`opsfleet metrics`) instead
of per-worker counters that a prefork pool would scatter. Labels come from fixed sets (severity,
state, status, channel, reason) or from config (check and job names), never from alert text; the
failure series are pre-created at zero so dashboards show zeros, not gaps.

The checks' figures (opsfleet_check_value, opsfleet_check_state) carry `check`, `severity` and only the
label columns a check names in `export_labels`; a series is the instances that share those values:
- opsfleet_check_state{..., state} counts them per state (inactive, pending, firing, resolved; all
  four present for each series): 1/0 when export_labels tell the instances apart, and for a check
  without export_labels one series per check (pre-created at zero) whose counts sum honestly.
- opsfleet_check_value is the last value recorded, published only where the series is one instance:
  values such as rates cannot be summed or averaged, so a check with several instances and no
  export_labels (or export_labels that do not tell them apart) publishes its states but no value.
At most SERIES_PER_CHECK series per check, firing and pending instances first, then the most
recently evaluated; the instances of the series beyond that are counted in
opsfleet_check_series_dropped{check}.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from worker.channels.base import REASONS
from worker.config import FleetConfig
from worker.fleet.fields import SEVERITIES

ALERT_STATES = ("pending", "firing")
NOTIFY_STATUSES = ("pending", "sending", "retrying", "sent", "dead", "suppressed")
RUN_STATUSES = ("ok", "no_data", "error")
CHECK_STATES = ("inactive", "pending", "firing", "resolved")
SERIES_PER_CHECK = 50


class FleetCollector(Collector):
    def __init__(self, fleet: Engine, cfg: FleetConfig, *, series_per_check: int = SERIES_PER_CHECK) -> None:
        self.fleet, self.cfg, self.series_per_check = fleet, cfg, series_per_check
        self.channels = sorted(cfg.routing.channels) if cfg.routing else []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.fleet.connect() as conn:
            alerts = {(r.state, r.severity): r.n for r in conn.execute(sa.text(
                "SELECT state, severity, count(*) AS n FROM fleet.alerts GROUP BY 1, 2"))}
            notes = {(r.channel, r.status): r.n for r in conn.execute(sa.text(
                "SELECT channel, status, count(*) AS n FROM fleet.notifications "
                "WHERE created_at > now() - interval '24 hours' GROUP BY 1, 2"))}
            failures = {(r.channel, r.reason): r.n for r in conn.execute(sa.text(
                "SELECT channel, split_part(last_error, ':', 1) AS reason, count(*) AS n FROM fleet.notifications "
                "WHERE last_error IS NOT NULL AND created_at > now() - interval '24 hours' GROUP BY 1, 2"))}
            due = conn.execute(sa.text(
                "SELECT count(*) FROM fleet.notifications WHERE status IN ('pending', 'retrying') "
                "AND next_attempt_at <= now()")).scalar()
            runs = {(r.check_name, r.status): r.n for r in conn.execute(sa.text(
                "SELECT check_name, status, count(*) AS n FROM fleet.check_runs "
                "WHERE started_at > now() - interval '1 hour' GROUP BY 1, 2"))}
            last_run = {r.check_name: r.age for r in conn.execute(sa.text(
                "SELECT check_name, extract(epoch FROM now() - max(started_at)) AS age FROM fleet.check_runs "
                "GROUP BY 1"))}
            jobs = {r.job: r for r in conn.execute(sa.text(
                "SELECT DISTINCT ON (job) job, status, extract(epoch FROM finished_at - started_at) AS secs, "
                "extract(epoch FROM now() - started_at) AS age FROM fleet.job_runs ORDER BY job, started_at DESC"))}
            instances = conn.execute(sa.text(
                "SELECT check_name, state, labels, last_value FROM fleet.alerts ORDER BY check_name, "
                "CASE state WHEN 'firing' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, last_eval_at DESC, fingerprint"
            )).all()

        g = GaugeMetricFamily("opsfleet_alerts", "Alert instances by state and severity", labels=["state", "severity"])
        for state in ALERT_STATES:
            for sev in SEVERITIES:
                g.add_metric([state, sev], alerts.get((state, sev), 0))
        yield g
        g = GaugeMetricFamily("opsfleet_notifications", "Notifications created in the last 24 h by channel and status",
                              labels=["channel", "status"])
        for ch in self.channels:
            for st in NOTIFY_STATUSES:
                g.add_metric([ch, st], notes.get((ch, st), 0))
        yield g
        g = GaugeMetricFamily("opsfleet_notification_failures", "Notifications of the last 24 h whose last attempt "
                              "failed, by channel and reason", labels=["channel", "reason"])
        for ch in self.channels:
            for reason in (*REASONS, "throttled"):
                g.add_metric([ch, reason], failures.get((ch, reason), 0))
        yield g
        yield GaugeMetricFamily("opsfleet_outbox_due", "Outbox rows due and not yet delivered", value=due)
        g = GaugeMetricFamily("opsfleet_check_runs", "Check runs in the last hour by status", labels=["check", "status"])
        for name in sorted(self.cfg.checks):
            for st in RUN_STATUSES:
                g.add_metric([name, st], runs.get((name, st), 0))
        yield g
        g = GaugeMetricFamily("opsfleet_check_last_run_age_seconds", "Seconds since each check last ran",
                              labels=["check"])
        for name, age in sorted(last_run.items()):
            if name in self.cfg.checks:
                g.add_metric([name], float(age))
        yield g
        g = GaugeMetricFamily("opsfleet_check_interval_seconds", "Longest time between two scheduled runs of each "
                              "enabled check (OpsfleetCheckNotRunning compares the last run's age with it)",
                              labels=["check"])
        for name, check in sorted(self.cfg.checks.items()):
            if check.enabled:
                g.add_metric([name], check.schedule.longest_gap().total_seconds())
        yield g
        g = GaugeMetricFamily("opsfleet_job_last_run_ok", "1 if the job's last run succeeded", labels=["job"])
        d = GaugeMetricFamily("opsfleet_job_last_run_duration_seconds", "Duration of the job's last run", labels=["job"])
        a = GaugeMetricFamily("opsfleet_job_last_run_age_seconds", "Seconds since the job's last run started", labels=["job"])
        for job in sorted(self.cfg.maintenance):
            r = jobs.get(job)
            g.add_metric([job], 1 if r is not None and r.status == "ok" else 0)
            if r is not None:
                d.add_metric([job], float(r.secs or 0))
                a.add_metric([job], float(r.age))
        yield g
        yield d
        yield a
        yield from self._check_figures(instances)

    def _check_figures(self, instances: Sequence[Any]) -> Iterator[Metric]:
        """opsfleet_check_value, opsfleet_check_state, opsfleet_check_series_dropped (module docstring)."""
        value = Metric("opsfleet_check_value", "Each check's last value per instance (the series of its "
                       "export_labels that hold one instance)", "gauge")
        state = Metric("opsfleet_check_state", "Instances of each check in each state, by its export_labels",
                       "gauge")
        dropped = GaugeMetricFamily("opsfleet_check_series_dropped", "Instances left off opsfleet_check_value "
                                    "and opsfleet_check_state: their check's series are over the cap",
                                    labels=["check"])
        by_check: dict[str, list[Any]] = {}
        for r in instances:
            by_check.setdefault(r.check_name, []).append(r)
        for name, check in sorted(self.cfg.checks.items()):
            if not check.enabled:
                continue
            series: dict[tuple[str, ...], tuple[Counter[str], list[float | None]]] = {}
            if not check.export_labels:
                series[()] = (Counter(), [])  # pre-created: one series per check, zeros until it has instances
            lost = 0
            for r in by_check.get(name, []):
                key = tuple(str(r.labels.get(k, "")) for k in check.export_labels)
                if key not in series:
                    if len(series) >= self.series_per_check:
                        lost += 1
                        continue
                    series[key] = (Counter(), [])
                series[key][0][r.state] += 1
                series[key][1].append(r.last_value)
            for key, (states, values) in series.items():
                labels = {"check": name, "severity": check.severity, **dict(zip(check.export_labels, key, strict=True))}
                for st in CHECK_STATES:
                    state.add_sample("opsfleet_check_state", {**labels, "state": st}, states.get(st, 0))
                if len(values) == 1 and values[0] is not None:
                    value.add_sample("opsfleet_check_value", labels, float(values[0]))
            dropped.add_metric([name], lost)
        yield value
        yield state
        yield dropped
