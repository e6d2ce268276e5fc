"""The fleet's own Prometheus metrics and the checks' figures: bounded labels, failure series pre-created at
zero, at most SERIES_PER_CHECK series per check (the rest counted)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ops.sample_app.seed import seed
from ops.sample_app.seed.common import FAILING_WEBHOOK
from tests.support import REPO
from tests.support.db import clear_alert_state
from tests.support.targets import two_postgres_targets
from tests.support.targets_metrics import instance, load_two_targets, run_at, scrape, write_two_targets
from worker.checks.engine import run_check
from worker.checks.spec import Check
from worker.config import load_config
from worker.fleet.db import create
from worker.fleet.errors import ConfigError
from worker.fleet.timeutil import Schedule
from worker.watch.metrics import SERIES_PER_CHECK, FleetCollector


def test_metrics_expose_zeros_for_every_channel_and_reason_and_count_what_exists(fleet_db):
    engine = create(fleet_db)
    with engine.begin() as conn:
        clear_alert_state(conn)
        conn.execute(sa.text("""INSERT INTO fleet.notifications (channel, transition, payload, dedup_key, status, last_error)
                                VALUES ('email', 'firing', '{}', 'm1', 'dead', 'auth: invalid API key <b>x</b>')"""))
        conn.execute(sa.text("""INSERT INTO fleet.alerts (fingerprint, check_name, severity, state, since, last_eval_at)
                                VALUES ('f', 'confirmation_backlog', 'warning', 'firing', now(), now())"""))
    registry = CollectorRegistry()
    registry.register(FleetCollector(engine, load_config(REPO / "config")))
    text = generate_latest(registry).decode()
    engine.dispose()
    assert 'opsfleet_notification_failures{channel="email",reason="auth"} 1.0' in text
    assert 'opsfleet_notification_failures{channel="slack",reason="rate_limited"} 0.0' in text
    assert 'opsfleet_notifications{channel="email",status="dead"} 1.0' in text
    assert 'opsfleet_alerts{severity="warning",state="firing",target="default"} 1.0' in text
    assert 'opsfleet_alerts{severity="critical",state="firing",target="default"} 0.0' in text
    assert 'opsfleet_alerts{severity="critical",state="firing",target="fleet"} 0.0' in text  # the fleet's own checks
    assert 'opsfleet_check_runs{check="confirmation_backlog",status="error",target="default"} 0.0' in text
    assert "invalid API key" not in text  # labels never carry message text


def test_each_enabled_check_exports_its_schedules_longest_gap(fleet_db):
    """OpsfleetCheckNotRunning compares a check's last run with this: a weekly check may rightly be
    silent a week, a 1-minute one a minute; a disabled check exports none (it never alerts)."""
    cfg = load_config(REPO / "config")
    engine = create(fleet_db)
    registry = CollectorRegistry()
    registry.register(FleetCollector(engine, cfg))
    text = generate_latest(registry).decode()
    engine.dispose()
    assert 'opsfleet_check_interval_seconds{check="db_unused_indexes",target="default"} 604800.0' in text  # 0 6 * * 1
    assert 'opsfleet_check_interval_seconds{check="confirmation_backlog",target="default"} 60.0' in text   # 1m
    assert 'opsfleet_check_interval_seconds{check="sms_delivery_failures",target="default"} 3600.0' in text
    assert 'opsfleet_check_interval_seconds{check="whatsapp_top_errors",target="default"} 86400.0' in text
    assert 'opsfleet_check_interval_seconds{check="checks_missed",target="fleet"} 60.0' in text  # runs once
    disabled = [n for n, c in cfg.checks.items() if not c.enabled]
    assert disabled and not any(f'opsfleet_check_interval_seconds{{check="{n}"' in text for n in disabled)


@pytest.mark.parametrize(("schedule", "gap"), [
    ("90s", timedelta(seconds=90)), ("*/15 * * * *", timedelta(minutes=15)), ("0 9 * * 1-5", timedelta(days=3)),
    ("0 3 1 * *", timedelta(days=31)), ("0,30 8 * * *", timedelta(hours=23, minutes=30)),
    ("0 2 29 2 *", timedelta(days=400)),  # fewer than two runs in the year looked at: as long as it
])
def test_longest_gap_of_a_schedule(schedule, gap):
    assert Schedule.parse(schedule).longest_gap() == gap


# -- the application's figures: opsfleet_check_value / opsfleet_check_state ------------------------------
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def _scrape(engine, cfg) -> dict[str, list[Sample]]:
    registry = CollectorRegistry()
    registry.register(FleetCollector(engine, cfg))
    return {f.name: f.samples for f in text_string_to_metric_families(generate_latest(registry).decode())}


def _of(samples: list[Sample], **labels: str) -> list[Sample]:
    return [s for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]


@pytest.fixture(scope="module")
def seeded(app_db_url):
    """The sample app seeded at NOW (its planted problems: a failing webhook, a backlog, a failed and slow
    cleanup run, failed reservations), in the module's own database that holds the fleet schema too."""
    engine = create(app_db_url)
    seed(engine, 300, now=NOW)
    yield engine
    engine.dispose()


RUN = ("webhook_error_rate_high", "confirmation_backlog", "reservation_cleanup_job_health", "reservation_top_errors")


def test_check_runs_publish_each_instances_value_and_state_with_the_exported_labels_only(seeded):
    cfg = load_config(REPO / "config")
    with seeded.begin() as conn:
        clear_alert_state(conn)
    for name in RUN:
        assert run_check(cfg.checks[name], monitored=seeded, fleet=seeded, now=NOW, routing=None).status == "ok"
    with seeded.connect() as conn:  # the seed's own queries, not the checks'
        rates = {r.webhook_name: float(r.rate) for r in conn.execute(sa.text(
            """SELECT webhook_name, 100.0 * COUNT(*) FILTER (WHERE status_code != 200) / COUNT(*) AS rate
               FROM webhook_logs WHERE created_at > :now - interval '1 hour' AND created_at <= :now
               GROUP BY webhook_name HAVING COUNT(*) >= 20"""), {"now": NOW})}
        backlog = conn.execute(sa.text(
            """SELECT COUNT(*) FROM registrations WHERE status = 'completed' AND payment_status = 'completed'
               AND confirmation_number IS NULL AND updated_at <= :now"""), {"now": NOW}).scalar()
        messages = conn.execute(sa.text(
            """SELECT COUNT(DISTINCT LEFT(error_message, 200)) FROM seat_reservation_audit_log
               WHERE event_type = 'failed' AND created_at > :now - interval '24 hours' AND created_at <= :now"""),
            {"now": NOW}).scalar()
    got = _scrape(seeded, cfg)
    value, state = got["opsfleet_check_value"], got["opsfleet_check_state"]

    webhooks = _of(value, check="webhook_error_rate_high")
    assert {s.labels["webhook_name"]: round(s.value, 2) for s in webhooks} == {k: round(v, 2) for k, v in rates.items()}
    assert all(set(s.labels) == {"check", "target", "severity", "webhook_name"} for s in webhooks)  # `system` is not exported
    assert _of(state, check="webhook_error_rate_high", webhook_name=FAILING_WEBHOOK, state="firing")[0].value == 1
    assert _of(state, check="webhook_error_rate_high", webhook_name=FAILING_WEBHOOK, state="inactive")[0].value == 0
    assert len(_of(state, check="webhook_error_rate_high", state="inactive")) == len(rates)  # 4 states each

    [one] = _of(value, check="confirmation_backlog")
    assert one.labels == {"check": "confirmation_backlog", "target": "default", "severity": "warning"}
    assert one.value == backlog > 20
    assert {s.labels["state"]: s.value for s in _of(state, check="confirmation_backlog")} == {
        "pending": 1, "firing": 0, "inactive": 0, "resolved": 0}  # `for: 15m`: pending after one run

    problems = {s.labels["problem"]: s.labels["state"] for s in _of(state, check="reservation_cleanup_job_health")
                if s.value == 1}
    assert problems == {"no_run_10m": "firing", "failed_run": "firing", "slow_run": "firing"}

    # several instances, none of their labels exported: their states are counted, no value is published
    assert messages > 1 and not _of(value, check="reservation_top_errors")
    assert {s.labels["state"]: s.value for s in _of(state, check="reservation_top_errors")}["firing"] == messages
    # a check that has not run yet shows zeros, not gaps
    assert _of(state, check="confirmation_rate_low", state="firing")[0].value == 0
    assert not _of(value, check="confirmation_rate_low")
    assert all(s.value == 0 for s in got["opsfleet_check_series_dropped"])


def test_series_beyond_the_cap_are_dropped_and_counted_firing_ones_kept(fleet_db):
    cfg = load_config(REPO / "config")
    wide = Check.model_validate({
        "name": "wide_check", "description": "60 instances", "schedule": "1m", "database": "fleet",
        "query": "SELECT n::text AS shard, n AS value FROM generate_series(1, 60) AS n", "condition": "> 55",
        "severity": "info", "summary": "x", "export_labels": ["shard"]})
    cfg.checks["wide_check"] = wide
    engine = create(fleet_db)
    with engine.begin() as conn:
        clear_alert_state(conn)
    run_check(wide, monitored=engine, fleet=engine, now=NOW, routing=None)
    got = _scrape(engine, cfg)
    engine.dispose()
    values = _of(got["opsfleet_check_value"], check="wide_check")
    assert len(values) == SERIES_PER_CHECK == 50
    assert len(_of(got["opsfleet_check_state"], check="wide_check")) == 50 * 4
    assert _of(got["opsfleet_check_series_dropped"], check="wide_check")[0].value == 10
    kept = {int(s.labels["shard"]) for s in values}
    assert set(range(56, 61)) <= kept  # the firing instances are never the ones dropped


BAD_CHECK = """\
checks:
  - name: exported
    description: bad export_labels
    schedule: 1m
    {kind}
    condition: "> 0"
    severity: info
    labels: {{system: x}}
    export_labels: {export}
    summary: fine
"""
SQL = "query: SELECT 'a' AS shard, 1 AS value"
HTTP = "kind: http\n    probe: {url: 'http://127.0.0.1:9/health'}"


@pytest.mark.parametrize(("kind", "export", "needle"), [
    (SQL, "[webhook-name]", "'webhook-name' is not a Prometheus label name"),
    (SQL, "[__name__]", "'__name__' is not a Prometheus label name"),
    (SQL, "[state]", "'state' collides with a label the exporter sets itself"),
    (SQL, "[check]", "'check' collides with a label the exporter sets itself"),
    (SQL, "[value]", "'value' collides"),
    (SQL, "[shard, shard]", "'shard' is named twice"),
    (HTTP, "[region]", "'region' is not a label of this http check"),
])
def test_a_bad_export_labels_is_refused_naming_the_file_and_why(tmp_path, kind, export, needle):
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "bad.yaml").write_text(BAD_CHECK.format(kind=kind, export=export))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, packs=[])
    assert "bad.yaml" in str(err.value) and needle in str(err.value), str(err.value)


def test_a_probe_may_export_its_static_labels():
    check = Check.model_validate({"name": "p", "description": "d", "schedule": "1m", "kind": "http",
                                  "probe": {"url": "http://x/health"}, "condition": "< 0", "severity": "info",
                                  "labels": {"system": "x"}, "summary": "s", "export_labels": ["system"]})
    assert check.export_labels == ["system"]


# -- `target` on every per-check, per-alert and per-job series (tests/support/targets_metrics.py) -------
def test_every_check_and_alert_series_names_its_target_and_one_targets_state_is_not_anothers(fleet, tmp_path,
                                                                                             monkeypatch):
    cfg = load_two_targets(tmp_path, monkeypatch)
    now = datetime.now(UTC)
    with fleet.begin() as conn:
        run_at(conn, "app_up", "a", now - timedelta(seconds=30))
        run_at(conn, "app_up", "b", now - timedelta(minutes=20), status="error")
        run_at(conn, "checks_missed", "", now - timedelta(seconds=10))  # the fleet's own: once, key ""
        instance(conn, "app_up", "a", "firing", value=0, severity="critical")
        instance(conn, "app_rows", "b", "firing", value=9, labels={"shard": "s1", "target": "b"})
        instance(conn, "checks_missed", "", "firing", value=3, severity="high",
                 labels={"check_name": "app_up", "target": "b", "queue": "checks_b"})
    got = scrape(fleet, cfg)
    runs = got["opsfleet_check_runs"]
    assert _of(runs, check="app_up", target="a", status="ok")[0].value == 1
    assert _of(runs, check="app_up", target="b", status="ok")[0].value == 0  # a's run is not b's
    assert _of(runs, check="app_up", target="b", status="error")[0].value == 1
    assert {s.labels["target"] for s in _of(runs, check="app_up")} == {"a", "b"}  # no `default` once declared
    assert {s.labels["target"] for s in _of(runs, check="checks_missed")} == {"fleet"}
    ages = {s.labels["target"]: s.value for s in _of(got["opsfleet_check_last_run_age_seconds"], check="app_up")}
    assert ages.keys() == {"a", "b"} and ages["a"] < 60 < 20 * 60 - 5 < ages["b"]
    gaps = {(s.labels["check"], s.labels["target"]): s.value for s in got["opsfleet_check_interval_seconds"]}
    assert gaps[("app_up", "a")] == gaps[("app_up", "b")] == 60 and gaps[("app_rows", "b")] == 300
    assert gaps[("checks_missed", "fleet")] == 60 and ("checks_missed", "a") not in gaps
    alerts = {(s.labels["target"], s.labels["severity"]): s.value for s in _of(got["opsfleet_alerts"], state="firing")}
    assert alerts[("a", "critical")] == 1 and alerts[("b", "critical")] == 0 and alerts[("b", "warning")] == 1
    assert alerts[("fleet", "high")] == 1 and alerts[("a", "warning")] == 0  # pre-created for each target
    state, value = got["opsfleet_check_state"], got["opsfleet_check_value"]
    assert _of(state, check="app_up", target="a", state="firing")[0].value == 1
    assert _of(state, check="app_up", target="b", state="firing")[0].value == 0  # b's own series, zero
    [rows] = _of(value, check="app_rows")
    assert rows.labels == {"check": "app_rows", "target": "b", "severity": "warning", "shard": "s1"} and rows.value == 9
    assert {(s.labels["check"], s.labels["target"]) for s in got["opsfleet_check_series_dropped"]} >= {
        ("app_up", "a"), ("app_up", "b"), ("app_rows", "a"), ("app_rows", "b"), ("checks_missed", "fleet")}
    [missed] = _of(value, check="checks_missed")  # the fleet's check, about b's app_up
    assert missed.labels == {"check": "checks_missed", "target": "fleet", "severity": "high", "check_name": "app_up",
                             "exported_target": "b", "queue": "checks_b"} and missed.value == 3
    per_check = ("opsfleet_check_runs", "opsfleet_check_last_run_age_seconds", "opsfleet_check_interval_seconds",
                 "opsfleet_check_state", "opsfleet_check_value", "opsfleet_check_series_dropped", "opsfleet_alerts",
                 "opsfleet_job_last_run_ok")
    assert all(s.labels.get("target") for f in per_check for s in got[f]), "a per-check series without target"


def test_an_exported_label_named_target_is_published_as_exported_target(fleet, tmp_path, monkeypatch):
    """A fleet check about other targets (checks_missed's rows carry the target they are about) keeps
    the exporter's `target` (fleet) and shows its own as exported_target, Prometheus's rename."""
    cfg = load_two_targets(tmp_path, monkeypatch)
    cfg.checks["about_targets"] = Check.model_validate({
        "name": "about_targets", "description": "d", "schedule": "1m", "database": "fleet",
        "query": "SELECT 'a' AS target, 1 AS value", "condition": "> 5", "severity": "info", "summary": "s",
        "export_labels": ["target"]})
    with fleet.begin() as conn:
        instance(conn, "about_targets", "", "inactive", value=1, labels={"target": "b"})
    [one] = _of(scrape(fleet, cfg)["opsfleet_check_value"], check="about_targets")
    assert one.labels == {"check": "about_targets", "target": "fleet", "exported_target": "b", "severity": "info"}


def test_maintenance_jobs_are_labelled_default_and_the_fleets_retention_fleet(fleet):
    cfg = load_config(REPO / "config")
    got = {s.labels["job"]: s.labels["target"] for s in scrape(fleet, cfg)["opsfleet_job_last_run_ok"]}
    kinds = {name: job.kind for name, job in cfg.maintenance.items()}
    assert got == {name: "fleet" if kind == "fleet_retention" else "default" for name, kind in kinds.items()}
    assert "fleet" in got.values() and "default" in got.values()


def test_no_target_may_be_named_fleet_the_label_of_what_runs_once(tmp_path, monkeypatch):
    write_two_targets(tmp_path)
    (tmp_path / "targets.yaml").write_text((tmp_path / "targets.yaml").read_text().replace("name: b", "name: fleet"))
    monkeypatch.setenv("A_URL", "postgresql://x/a")
    monkeypatch.setenv("B_URL", "postgresql://x/b")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, packs=["fleet"])
    assert "targets.yaml:" in str(err.value) and "'fleet' is reserved" in str(err.value), str(err.value)


def test_a_maintenance_job_has_a_series_per_target_from_its_runs_there(fleet, tmp_path, monkeypatch):
    """analyze_weekly (the postgres pack) on targets a and b: a's last run ok, b's failed; each target's
    series says its own (one series for the job would show whichever ran last)."""
    cfg = two_postgres_targets(tmp_path, monkeypatch)
    now = datetime.now(UTC)
    with fleet.begin() as conn:
        for target, status, ago in (("a", "ok", 20), ("b", "error", 10)):  # b's is the newer run
            conn.execute(sa.text("INSERT INTO fleet.job_runs (job, kind, target, started_at, finished_at, status) "
                                 "VALUES ('analyze_weekly', 'analyze', :t, :at, :at, :s)"),
                         {"t": target, "s": status, "at": now - timedelta(minutes=ago)})
    got = {s.labels["target"]: s.value for s in scrape(fleet, cfg)["opsfleet_job_last_run_ok"]
           if s.labels["job"] == "analyze_weekly"}
    assert got == {"a": 1, "b": 0}
    fleet_jobs = {s.labels["job"] for s in scrape(fleet, cfg)["opsfleet_job_last_run_ok"] if s.labels["target"] == "fleet"}
    assert fleet_jobs and all(cfg.maintenance[j].kind == "fleet_retention" or cfg.job_pack.get(j) == "fleet"
                              for j in fleet_jobs)
