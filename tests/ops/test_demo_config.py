"""The demo's config folder (ops/devkit/demo_config/): one target per seed system, each with the
postgres pack and its own, its URL from the variable the demo exports; the shipped routing less the
system_alerts channel (which writes to one database, not to an alert's target)."""

from __future__ import annotations

import yaml

from ops.devkit.demo import DEMO_CONFIG, maintenance_variable, url_variable
from ops.sample_app import SYSTEMS
from tests.support import REPO
from worker.config import load_config


def test_the_demo_watches_one_target_per_seed_system_with_the_postgres_pack_and_its_own(monkeypatch):
    for system in SYSTEMS:
        monkeypatch.setenv(url_variable(system), f"postgresql://demo@127.0.0.1:5432/opsfleet_demo_{system}")
        monkeypatch.setenv(maintenance_variable(system), f"postgresql://admin@127.0.0.1:5432/opsfleet_demo_{system}")
    cfg = load_config(DEMO_CONFIG)
    assert cfg.targets_declared and list(cfg.targets) == list(SYSTEMS)
    for system, target in cfg.targets.items():
        assert target.packs == ("postgres", system)
        assert target.url == f"postgresql://demo@127.0.0.1:5432/opsfleet_demo_{system}"  # the checks' role
        assert target.maintenance_url == f"postgresql://admin@127.0.0.1:5432/opsfleet_demo_{system}"  # the writer
        assert target.alert_labels() == {"target": system}
    # every app check runs on its system's target only; the postgres pack's on all five; the fleet's once
    for name in cfg.checks:
        pack = cfg.check_pack[name]
        on = cfg.targets_of(name)
        if pack == "postgres" and cfg.checks[name].database != "fleet":
            assert on == list(SYSTEMS), name
        elif pack in SYSTEMS and cfg.checks[name].kind == "sql":
            assert on == [pack], name


def test_the_demo_routes_as_the_shipped_routing_less_the_system_alerts_channel():
    shipped = yaml.safe_load((REPO / "config" / "routing.yaml").read_text())
    demo = yaml.safe_load((DEMO_CONFIG / "routing.yaml").read_text())
    assert shipped["channels"].pop("dashboard")["kind"] == "table"
    for route in shipped["routes"]:
        route["channels"] = [c for c in route["channels"] if c != "dashboard"]
    assert demo == shipped
