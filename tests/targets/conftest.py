"""Fixtures of the tests of worker/targets.py and of one fleet watching several databases: a config
folder with targets (tests/targets/test_targets.py builds its own from `config_dir`)."""

from __future__ import annotations

import functools

import pytest
import yaml

from tests.support import REPO
from tests.support.targets import APP_CHECKS, APP_PACK  # noqa: F401 - the fixtures' and tests' pack
from tests.support.targets import jobs_database as make_jobs_database

# one email channel, and the inhibit rules the repository ships (config/routing.yaml)
ROUTING = yaml.safe_dump({
    "channels": {"email": {"kind": "email"}},
    "routes": [{"match": {"severity": "critical"}, "channels": ["email"], "group_wait": "0s", "repeat_interval": "4h"}],
    "inhibit_rules": yaml.safe_load((REPO / "config" / "routing.yaml").read_text())["inhibit_rules"],
})


@pytest.fixture
def config_dir(tmp_path):
    """A config folder: packs.yaml enabling the fleet's own pack, an `app` pack of its own, routing.yaml;
    the test writes targets.yaml."""
    (tmp_path / "packs.yaml").write_text("enabled: [fleet]\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "pack.yaml").write_text(APP_PACK)
    (tmp_path / "app" / "checks.yaml").write_text(APP_CHECKS)
    (tmp_path / "routing.yaml").write_text(ROUTING)
    return tmp_path


@pytest.fixture
def jobs_database(fresh_database):
    """A factory: a fresh database with the app pack's `jobs` table holding `waiting` jobs not done; its URL."""
    return functools.partial(make_jobs_database, fresh_database)
