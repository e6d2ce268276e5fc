"""One fleet, many databases (worker/targets.py, config/targets.yaml): a target per database, each
(check, target) with its own slot, state and alerts, `target` a label that silences and inhibit
rules match; without targets.yaml, DATABASE_URL is the one target `default`, as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from ops.devkit.process import wait_until
from tests.support.db import clear_alert_state
from tests.support.notify import settings_for
from worker.checks.engine import run_check
from worker.checks.state import fingerprint
from worker.config import load_config
from worker.fleet.db import checks_engine, create, kept_connections_cap
from worker.fleet.errors import ConfigError
from worker.fleet.migrate import upgrade
from worker.notify import silences
from worker.notify.delivery import deliver
from worker.targets import FLEET

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
UNREACHABLE = "postgresql://postgres@127.0.0.1:9/nothing_listens_here"


def targets_yaml(*entries: str) -> str:
    return "targets:\n" + "".join(entries)


def entry(name: str, url: str, packs: str = "[postgres, app]", extra: str = "") -> str:
    return f"  - name: {name}\n    url: {url}\n    packs: {packs}\n{extra}"


# -- the file ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "env", "needle"), [
    (targets_yaml(entry("a", "${A_URL}"), entry("a", "${A_URL}")), {"A_URL": "postgresql://x/a"},
     r"targets.yaml:5: targets\[a\].name: 'a' is named twice \(also at .*targets.yaml:2\)"),
    (targets_yaml(entry("a", "${NOT_SET_URL}")), {}, r"targets.yaml:3: targets\[a\].url: \$\{NOT_SET_URL\} is not set"),
    (targets_yaml(entry("a", "${A_URL}", "[postgres, nope]")), {"A_URL": "postgresql://x/a"},
     r"targets.yaml:4: targets\[a\].packs.1: no pack 'nope' \(known: .*postgres"),
    (targets_yaml(entry("Orders-A", "${A_URL}")), {"A_URL": "postgresql://x/a"},
     r"targets.yaml:2: targets\[Orders-A\].name: 'Orders-A' is not a valid target name"),
    (targets_yaml(entry("a", "${A_URL}", extra="    colour: blue\n")), {"A_URL": "postgresql://x/a"},
     r"targets.yaml:5: targets\[a\].colour: unknown key"),
])
def test_a_bad_targets_file_is_one_line_naming_file_line_and_field(config_dir, monkeypatch, text, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("NOT_SET_URL", raising=False)
    (config_dir / "targets.yaml").write_text(text)
    with pytest.raises(ConfigError, match=needle) as err:
        load_config(config_dir, packs=["fleet"])
    assert "\n" not in str(err.value)


def test_without_targets_yaml_database_url_is_the_one_target_default(config_dir):
    cfg = load_config(config_dir, packs=["fleet", "app"])
    assert list(cfg.targets) == ["default"] and not cfg.targets_declared
    assert cfg.targets["default"].key == "" and cfg.targets["default"].alert_labels() == {}
    assert cfg.targets_of("jobs_backlog") == ["default"]
    assert cfg.targets_of("database_down") == [FLEET]  # the fleet's own: once
    entries = {s.entry: s for s in cfg.scheduled_checks()}
    assert "check:jobs_backlog" in entries and entries["check:jobs_backlog"].target is None  # as before targets


def test_each_check_runs_once_per_target_that_enables_its_pack(config_dir, monkeypatch):
    monkeypatch.setenv("A_URL", "postgresql://x/a")
    monkeypatch.setenv("B_URL", "postgresql://x/b")
    (config_dir / "targets.yaml").write_text(targets_yaml(
        entry("a", "${A_URL}"), entry("b", "${B_URL}", "[postgres]", "    labels: {team: payments}\n    queue: checks_b\n")))
    cfg = load_config(config_dir, packs=["fleet"])
    assert cfg.targets_of("jobs_backlog") == ["a"] and cfg.targets_of("database_up") == ["a", "b"]
    assert cfg.targets["b"].alert_labels() == {"team": "payments", "target": "b"}
    from worker.checks.spec import beat_entries

    sched = beat_entries(cfg.scheduled_checks())
    runs = [(name, e["kwargs"].get("target"), e["options"]["queue"])  # every (check, target) beat sends
            for e in sched.values() for name in e["kwargs"].get("names") or [e["kwargs"]["name"]]]
    assert len(runs) == len(set(runs)) == len(cfg.scheduled_checks())  # each once, in one entry
    assert ("database_up", "b", "checks_b") in runs and ("database_up", "a", "checks") in runs
    assert ("database_down", None, "notify") in runs  # the fleet's own: once, on the notify queue
    assert ("jobs_backlog", "a", "checks") in runs and not [r for r in runs if r[0] == "jobs_backlog" and r[1] == "b"]
    for sent in sched.values():  # a batch: one target's checks of one schedule, on one queue
        if sent["task"] == "checks.run_batch":
            schedules = {str(cfg.checks[n].schedule.text) for n in sent["kwargs"]["names"]}
            assert len(schedules) == 1 and len(sent["kwargs"]["names"]) > 1, sent


# -- three databases, one unreachable --------------------------------------------------------------------
@pytest.fixture
def three(config_dir, jobs_database, fleet_db, monkeypatch, sink):
    """Targets a, b and c (real databases with a jobs table: 5, 3 and 4 jobs waiting; c is made `down`
    by its database_up runs) and d, which nothing answers."""
    urls = {}
    for name, waiting in (("a", 5), ("b", 3), ("c", 4)):
        urls[name] = jobs_database(waiting)
        monkeypatch.setenv(f"{name.upper()}_URL", urls[name])
    monkeypatch.setenv("D_URL", UNREACHABLE)
    (config_dir / "targets.yaml").write_text(targets_yaml(*(entry(n, f"${{{n.upper()}_URL}}") for n in "abcd")))
    cfg = load_config(config_dir, packs=["fleet"])
    fleet = create(fleet_db)
    with fleet.begin() as conn:
        clear_alert_state(conn)
    yield cfg, fleet, urls
    fleet.dispose()


def evaluate(cfg, fleet, check: str, target: str | None, at: datetime, settings):
    """What checks.run does for (check, target) at `at`: the target's database, its key and labels."""
    t = cfg.targets.get(target) if target else None
    monitored = checks_engine(url=t.database_url(settings)) if t else fleet
    return run_check(cfg.checks[check], monitored=monitored, fleet=fleet, fleet_queries=fleet, now=at,
                     routing=cfg.routing, target=t.key if t else FLEET, target_labels=t.alert_labels() if t else None)


def test_three_targets_keep_their_state_apart_and_one_down_holds_back_only_its_own(three, sink):
    cfg, fleet, urls = three
    s = settings_for(sink)
    silences.add(fleet, check=None, labels={"target": "a"}, duration=timedelta(hours=1), comment="a is migrating",
                 author="test", now=T0 - timedelta(minutes=1))
    with fleet.begin() as conn:  # c went down: its database_up failed its last two runs
        for ago in (2, 1):
            conn.execute(sa.text("""INSERT INTO fleet.check_runs (check_name, target, slot, started_at, finished_at,
                                    duration_ms, status, error) VALUES ('database_up', 'c', :at, :at, :at, 5, 'error',
                                    'connection refused')"""), {"at": T0 - timedelta(minutes=ago)})
    for at in (T0, T0 + timedelta(minutes=1)):
        for t in "abd":
            out = evaluate(cfg, fleet, "database_up", t, at, s)
            assert out.status == ("error" if t == "d" else "ok"), out
    out = evaluate(cfg, fleet, "database_down", None, T0 + timedelta(minutes=1, seconds=30), s)
    assert {tr.labels.get("target"): tr.to_state for tr in out.transitions} == {"c": "firing", "d": "firing"}
    later = T0 + timedelta(minutes=3)
    assert [deliver(n, fleet=fleet, settings=s, routing=cfg.routing, now=later).status
            for n in out.notification_ids] == ["sent", "skipped"]  # one message for both (folded)
    down = sink.emails[0]["text"]
    assert "target c" in down and "target d" in down and "target a" not in down
    ids = []
    for t in "abc":
        out = evaluate(cfg, fleet, "jobs_backlog", t, T0 + timedelta(minutes=2), s)
        assert out.status == "ok"
        ids += out.notification_ids
    with fleet.connect() as conn:
        states = {(r.target, r.check_name): r.state for r in conn.execute(sa.text(
            "SELECT target, check_name, state FROM fleet.alerts WHERE check_name = 'jobs_backlog'"))}
    assert states == {("a", "jobs_backlog"): "firing", ("b", "jobs_backlog"): "firing",
                      ("c", "jobs_backlog"): "firing"}  # one check, three instances: one per target
    for nid in ids:
        deliver(nid, fleet=fleet, settings=s, routing=cfg.routing, now=later)
    with fleet.connect() as conn:
        rows = {(r.check_name, r.target): (r.status, r.suppressed_reason) for r in conn.execute(sa.text(
            "SELECT n.check_name, n.payload->'labels'->>'target' AS target, n.status, n.suppressed_reason "
            "FROM fleet.notifications n"))}
    assert rows == {("jobs_backlog", "a"): ("suppressed", "silenced"),   # the silence with target=a
                    ("jobs_backlog", "b"): ("sent", None),               # nothing of b held back
                    ("jobs_backlog", "c"): ("suppressed", "inhibited"),  # c's own database_down
                    ("database_down", "c"): ("sent", None), ("database_down", "d"): ("sent", None)}
    assert len(sink.emails) == 2
    backlog = sink.emails[1]
    assert "target=b" in backlog["text"] and "target=a" not in backlog["text"] and "target=c" not in backlog["text"]


def test_a_declared_target_named_default_adopts_the_state_of_a_fleet_of_one_database(config_dir, fresh_database,
                                                                                       monkeypatch, sink):
    """A fleet of one database (no targets.yaml) with a firing alert and its sent notice, migrated to
    0008 and then given a targets.yaml that names the same database `default`: the alert is the same
    instance (no new firing), and it resolves once, when the condition clears."""
    app_url, fleet_url = fresh_database(), fresh_database()
    upgrade(fleet_url, "0007")
    app = create(app_url, pool_size=1)
    with app.begin() as conn:
        conn.execute(sa.text("CREATE TABLE jobs (id serial PRIMARY KEY, done boolean NOT NULL DEFAULT false)"))
        conn.execute(sa.text("INSERT INTO jobs (done) SELECT false FROM generate_series(1, 5)"))
    fp = fingerprint("jobs_backlog", {})
    fleet = create(fleet_url)
    with fleet.begin() as conn:  # what a 0007 fleet held: the instance firing, its first notice sent
        conn.execute(sa.text("""INSERT INTO fleet.alerts (fingerprint, check_name, labels, severity, state, since,
                                active_at, fired_at, last_eval_at, summary, database)
                                VALUES (:fp, 'jobs_backlog', '{}', 'critical', 'firing', :t, :t, :t, :t, '5 jobs waiting',
                                        'monitored')"""), {"fp": fp, "t": T0})
        conn.execute(sa.text("""INSERT INTO fleet.notifications (channel, fingerprint, check_name, transition, payload,
                                dedup_key, next_attempt_at, status, sent_at) VALUES ('email', :fp, 'jobs_backlog',
                                'firing', '{}', :k, :t, 'sent', :t)"""),
                     {"fp": fp, "t": T0, "k": f"email:{fp}:firing:{int(T0.timestamp())}:0"})
    upgrade(fleet_url)
    monkeypatch.setenv("APP_URL", app_url)
    for declared, at in ((False, T0 + timedelta(minutes=5)), (True, T0 + timedelta(minutes=6))):
        if declared:
            (config_dir / "targets.yaml").write_text(targets_yaml(entry("default", "${APP_URL}", "[app]")))
        cfg = load_config(config_dir, packs=["fleet", "app"])
        t = cfg.targets["default"]
        out = run_check(cfg.checks["jobs_backlog"], monitored=checks_engine(url=app_url), fleet=fleet, now=at,
                        routing=cfg.routing, target=t.key, target_labels=t.alert_labels())
        assert (out.status, out.transitions, out.notification_ids) == ("ok", [], []), (declared, out)
    with app.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET done = true"))
    out = run_check(cfg.checks["jobs_backlog"], monitored=checks_engine(url=app_url), fleet=fleet,
                    now=T0 + timedelta(minutes=7), routing=cfg.routing, target="default",
                    target_labels={"target": "default"})
    assert [(tr.fingerprint, tr.to_state) for tr in out.transitions] == [(fp, "resolved")]
    assert len(out.notification_ids) == 1  # the resolved notice of the episode that was told
    with fleet.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*), min(target) FROM fleet.alerts")).one() == (1, "default")
    app.dispose()
    fleet.dispose()


def test_a_worker_keeps_at_most_the_cap_of_check_connections_across_targets(fresh_database, monkeypatch):
    """OPSFLEET_CHECK_CONNECTIONS bounds what one worker thread keeps open across databases: the
    servers see at most the cap from it, whatever the number of targets."""
    from worker.fleet.db import read_only_query

    monkeypatch.setenv("OPSFLEET_CHECK_CONNECTIONS", "3")
    assert kept_connections_cap() == 3
    urls = [fresh_database() for _ in range(6)]
    admin = create(urls[0], pool_size=1)

    def ours() -> int:
        with admin.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                        "'opsfleet-checks' AND datname = ANY(:names)"),
                                {"names": [u.rsplit("/", 1)[1] for u in urls]}).scalar()

    for round_ in range(2):
        for url in urls:
            assert read_only_query(checks_engine(url=url), "SELECT 1 AS value", {}, statement_timeout_ms=1000)[1] == [(1,)]
            # (a closed connection's backend leaves pg_stat_activity a moment after the socket closes)
            assert wait_until(lambda: ours() <= 3, timeout=5), (round_, url, ours())
    assert wait_until(lambda: ours() == 3, timeout=5), ours()
    admin.dispose()


@pytest.mark.slow  # a worker and a beat for about 20 s
def test_through_a_real_worker_and_beat_each_target_fires_alone_and_a_dead_one_stops_nothing(
        env, fleet, jobs_database, sink, tmp_path):
    """Beat schedules each (check, target) with its own entry; the worker runs checks.run with the
    target, on the target's database: the backlog planted in `a` is one email naming a, `b` stays
    quiet, `d` (nothing answers) fires its database_down, and the worker started all the same."""
    import shutil

    import yaml

    from ops.devkit.process import start_beat, start_worker
    from tests.support import REPO

    cfg_dir = tmp_path / "config"
    (cfg_dir / "app").mkdir(parents=True)
    shutil.copytree(REPO / "config" / "fleet", cfg_dir / "fleet", ignore=shutil.ignore_patterns("tests"))
    fleet_checks = yaml.safe_load((cfg_dir / "fleet" / "checks.yaml").read_text())
    for c in fleet_checks["checks"]:
        c["schedule"] = "2s" if c["name"] == "database_down" else "1h"
        c.pop("runbook", None)
    (cfg_dir / "fleet" / "checks.yaml").write_text(yaml.safe_dump(fleet_checks))
    (cfg_dir / "packs.yaml").write_text("enabled: [fleet]\n")
    (cfg_dir / "app" / "pack.yaml").write_text("description: a test app\n")
    (cfg_dir / "app" / "checks.yaml").write_text(yaml.safe_dump({"checks": [
        {"name": "database_up", "description": "the database answers", "schedule": "2s", "query": "SELECT 1 AS value",
         "condition": "< 1", "severity": "critical", "summary": "never fires"},
        {"name": "jobs_backlog", "description": "jobs waiting", "schedule": "2s",
         "query": "SELECT count(*) AS value FROM jobs WHERE NOT done", "condition": "> 2", "severity": "critical",
         "summary": "{{ value | int }} jobs waiting"}]}))
    (cfg_dir / "routing.yaml").write_text(yaml.safe_dump({
        "channels": {"email": {"kind": "email"}},
        "routes": [{"match": {}, "channels": ["email"], "group_wait": "0s"}],
        "inhibit_rules": yaml.safe_load((REPO / "config" / "routing.yaml").read_text())["inhibit_rules"]}))
    urls = {"a": jobs_database(5), "b": jobs_database(0)}
    (cfg_dir / "targets.yaml").write_text(targets_yaml(*(entry(n, f"${{{n.upper()}_URL}}", "[app]") for n in "abd")))
    env = {**env, "OPSFLEET_CONFIG_DIR": str(cfg_dir), "OPSFLEET_PACKS": "fleet", "OPSFLEET_PACKS_DIR": str(cfg_dir),
           "A_URL": urls["a"], "B_URL": urls["b"], "D_URL": UNREACHABLE,
           "RESEND_API_KEY": "re_test_key_0123456789", "RESEND_API_URL": sink.resend_api_url,
           "ALERT_EMAIL_RECIPIENTS": "ops@example.com"}
    worker = start_worker(env, tmp_path, queues="checks,notify", name="targets")
    beat = start_beat(env, tmp_path, "targetsbeat")
    try:
        def told(needle: str) -> list[dict]:
            return [e for e in sink.emails if needle in e["text"]]

        done = wait_until(lambda: told("target=a") and told("database of target d"), timeout=60)
        assert done, f"{[e['subject'] for e in sink.emails]}\n{worker.output()[-3000:]}"
        backlog = [e for e in sink.emails if "jobs_backlog" in e["text"]]
        assert len(backlog) == 1 and "target=a" in backlog[0]["text"] and "target=b" not in backlog[0]["text"]
        assert "target d does not answer" in worker.output()  # a warning at start, not a refusal
        assert "checks.run_batch:2 checks@a" in worker.output()  # one batch per target and schedule, as Flower shows it
        with fleet.connect() as conn:
            runs = {(r.check_name, r.target): (r.n, r.errors) for r in conn.execute(sa.text(
                "SELECT check_name, target, count(*) AS n, count(*) FILTER (WHERE status = 'error') AS errors "
                "FROM fleet.check_runs GROUP BY check_name, target"))}
            doubled = conn.execute(sa.text("SELECT count(*) - count(DISTINCT (check_name, target, slot)) "
                                           "FROM fleet.check_runs")).scalar()
            firing = {(r.check_name, r.target) for r in conn.execute(sa.text(
                "SELECT check_name, target FROM fleet.alerts WHERE state = 'firing'"))}
        assert doubled == 0
        assert runs[("jobs_backlog", "a")][1] == 0 and runs[("jobs_backlog", "b")][1] == 0
        assert runs[("database_up", "d")][0] == runs[("database_up", "d")][1] >= 2  # every run of d failed
        assert ("jobs_backlog", "a") in firing and ("jobs_backlog", "b") not in firing
    finally:
        beat.kill()
        worker.kill()


def test_the_cli_lists_targets_and_takes_target_where_a_check_runs_on_several(env, fleet, config_dir, jobs_database):
    import json

    from tests.support.cli import run_cli

    url = jobs_database(5)
    (config_dir / "targets.yaml").write_text(targets_yaml(entry("a", "${A_URL}", "[postgres, app]"),
                                                          entry("d", "${D_URL}", "[postgres]")))
    e = {**env, "OPSFLEET_CONFIG_DIR": str(config_dir), "OPSFLEET_PACKS": "fleet", "A_URL": url, "D_URL": UNREACHABLE}
    listed = run_cli(["targets", "list", "--json", "--timeout", "1"], e)
    assert listed.returncode == 0, listed.stderr
    got = {t["name"]: t for t in json.loads(listed.stdout)}
    assert list(got["a"]) == ["name", "reachable", "error", "packs", "checks", "firing", "last_run"]
    assert (got["a"]["reachable"], got["a"]["packs"], got["d"]["reachable"]) == (True, ["postgres", "app"], False)
    assert got["a"]["checks"] == got["d"]["checks"] + 1 and got["d"]["error"]  # jobs_backlog is a's only
    several = run_cli(["checks", "run", "database_up"], e)
    assert several.returncode == 2 and "runs on 2 targets (a, d)" in several.stderr, several.stderr
    assert len(several.stderr.strip().splitlines()) == 1 and "Traceback" not in several.stderr
    unknown = run_cli(["checks", "run", "jobs_backlog", "--target", "b"], e)
    assert unknown.returncode == 2 and "no target 'b'" in unknown.stderr, unknown.stderr
    ran = run_cli(["checks", "run", "jobs_backlog", "--target", "a"], e)
    assert ran.returncode == 0 and "target=a" in ran.stdout and "recorded: ok, 1 transition" in ran.stdout, ran.stdout
    alerts = json.loads(run_cli(["alerts", "list", "--json", "--target", "a"], e).stdout)
    assert [(x["check"], x["target"], x["state"]) for x in alerts] == [("jobs_backlog", "a", "firing")]
    assert json.loads(run_cli(["alerts", "list", "--json", "--target", "d"], e).stdout) == []
    bad = run_cli(["silence", "add", "--target", "zz", "--comment", "x"], e)
    assert bad.returncode == 2 and "--target 'zz'" in bad.stderr


def test_a_target_that_refuses_its_url_is_named_as_refusing_not_as_down(tmp_path, monkeypatch, env):
    """At start a target is a warning either way (the fleet watches the others), but one whose server
    refuses the URL's role says so and what to fix, where one that does not answer says that."""
    from sqlalchemy.engine import make_url

    from tests.support.targets import UNREACHABLE, two_postgres_targets
    from worker.fleet.settings import get_settings
    from worker.startup import target_problems

    two_postgres_targets(tmp_path, monkeypatch)
    monkeypatch.setenv("A_URL", make_url(env["DATABASE_URL"]).set(username="opsfleet_no_such_role")
                       .render_as_string(hide_password=False))
    monkeypatch.setenv("B_URL", UNREACHABLE)
    cfg = load_config(tmp_path, packs=["fleet"])
    errors, warnings = target_problems(cfg, get_settings(), checks=False)
    assert errors == []
    a, b = (next(w for w in warnings if w.startswith(f"target {n} ")) for n in "ab")
    assert "refuses its url" in a and 'role "opsfleet_no_such_role" does not exist' in a, a
    assert "does not answer" in b, b
