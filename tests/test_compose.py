"""docker-compose.yml: every queue has a worker, Flower requires basic auth, services have healthchecks."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.support import REPO
from worker.fleet.names import QUEUES


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_every_queue_is_consumed_by_a_worker_service(compose):
    consumed = set()
    for svc in compose["services"].values():
        cmd = svc.get("command") or []
        if "worker" in cmd and "-Q" in cmd:
            consumed |= set(cmd[cmd.index("-Q") + 1].split(","))
    assert consumed == set(QUEUES)


def test_flower_sits_behind_basic_auth(compose):
    flower = compose["services"]["flower"]
    assert "--basic-auth" in " ".join(flower["command"])
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])


def test_long_running_services_have_healthchecks_and_migrate_runs_first(compose):
    services = compose["services"]
    for name in ("postgres", "redis", "worker-checks", "worker-notify", "worker-maintenance", "flower"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["command"] == ["opsfleet", "db", "upgrade"]
    assert services["beat"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_a_first_deploy_watches_your_database_and_keeps_its_state_in_its_own(compose):
    env = compose["x-opsfleet"]["environment"]
    assert env["DATABASE_URL"].startswith("${DATABASE_URL:?")  # yours: required, no default into compose's own
    assert env["FLEET_DATABASE_URL"].endswith("@postgres:5432/fleet}")
    assert compose["services"]["postgres"]["environment"]["POSTGRES_DB"] == "fleet"
    assert env["REDIS_URL"] == "${REDIS_URL:-redis://redis:6379/0}" and env["OPSFLEET_PACKS"] == "${OPSFLEET_PACKS:-}"
    assert compose["x-opsfleet"]["volumes"] == ["./config:/app/config:ro"]  # a changed check needs no rebuild
    for name in ("postgres", "redis"):
        assert compose["services"][name]["restart"] == "unless-stopped"
    assert "serve" in compose["services"] and "/health" in str(compose["services"]["serve"]["healthcheck"])


def test_the_build_context_leaves_out_the_working_state():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".opsfleet-demo", ".git"} <= set(ignored)
    docker = (REPO / "Dockerfile").read_text()
    assert "OPSFLEET_PACKS_DIR=/opt/opsfleet/packs" in docker and "COPY config /opt/opsfleet/packs" in docker


def test_compose_file_validates_with_docker_compose():
    if shutil.which("docker-compose"):
        cmd = ["docker-compose", "config", "-q"]
    elif shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:  # noqa: S607
        cmd = ["docker", "compose", "config", "-q"]
    else:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose)")
    base = {"PATH": "/usr/bin:/bin:/usr/local/bin", "DATABASE_URL": "postgresql://u:p@db:5432/app"}
    ok = subprocess.run(cmd, cwd=REPO, env={**base, "FLOWER_BASIC_AUTH": "ops:pw"},  # noqa: S603
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(cmd, cwd=REPO, env=base, capture_output=True, text=True)  # noqa: S603
    assert missing.returncode != 0 and "FLOWER_BASIC_AUTH" in missing.stderr
    no_db = subprocess.run(cmd, cwd=REPO, env={**base, "DATABASE_URL": "", "FLOWER_BASIC_AUTH": "ops:pw"},  # noqa: S603
                           capture_output=True, text=True)
    assert no_db.returncode != 0 and "set DATABASE_URL in .env" in no_db.stderr


# starts its own servers or processes (no shared-server fixture says so): not the fast lane
pytestmark = pytest.mark.e2e
