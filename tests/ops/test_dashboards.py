"""Every dashboard of ops/grafana/*.json imports as it is and shows data: it is what
ops/grafana/build.py writes; its data sources are `__inputs` only; its PromQL parses (promtool) and
names only the metrics and labels a real scrape of the exporter has; its SQL, with Grafana's macros
expanded, runs READ ONLY against the seeded sample application (and the fleet schema) and returns
the columns its panel draws."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ops.grafana import build
from ops.sample_app.seed import seed
from tests.support import REPO
from tests.support.targets_metrics import scraped_labels, unfiltered
from worker.checks.engine import run_check
from worker.config import load_config
from worker.fleet.db import create
from worker.maintenance.jobs import run_job

GRAFANA = REPO / "ops" / "grafana"
FILES = sorted(GRAFANA.glob("*.json"))
PROMTOOL = shutil.which("promtool")
REQUIRED = {"__inputs", "__requires", "uid", "title", "schemaVersion", "time", "templating", "panels", "refresh"}
DS_REF = re.compile(r"^\$\{(DS_[A-Z_]+)\}$")
# what Grafana expands in PromQL before it is sent; promtool must see numbers there
PROM_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in board["panels"]:
        out.append(p)
        out += p.get("panels", [])  # a collapsed row holds its panels
    return out


def _targets(board: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(file-and-panel, panel, target) of every PromQL (kind "expr") or SQL ("rawSql") target."""
    return [(f"{board['uid']}: {p['title']}", p, t) for p in _panels(board) for t in p.get("targets", []) if kind in t]


BOARDS = {f.name: _load(f) for f in FILES}
PROM = [t for b in BOARDS.values() for t in _targets(b, "expr")]
SQL = [t for b in BOARDS.values() for t in _targets(b, "rawSql")]


def test_every_dashboard_is_what_the_generator_writes():
    assert sorted(build.DASHBOARDS) == [f.name for f in FILES], "a JSON file without a builder (or the reverse)"
    for name, make in build.DASHBOARDS.items():
        assert (GRAFANA / name).read_text() == build.render(make), f"{name}: run python -m ops.grafana.build"


def _datasource_uids(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["datasource"].get("uid", "")] if isinstance(node.get("datasource"), dict) else []
        if isinstance(node.get("datasource"), str):
            found.append(node["datasource"])
        return found + [u for v in node.values() for u in _datasource_uids(v)]
    if isinstance(node, list):
        return [u for v in node for u in _datasource_uids(v)]
    return []


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_a_dashboard_has_grafanas_import_shape_and_asks_for_its_data_sources(name):
    board = BOARDS[name]
    assert REQUIRED <= set(board), f"{name} lacks {sorted(REQUIRED - set(board))}"
    assert isinstance(board["schemaVersion"], int) and board["uid"] and isinstance(board["templating"]["list"], list)
    panels = _panels(board)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
    for p in panels:
        g = p["gridPos"]
        assert {"h", "w", "x", "y"} <= set(g) and g["x"] + g["w"] <= 24, f"{name}: {p['title']} gridPos {g}"
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), f"{name}: {p['title']} repeats a refId"
        for t in p.get("targets", []):
            assert ("expr" in t) != ("rawSql" in t), f"{name}: {p['title']}: a target is PromQL or SQL"
            assert "rawSql" not in t or t["format"] in ("table", "time_series")
    cells = [(p["gridPos"]["x"] + dx, p["gridPos"]["y"] + dy) for p in panels
             for dx in range(p["gridPos"]["w"]) for dy in range(p["gridPos"]["h"])]
    assert len(cells) == len(set(cells)), f"{name}: panels overlap"
    inputs = {i["name"]: i for i in board["__inputs"]}
    uids = _datasource_uids(board)
    assert uids, f"{name} names no data source"
    for uid in uids:
        m = DS_REF.match(uid)
        assert m, f"{name}: data source {uid!r} is baked in; use an __inputs ${{DS_...}}"
        assert m.group(1) in inputs, f"{name}: {uid} is not declared in __inputs"
    assert {DS_REF.match(u).group(1) for u in uids} == set(inputs), f"{name}: an input no panel uses"
    required = {(r["type"], r["id"]) for r in board["__requires"]}
    assert ("grafana", "grafana") in required
    assert {("datasource", i["pluginId"]) for i in inputs.values()} <= required
    assert {("panel", p["type"]) for p in panels if p["type"] != "row"} <= required


def _promql(expr: str) -> str:
    for k, v in PROM_VARS.items():
        expr = expr.replace(k, v)
    return expr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt install prometheus): PromQL not parsed")
def test_every_promql_expression_parses(tmp_path):
    rules = [{"record": f"dashboard_expr_{i}", "expr": _promql(t["expr"])} for i, (_, _, t) in enumerate(PROM)]
    (tmp_path / "rules.yml").write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}))
    out = subprocess.run([PROMTOOL, "check", "rules", "--lint=none", str(tmp_path / "rules.yml")],  # noqa: S603
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not its functions, keywords, labels or durations)."""
    bare = re.sub(r'"[^"]*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    return {m.group(1) for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", bare)
            if m.group(1).lower() not in KEYWORDS}


def test_metric_names_sees_selectors_not_functions_or_labels():
    assert metric_names('sum by (check) (rate(opsfleet_x{check=~"a|b"}[5m])) / on(job) opsfleet_y > 0') == {
        "opsfleet_x", "opsfleet_y"}


@pytest.fixture(scope="module")
def seeded(app_db_url):
    """The sample app seeded at the database's clock, a maintenance job and every enabled SQL check run
    once on it, so the exporter has every family and the check series' labels to show."""
    engine = create(app_db_url)
    seed(engine, 300)
    cfg = load_config(REPO / "config")
    now = datetime.now(UTC)
    run_job(cfg.maintenance["cleanup_expired_seat_reservations"], monitored=engine, fleet=engine, now=now)
    for check in cfg.checks.values():
        if check.enabled and check.kind == "sql":
            run_check(check, monitored=engine, fleet=engine, now=now, routing=None)
    yield engine, cfg
    engine.dispose()


def test_promql_names_only_metrics_labels_and_checks_the_exporter_publishes(seeded):
    engine, cfg = seeded
    labels = scraped_labels(engine, cfg)
    assert "opsfleet_check_value" in labels and "webhook_name" in labels["opsfleet_check_value"]
    problems = []
    for where, _, t in PROM:
        expr = t["expr"]
        names = metric_names(expr)
        problems += [f"{where}: {n} is not published" for n in sorted(names - set(labels))]
        known = set().union(*(labels.get(n, set()) for n in names))
        for name, matchers in SELECTOR.findall(expr):
            for key, op, value in MATCHER.findall(matchers):
                if key not in labels.get(name, known):
                    problems.append(f"{where}: {name or 'selector'} has no label {key}")
                if key == "check":
                    checks = value.split("|") if op == "=~" else [value]
                    problems += [f"{where}: check {c} is not an enabled check" for c in checks
                                 if c not in cfg.checks or not cfg.checks[c].enabled]
        for grouped in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            problems += [f"{where}: by ({g.strip()}) is no label" for g in grouped.split(",") if g.strip() not in known]
        problems += [f"{where}: legend {{{{{g}}}}} is no label" for g in re.findall(r"\{\{\s*(\w+)\s*\}\}",
                                                                               t.get("legendFormat", ""))
                     if g not in known]
    assert not problems, "\n".join(problems)


def test_every_board_filters_every_query_by_the_target_variable(seeded):
    """A fleet watching several databases: each board has the `target` variable (the targets the
    exporter names, several or All), every PromQL selector of a metric that carries `target` (a real
    scrape says which) filters target=~"$target", and SQL over the fleet's alerts filters the same."""
    engine, cfg = seeded
    targeted = {name for name, labels in scraped_labels(engine, cfg).items() if "target" in labels}
    assert {"opsfleet_check_value", "opsfleet_check_state", "opsfleet_alerts", "opsfleet_check_runs",
            "opsfleet_job_last_run_duration_seconds"} <= targeted
    assert "opsfleet_outbox_due" not in targeted  # the channels' and the outbox's are the whole fleet's
    for name, board in BOARDS.items():
        [var] = [v for v in board["templating"]["list"] if v["name"] == "target"] or [None]
        assert var, f"{name}: no `target` variable"
        assert var["datasource"]["type"] == "prometheus" and var["multi"] and var["includeAll"], name
        m = re.fullmatch(r"label_values\((\w+), target\)", var["definition"])
        assert m and m.group(1) in targeted and var["query"]["query"] == var["definition"], var
    missing = [f"{where}: {sel}" for where, _, t in PROM for sel in unfiltered(t["expr"], targeted)]
    assert not missing, "selectors without target=~\"$target\":\n" + "\n".join(missing)
    fleet_sql = [(w, t["rawSql"]) for w, p, t in SQL if p["datasource"]["uid"] == "${DS_FLEET}"]
    assert fleet_sql and all("COALESCE(NULLIF(target, ''), 'default') IN ($target)" in q for _, q in fleet_sql)


def test_unfiltered_finds_a_selector_without_the_target_matcher():
    targeted = {"opsfleet_check_value", "opsfleet_alerts"}
    assert unfiltered('opsfleet_check_value{target=~"$target", check="opsfleet_alerts"}', targeted) == []
    assert unfiltered('sum(opsfleet_alerts{state="firing"}) + opsfleet_outbox_due', targeted) == [
        'opsfleet_alerts{state="firing"}']
    assert unfiltered("opsfleet_check_value > 0", targeted) == ["opsfleet_check_value"]
    assert unfiltered('opsfleet_check_value{target!~"$target"}', targeted) == ['opsfleet_check_value{target!~"$target"}']


# -- SQL: Grafana's macros, as its Postgres data source expands them ------------------------------
_STEP = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _group(col: str, step: str) -> str:
    m = re.fullmatch(r"'?(\d+)([smhd])'?", step.strip())
    assert m, f"interval {step!r}"
    secs = int(m.group(1)) * _STEP[m.group(2)]
    return f"floor(extract(epoch from {col.strip()})/{secs})*{secs}"


def grafana_sql(query: str, frm: datetime, to: datetime, variables: dict[str, list[str]]) -> str:
    """The query as Grafana sends it for the range frm..to, template variables set to `variables`."""
    f, t = f"'{frm.isoformat()}'", f"'{to.isoformat()}'"
    q = re.sub(r"\$__timeFilter\(([^)]*)\)", lambda m: f"{m.group(1).strip()} BETWEEN {f} AND {t}", query)
    q = re.sub(r"\$__timeGroupAlias\(([^,]*),([^)]*)\)", lambda m: _group(m.group(1), m.group(2)) + ' AS "time"', q)
    q = re.sub(r"\$__timeGroup\(([^,]*),([^)]*)\)", lambda m: _group(m.group(1), m.group(2)), q)
    q = q.replace("$__timeFrom()", f).replace("$__timeTo()", t)
    for name, values in variables.items():
        quoted = ",".join("'" + v.replace("'", "''") + "'" for v in values)
        q = q.replace("${" + name + "}", quoted).replace("$" + name, quoted)
    assert "$" not in q, f"an unknown macro or variable is left: {q}"
    return q


def test_grafana_sql_expands_the_macros():
    at = datetime(2026, 11, 23, 10, tzinfo=UTC)
    q = grafana_sql("SELECT $__timeGroupAlias(created_at, 1h), 1 FROM t WHERE $__timeFilter(created_at) "
                    "AND n IN ($v) AND a < $__timeTo()", at - timedelta(hours=1), at, {"v": ["a", "b'c"]})
    assert q == ("SELECT floor(extract(epoch from created_at)/3600)*3600 AS \"time\", 1 FROM t WHERE created_at "
                 "BETWEEN '2026-11-23T09:00:00+00:00' AND '2026-11-23T10:00:00+00:00' AND n IN ('a','b''c') AND "
                 "a < '2026-11-23T10:00:00+00:00'")


def _read_only(engine, query: str) -> tuple[list[str], list[tuple]]:
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        conn.rollback()
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            cur = conn.execute(query)
            return [c.name for c in cur.description], cur.fetchall()
    finally:
        raw.close()


def _times(rows: list[tuple], i: int) -> bool:
    """Grafana takes a time column as a timestamp or as epoch seconds."""
    return all(isinstance(r[i], datetime) for r in rows) or _numeric(rows, i)


def _numeric(rows: list[tuple], i: int) -> bool:
    values = [r[i] for r in rows if r[i] is not None]
    return bool(values) and all(isinstance(v, (int, float, Decimal)) and not isinstance(v, bool) for v in values)


@pytest.mark.parametrize("case", SQL, ids=[w for w, _, _ in SQL])
def test_every_sql_panel_runs_on_the_seeded_app_and_returns_what_it_draws(seeded, case):
    engine, _ = seeded
    where, panel, target = case
    board = next(b for b in BOARDS.values() if any(p is panel for p in _panels(b)))
    # the SQL variables from their query; `target` (Prometheus) as the seeded app is: the implicit default
    variables = {v["name"]: [r[0] for r in _read_only(engine, v["query"])[1]] if v["datasource"]["type"] == "postgres"
                 else ["default"] for v in board["templating"]["list"]}
    assert all(variables.values()), f"{board['uid']}: a template variable has no values"
    now = datetime.now(UTC)
    cols, rows = _read_only(engine, grafana_sql(target["rawSql"], now - timedelta(hours=24), now, variables))
    assert rows, f"{where}: no rows over the last 24 hours of seeded data"
    if target["format"] == "time_series":
        assert cols[0] == "time" and _times(rows, 0), f"{where}: a time series starts with its time: {cols}"
        values = [i for i, c in enumerate(cols[1:], 1) if c != "metric"]
        assert values and all(_numeric(rows, i) for i in values), f"{where}: value columns {cols[1:]}"
    elif panel["type"] in ("stat", "gauge", "bargauge"):
        assert len(rows) == 1 and any(_numeric(rows, i) for i in range(len(cols))), f"{where}: {cols} {rows}"
    elif panel["type"] in ("piechart", "histogram"):
        assert _numeric(rows, len(cols) - 1), f"{where}: the last column is what the chart counts: {cols}"
        if panel["type"] == "piechart":
            assert all(isinstance(r[0], str) for r in rows), f"{where}: slices are named by the first column"
