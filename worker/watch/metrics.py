"""Prometheus metrics for the fleet itself, and the application's figures its checks measure, read
from the fleet's state on each scrape.

Postgres is the source of truth, so the exporter is one small process (`opsfleet metrics`) instead
of per-worker counters that a prefork pool would scatter. Labels come from fixed sets (severity,
state, status, channel, reason) or from config (check and job names), never from alert text; the
failure series are pre-created at zero so dashboards show zeros, not gaps.

Every per-check, per-alert and per-job metric carries `target`: the name of the target (worker/targets.py)
a run, an instance or a job is of; `default` for the implicit target of a fleet without targets.yaml;
`fleet` (FLEET_LABEL) for what runs once for the whole fleet (the fleet's own checks, the probes,
fleet_retention) -- a name targets.yaml refuses, so it never means a database. A maintenance job has a
series per target it runs on (its last run there, fleet.job_runs.target). The channel and outbox
metrics carry no target (a notification may fold alerts of several targets).

The checks' figures (opsfleet_check_value, opsfleet_check_state) carry `check`, `target`, `severity` and
only the label columns a check names in `export_labels` (one named `target` is published as
`exported_target`, Prometheus's own rename); a series is the instances that share those values:
- opsfleet_check_state{..., state} counts them per state (inactive, pending, firing, resolved; all
  four present for each series): 1/0 when export_labels tell the instances apart, and for a check
  without export_labels one series per check and target (pre-created at zero) whose counts sum honestly.
- opsfleet_check_value is the last value recorded, published only where the series is one instance:
  values such as rates cannot be summed or averaged, so a check with several instances and no
  export_labels (or export_labels that do not tell them apart) publishes its states but no value.
At most SERIES_PER_CHECK series per check and target, firing and pending instances first, then the
most recently evaluated; the instances of the series beyond that are counted in
opsfleet_check_series_dropped{check, target}.
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
from worker.targets import DEFAULT, FLEET, FLEET_LABEL

ALERT_STATES = ("pending", "firing")
NOTIFY_STATUSES = ("pending", "sending", "retrying", "sent", "dead", "suppressed")
RUN_STATUSES = ("ok", "no_data", "error")
CHECK_STATES = ("inactive", "pending", "firing", "resolved")
SERIES_PER_CHECK = 50
EXPORTED_TARGET = "exported_target"  # an export label named `target` (the exporter's own label wins)


def target_label(cfg: FleetConfig, check: str, key: str) -> str:
    """The `target` label of a run or an instance of `check` whose state key is `key` (module docstring)."""
    if key:
        return key
    runs_once = check in cfg.checks and cfg.targets_of(check) == [FLEET]
    return FLEET_LABEL if runs_once else DEFAULT


def check_targets(cfg: FleetConfig, check: str) -> list[str]:
    """The `target` labels of the runs `check` has: one per target it runs on, or `fleet`."""
    return [FLEET_LABEL if t == FLEET else t for t in cfg.targets_of(check)]


class FleetCollector(Collector):
    def __init__(self, fleet: Engine, cfg: FleetConfig, *, series_per_check: int = SERIES_PER_CHECK) -> None:
        self.fleet, self.cfg, self.series_per_check = fleet, cfg, series_per_check
        self.channels = sorted(cfg.routing.channels) if cfg.routing else []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.fleet.connect() as conn:
            alerts: Counter[tuple[str, str, str]] = Counter()
            for r in conn.execute(sa.text("SELECT state, severity, check_name, target, count(*) AS n FROM fleet.alerts "
                                          "GROUP BY 1, 2, 3, 4")):
                alerts[(r.state, r.severity, target_label(self.cfg, r.check_name, r.target))] += r.n
            notes = {(r.channel, r.status): r.n for r in conn.execute(sa.text(
                "SELECT channel, status, count(*) AS n FROM fleet.notifications "
                "WHERE created_at > now() - interval '24 hours' GROUP BY 1, 2"))}
            failures = {(r.channel, r.reason): r.n for r in conn.execute(sa.text(
                "SELECT channel, split_part(last_error, ':', 1) AS reason, count(*) AS n FROM fleet.notifications "
                "WHERE last_error IS NOT NULL AND created_at > now() - interval '24 hours' GROUP BY 1, 2"))}
            due = conn.execute(sa.text(
                "SELECT count(*) FROM fleet.notifications WHERE status IN ('pending', 'retrying') "
                "AND next_attempt_at <= now()")).scalar()
            runs = {(r.check_name, target_label(self.cfg, r.check_name, r.target), r.status): r.n
                    for r in conn.execute(sa.text(
                        "SELECT check_name, target, status, count(*) AS n FROM fleet.check_runs "
                        "WHERE started_at > now() - interval '1 hour' GROUP BY 1, 2, 3"))}
            last_run = {(r.check_name, target_label(self.cfg, r.check_name, r.target)): r.age
                        for r in conn.execute(sa.text(
                            "SELECT check_name, target, extract(epoch FROM now() - max(started_at)) AS age "
                            "FROM fleet.check_runs GROUP BY 1, 2"))}
            jobs = {(r.job, r.target): r for r in conn.execute(sa.text(
                "SELECT DISTINCT ON (job, target) job, target, status, extract(epoch FROM finished_at - started_at) "
                "AS secs, extract(epoch FROM now() - started_at) AS age FROM fleet.job_runs "
                "ORDER BY job, target, started_at DESC"))}
            instances = conn.execute(sa.text(
                "SELECT check_name, target, state, labels, last_value FROM fleet.alerts ORDER BY check_name, target, "
                "CASE state WHEN 'firing' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, last_eval_at DESC, fingerprint"
            )).all()

        g = GaugeMetricFamily("opsfleet_alerts", "Alert instances by state, severity and target",
                              labels=["state", "severity", "target"])
        every = self.target_labels()
        for target in sorted(every | {t for _, _, t in alerts}):
            for state in ALERT_STATES:
                for sev in SEVERITIES:
                    g.add_metric([state, sev, target], alerts.get((state, sev, target), 0))
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
        g = GaugeMetricFamily("opsfleet_check_runs", "Check runs in the last hour by status, per target",
                              labels=["check", "target", "status"])
        for name in sorted(self.cfg.checks):
            for target in sorted({*check_targets(self.cfg, name), *(t for c, t, _ in runs if c == name)}):
                for st in RUN_STATUSES:
                    g.add_metric([name, target, st], runs.get((name, target, st), 0))
        yield g
        g = GaugeMetricFamily("opsfleet_check_last_run_age_seconds", "Seconds since each check last ran on each target",
                              labels=["check", "target"])
        for (name, target), age in sorted(last_run.items()):
            if name in self.cfg.checks:
                g.add_metric([name, target], float(age))
        yield g
        g = GaugeMetricFamily("opsfleet_check_interval_seconds", "Longest time between two scheduled runs of each "
                              "enabled check on each of its targets (OpsfleetCheckNotRunning compares the last "
                              "run's age with it)", labels=["check", "target"])
        for name, check in sorted(self.cfg.checks.items()):
            if check.enabled:
                for target in check_targets(self.cfg, name):
                    g.add_metric([name, target], check.schedule.longest_gap().total_seconds())
        yield g
        g = GaugeMetricFamily("opsfleet_job_last_run_ok", "1 if the job's last run succeeded", labels=["job", "target"])
        d = GaugeMetricFamily("opsfleet_job_last_run_duration_seconds", "Duration of the job's last run",
                              labels=["job", "target"])
        a = GaugeMetricFamily("opsfleet_job_last_run_age_seconds", "Seconds since the job's last run started",
                              labels=["job", "target"])
        for job in sorted(self.cfg.maintenance):
            for on in self.cfg.job_targets("maintenance", job):  # each job on each target it runs on
                target = self.cfg.targets.get(on)
                r = jobs.get((job, target.key if target else FLEET))
                labels = [job, on if target else FLEET_LABEL]
                g.add_metric(labels, 1 if r is not None and r.status == "ok" else 0)
                if r is not None:
                    d.add_metric(labels, float(r.secs or 0))
                    a.add_metric(labels, float(r.age))
        yield g
        yield d
        yield a
        yield from self._check_figures(instances)

    def target_labels(self) -> set[str]:
        """Every `target` label a check of the config has (pre-created series are per target)."""
        return {t for name in self.cfg.checks for t in check_targets(self.cfg, name)}

    def _check_figures(self, instances: Sequence[Any]) -> Iterator[Metric]:
        """opsfleet_check_value, opsfleet_check_state, opsfleet_check_series_dropped (module docstring)."""
        value = Metric("opsfleet_check_value", "Each check's last value per instance (the series of its "
                       "export_labels that hold one instance)", "gauge")
        state = Metric("opsfleet_check_state", "Instances of each check in each state, by target and its "
                       "export_labels", "gauge")
        dropped = GaugeMetricFamily("opsfleet_check_series_dropped", "Instances left off opsfleet_check_value "
                                    "and opsfleet_check_state: their check's series on that target are over the cap",
                                    labels=["check", "target"])
        by_run: dict[tuple[str, str], list[Any]] = {}
        for r in instances:
            by_run.setdefault((r.check_name, target_label(self.cfg, r.check_name, r.target)), []).append(r)
        for name, check in sorted(self.cfg.checks.items()):
            if not check.enabled:
                continue
            exported = [EXPORTED_TARGET if k == "target" else k for k in check.export_labels]
            for target in sorted({*check_targets(self.cfg, name), *(t for c, t in by_run if c == name)}):
                series: dict[tuple[str, ...], tuple[Counter[str], list[float | None]]] = {}
                if not check.export_labels:
                    series[()] = (Counter(), [])  # pre-created: one series per check and target, zeros until used
                lost = 0
                for r in by_run.get((name, target), []):
                    key = tuple(str(r.labels.get(k, "")) for k in check.export_labels)
                    if key not in series:
                        if len(series) >= self.series_per_check:
                            lost += 1
                            continue
                        series[key] = (Counter(), [])
                    series[key][0][r.state] += 1
                    series[key][1].append(r.last_value)
                for key, (states, values) in series.items():
                    labels = {**dict(zip(exported, key, strict=True)), "check": name, "target": target,
                              "severity": check.severity}
                    for st in CHECK_STATES:
                        state.add_sample("opsfleet_check_state", {**labels, "state": st}, states.get(st, 0))
                    if len(values) == 1 and values[0] is not None:
                        value.add_sample("opsfleet_check_value", labels, float(values[0]))
                dropped.add_metric([name, target], lost)
        yield value
        yield state
        yield dropped
