"""The CLI on a fleet of several targets (config/targets.yaml): `checks list` names each check's targets
and lists one target's, `checks backtest --target` replays on that target's database with its labels,
`alerts ack --target` and `alerts history --target` touch and show only that target's alerts, and an
unknown --target is one line naming the option and the targets, exit 2, wherever it is given."""

from __future__ import annotations

import json

import pytest

from tests.support.cli import run_cli
from tests.support.targets_cli import jobs_database, target_env, write_config

# the route sends target a's alerts only: what a backtest counts shows whether it gave the target's labels
ROUTING = {"channels": {"email": {"kind": "email"}},
           "routes": [{"match": {"target": "a"}, "channels": ["email"], "group_wait": "0s"}]}


@pytest.fixture
def targets(cli_env, fleet, fresh_database, tmp_path):
    """Targets a and b (the app pack: 5 and 4 jobs waiting, so jobs_backlog fires on both) and c (the
    postgres pack only); the environment of a CLI reading them."""
    urls = {"a": jobs_database(fresh_database, 5), "b": jobs_database(fresh_database, 4),
            "c": jobs_database(fresh_database, 0)}
    config = write_config(tmp_path / "config", {"a": "[app]", "b": "[app]", "c": "[postgres]"}, ROUTING)
    return target_env(cli_env, config, urls)


def cli(args: list[str], env: dict[str, str]):
    proc = run_cli(args, env)
    assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc


def cli_json(args: list[str], env: dict[str, str]):
    return json.loads(cli([*args, "--json"], env).stdout)


def one_line_error(args: list[str], env: dict[str, str]) -> str:
    proc = run_cli(args, env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, (args, proc.stderr)
    return lines[0]


def test_checks_list_names_each_checks_targets_and_lists_one_targets_with_its_state(targets):
    cli(["checks", "run", "jobs_backlog", "--target", "a"], targets)
    every = {c["name"]: c for c in cli_json(["checks", "list"], targets)}
    assert every["jobs_backlog"]["targets"] == ["a", "b"]
    assert every["db_connections_high"]["targets"] == ["c"]  # a check of the postgres pack: c's only
    assert every["database_down"]["targets"] is None  # the fleet's own: once, on no target
    assert list(every["jobs_backlog"])[:3] == ["name", "pack", "targets"]

    on_a = {c["name"]: c for c in cli_json(["checks", "list", "--target", "a"], targets)}
    assert list(on_a) == ["jobs_backlog"]
    assert (on_a["jobs_backlog"]["states"], on_a["jobs_backlog"]["last_status"]) == (["firing"], "ok")
    on_b = cli_json(["checks", "list", "--target", "b"], targets)
    assert [(c["name"], c["states"], c["last_run_at"]) for c in on_b] == [("jobs_backlog", [], None)]  # a's run is not b's
    on_c = cli_json(["checks", "list", "--target", "c"], targets)
    assert on_c and {c["name"] for c in on_c} == {n for n, c in every.items() if c["targets"] and "c" in c["targets"]}
    assert "jobs_backlog" not in {c["name"] for c in on_c}

    text = cli(["checks", "list"], targets).stdout
    assert "a, b" in text and "fleet (once)" in text


def test_backtest_replays_on_the_named_targets_database_with_its_labels(targets):
    on_a = cli(["checks", "backtest", "jobs_backlog", "--target", "a", "--since", "10m", "--step", "5m"], targets).stdout
    assert "jobs_backlog on target a" in on_a and "target=a" in on_a
    assert "fired 1 time(s), would have sent 1 notification(s) (email 1), 0 error(s)" in on_a, on_a
    on_b = cli(["checks", "backtest", "jobs_backlog", "--target", "b", "--since", "10m", "--step", "5m"], targets).stdout
    assert "fired 1 time(s), would have sent 0 notification(s) (none), 0 error(s)" in on_b, on_b  # the route is a's

    several = one_line_error(["checks", "backtest", "jobs_backlog"], targets)
    assert several.startswith("opsfleet: error: --target: check jobs_backlog runs on 2 targets (a, b)"), several
    elsewhere = one_line_error(["checks", "backtest", "jobs_backlog", "--target", "c"], targets)
    assert "does not run on target 'c' (it runs on: a, b)" in elsewhere, elsewhere


def test_alerts_ack_and_history_take_only_the_named_targets_alerts(targets):
    for t in "ab":
        assert "recorded: ok, 1 transition" in cli(["checks", "run", "jobs_backlog", "--target", t], targets).stdout

    acked = cli(["alerts", "ack", "jobs_backlog", "--target", "b", "--comment", "draining b"], targets).stdout
    assert acked.count("acknowledged") == 1 and "target=b" in acked, acked
    alerts = {a["target"]: a for a in cli_json(["alerts", "list"], targets)}
    assert (alerts["b"]["acked_at"] is not None, alerts["b"]["ack_comment"]) == (True, "draining b")
    assert alerts["a"]["acked_at"] is None  # the same check, another target: not acknowledged
    none = one_line_error(["alerts", "ack", "jobs_backlog", "--target", "c"], targets)
    assert "no firing alert of that target is 'jobs_backlog'" in none and "0 alert(s) firing of that target" in none

    of_a = cli_json(["alerts", "history", "--target", "a"], targets)
    assert {e["labels"].get("target") for e in of_a["entries"]} == {"a"}
    assert {(e["kind"], e["what"]) for e in of_a["entries"]} == {("transition", "inactive -> firing"),
                                                                ("notification", "firing")}
    assert list(of_a["sent"]) == ["email"] and of_a["held_back"] is None  # held_back is counted per check
    of_b = cli_json(["alerts", "history", "--target", "b"], targets)
    assert [(e["kind"], e["labels"]["target"]) for e in of_b["entries"]] == [("transition", "b")]
    assert of_b["sent"] == {}  # a's notification is not b's
    every = cli_json(["alerts", "history"], targets)
    assert {e["labels"].get("target") for e in every["entries"]} == {"a", "b"} and every["held_back"] is not None
    text = cli(["alerts", "history", "--target", "a"], targets).stdout
    assert "history of target a" in text and "counted per check, not per target" in text


@pytest.mark.parametrize("args", [
    ["checks", "list"], ["checks", "backtest", "jobs_backlog"], ["checks", "run", "jobs_backlog"],
    ["alerts", "list"], ["alerts", "ack", "jobs_backlog"], ["alerts", "history"],
    ["report", "weekly"], ["report", "monthly"],
], ids=lambda a: "-".join(a[:2]))
def test_an_unknown_target_is_one_line_naming_the_option_and_the_targets(targets, args):
    line = one_line_error([*args, "--target", "zz"], targets)
    assert "--target" in line and "'zz'" in line and "a, b, c" in line, line
