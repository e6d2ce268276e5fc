"""ops/systemd/ runs the processes the compose file runs (README, "Run it by hand"): one unit per
compose service with the same command line, reading the environment file the example documents."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest
import yaml

from tests.support import REPO

UNITS = REPO / "ops" / "systemd"


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser


def _command(argv: list[str]) -> list[str]:
    """A command as compose and systemd both mean it: the program's name without its folder, the
    listening address left out (compose binds 0.0.0.0 in its container, a unit 127.0.0.1),
    systemd's %% as the % Celery sees."""
    argv = [arg.replace("%%", "%") for arg in argv]
    if argv[:2] == ["/bin/sh", "-c"] or argv[:2] == ["sh", "-c"]:
        argv = shlex.split(argv[2].rsplit("exec ", 1)[1].replace("$$", "$"))
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--host":
            skip = True
            continue
        if arg.startswith("--address="):
            continue
        out.append(arg.rsplit("/", 1)[-1] if not out else arg)
    return out


def _compose_commands() -> dict[str, list[str]]:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    return {name: _command(svc["command"]) for name, svc in services.items() if svc.get("image") == "opsfleet:latest"}


def test_every_compose_process_has_a_unit_with_its_command_line():
    units = {path.name: _command(shlex.split(_unit(path)["Service"]["ExecStart"])) for path in UNITS.glob("*.service")}
    expected = {"migrate": "opsfleet-migrate.service", "beat": "opsfleet-beat.service", "serve": "opsfleet-serve.service",
                "metrics": "opsfleet-metrics.service", "flower": "opsfleet-flower.service"}
    for service, command in _compose_commands().items():
        unit = expected.get(service, f"opsfleet-{service}.service")
        assert unit in units, f"docker-compose.yml's {service} has no ops/systemd/{unit}"
        assert units[unit] == command, (unit, units[unit], command)
    assert len(units) == len(_compose_commands())


@pytest.mark.parametrize("path", sorted(UNITS.glob("*.service")), ids=lambda p: p.name)
def test_each_unit_reads_the_documented_environment_and_is_named_in_the_readme(path):
    unit = _unit(path)
    assert unit["Service"]["EnvironmentFile"] == "/etc/opsfleet/opsfleet.env"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    if path.name != "opsfleet-migrate.service":
        assert "opsfleet-migrate.service" in unit["Unit"]["After"]
        assert unit["Service"]["Restart"] == "always"
    readme = (REPO / "README.md").read_text()
    name = path.name.removeprefix("opsfleet-worker").removesuffix(".service")
    assert path.name in readme or f"`{name}`" in readme, path.name


def test_the_environment_example_sets_only_documented_variables():
    from worker.fleet.settings import DOCS

    names = [line.split("=", 1)[0] for line in (UNITS / "opsfleet.env.example").read_text().splitlines()
             if line and not line.startswith("#")]
    assert names and set(names) <= set(DOCS), sorted(set(names) - set(DOCS))


def test_the_readme_runs_by_hand_what_the_units_run():
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Run it by hand", 1)[1].split("\n### ", 1)[0]
    lines = [_command(shlex.split(line.split("#", 1)[0])) for line in section.splitlines()
             if line.startswith(("celery ", "opsfleet "))]
    for command in _compose_commands().values():
        if command[:2] != ["opsfleet", "metrics"]:  # serve answers /metrics too
            assert command in lines, command


def test_systemd_accepts_every_unit(tmp_path):
    """systemd-analyze verify: the units parse, and their commands exist once /opt/opsfleet/.venv is
    this checkout's venv."""
    import shutil
    import subprocess
    import sys

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    venv_bin = str(Path(sys.executable).parent)
    for path in UNITS.glob("*.service"):
        text = path.read_text().replace("/opt/opsfleet/.venv/bin", venv_bin)
        text = text.replace("EnvironmentFile=/etc/opsfleet/", "EnvironmentFile=-/etc/opsfleet/")
        (tmp_path / path.name).write_text(text)
    done = subprocess.run([analyze, "verify", "--man=no", *sorted(str(p) for p in tmp_path.glob("*.service"))],
                          capture_output=True, text=True, env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
