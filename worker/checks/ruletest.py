"""Rule tests as data (`opsfleet test`): fixture rows, a sequence of evaluation instants, and the
alert states, values and notifications expected after each, for SQL checks, as `promtool test rules`
does for Prometheus rules.

    check: high_confirmation_error_rate
    now: 2026-11-23T12:00:00Z          # the instant offsets count from (default: this one)
    tests:
      - name: a few failing calls among 200 healthy ones page nobody
        rows:                          # per table, in order; times relative to `now` (-3m, +1h, 0s)
          webhook_logs:
            - {webhook_name: stripe-webhook, status_code: 500, duration_ms: 120, created_at: -1m, repeat: 2}
        evaluations:                   # or `expect:` here, for one evaluation at 0s
          - at: 0s
            rows: {}                   # more rows before this evaluation
            expect:
              alerts: []               # every instance pending or firing afterwards: labels, state, value
              value: 1.47              # the only row's value (abs tolerance `tolerance`, default 0.05)
              instances: [{}]          # the label sets of the rows the query returned
              no_data: false           # true: no row, or only NULL values
              notifications: {email: 0}  # rows this evaluation queued on each channel named (unmuted)
              error: "..."             # the evaluation fails with a message containing this

Each test starts from empty tables (the ones a test of the file wrote, and the fleet's state), with
sequences restarted, so ids are 1, 2, ... in insertion order. A string value holding `{g}` gets the
row's number within its `repeat` substituted. Labels are the query's label columns (a check's static
labels may be written or left out). The runner is given a database that is a throwaway one: the CLI
(`worker/cli/checks.py`) makes it, with the fleet's schema and the application's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import Field, ValidationError, model_validator
from sqlalchemy.engine import Engine

from worker.checks.collect import CheckError, Sample, collect
from worker.checks.engine import evaluate
from worker.checks.spec import Check
from worker.fleet.calls import closest
from worker.fleet.errors import ConfigError
from worker.fleet.fields import Strict
from worker.fleet.sqltext import quote_ident
from worker.fleet.timeutil import parse_duration
from worker.fleet.yamlfile import YamlDoc, load_yaml
from worker.notify.routing import Routing

DEFAULT_NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
_OFFSET = re.compile(r"^([+-])?\s*(\d[\dsmhd]*)$")
_TIME_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")
FLEET_STATE = ("fleet.check_runs", "fleet.alerts", "fleet.alert_events", "fleet.notifications", "fleet.silences",
               "fleet.held_back", "fleet.job_runs")

Rows = dict[str, list[dict[str, Any]]]


class ExpectedAlert(Strict):
    labels: dict[str, str] = Field(default_factory=dict)
    state: Literal["pending", "firing"] = "firing"  # what an instance can be afterwards (resolved ones are gone)
    value: float | None = None


class Expect(Strict):
    alerts: list[ExpectedAlert] | None = None
    value: float | None = None
    instances: list[dict[str, str]] | None = None
    no_data: bool | None = None
    notifications: dict[str, int] | None = None
    error: str | None = None
    tolerance: float = 0.05


class Evaluation(Strict):
    at: str = "0s"
    rows: Rows = Field(default_factory=dict)
    expect: Expect = Field(default_factory=Expect)


class RuleTest(Strict):
    name: str
    now: datetime | None = None
    rows: Rows = Field(default_factory=dict)
    evaluations: list[Evaluation] | None = None  # default: one, at 0s, expecting `expect`
    expect: Expect | None = None  # the one evaluation's expectations, when there is no `evaluations:`
    # the check's own config, changed for this test (e.g. {keep_firing_for: 10m})
    check_overrides: dict[str, Any] = Field(default_factory=dict)
    # evaluate as on this target of config/targets.yaml: the `target` label on every instance, and
    # the state kept under it (expectations need not name it)
    target: str | None = Field(default=None, pattern=r"^[a-z0-9_]+$")

    @model_validator(mode="after")
    def _one_way(self) -> RuleTest:
        if self.evaluations is not None and self.expect is not None:
            raise ValueError("give `expect` for one evaluation at 0s, or `evaluations`, not both")
        return self


class RuleTestFile(Strict):
    check: str
    now: datetime = DEFAULT_NOW
    tests: list[RuleTest] = Field(min_length=1)


@dataclass
class Result:
    path: Path
    tests: int = 0
    evaluations: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def load(path: Path) -> tuple[YamlDoc, RuleTestFile]:
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{path}:1: a rule test file is a mapping with `check:` and `tests:`")
    try:
        return doc, RuleTestFile.model_validate(doc.data)
    except ValidationError as exc:
        raise doc.validation_error(exc) from None


def offset(text: str | int | float, where: str) -> timedelta:
    """`-3m`, `+1h30m`, `0s`, `90s`: a signed duration."""
    s = str(text).strip()
    m = _OFFSET.match(s.replace(" ", ""))
    if not m:
        raise ConfigError(f"{where}: {text!r} is not an offset like -3m, +1h, 0s")
    try:
        td = parse_duration(m.group(2))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return -td if m.group(1) == "-" else td


class Runner:
    """Runs rule test files against one throwaway database holding the fleet's schema and the app's."""

    def __init__(self, engine: Engine, checks: dict[str, Check], routing: Routing | None,
                 schema: str = "the sample application's") -> None:
        self.engine, self.checks, self.routing = engine, checks, routing
        self.schema = schema  # where the application's tables came from, for the message naming a missing one
        self._types: dict[str, dict[str, str]] = {}
        self._dirty: set[str] = set()
        self._superuser: bool | None = None

    # -- the file ------------------------------------------------------------------------------
    def run(self, path: Path) -> Result:
        doc, spec = load(path)
        result = Result(path)
        check = self.checks.get(spec.check)
        if check is None:
            hint = closest(spec.check, self.checks)
            raise doc.error(("check",), f"no check {spec.check!r} in the enabled packs{hint} (`opsfleet checks list`)")
        if check.kind != "sql":
            raise doc.error(("check",), f"{spec.check} is a {check.kind} probe: rule tests run SQL checks")
        for i, test in enumerate(spec.tests):
            result.tests += 1
            subject = check
            if test.check_overrides:
                try:
                    subject = Check.model_validate({**check.model_dump(by_alias=True), **test.check_overrides})
                except ValidationError as exc:
                    raise doc.validation_error(exc, ("tests", i, "check_overrides")) from None
            now = test.now or spec.now
            self._reset()
            self._insert(doc, ("tests", i, "rows"), test.rows, now)
            evaluations = test.evaluations if test.evaluations is not None else [Evaluation(expect=test.expect or Expect())]
            for j, ev in enumerate(evaluations):
                result.evaluations += 1
                loc = ("tests", i, "evaluations", j) if test.evaluations is not None else ("tests", i)
                self._insert(doc, (*loc, "rows"), ev.rows, now)
                at = now + offset(ev.at, doc.where((*loc, "at")))
                context = f"(test {test.name!r}, evaluation at {ev.at})"
                result.failures += [f"{doc.where((*loc, 'expect', key))}: {msg} {context}"
                                    for key, msg in self._evaluate(subject, at, ev.expect, test.target)]
        self._reset()
        return result

    # -- rows ----------------------------------------------------------------------------------
    def _reset(self) -> None:
        """Empty what the last test wrote and restart its sequences (DELETE: a TRUNCATE per test costs
        more than the test on small tables)."""
        with self.engine.begin() as conn:
            tables = sorted({*FLEET_STATE, *self._dirty})
            if self._superuser is None:
                self._superuser = bool(conn.execute(sa.text(
                    "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar())
            if not self._superuser:  # no session_replication_role: one TRUNCATE, in any FK order
                conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
                self._dirty.clear()
                return
            conn.execute(sa.text("SET LOCAL session_replication_role = replica"))  # no FK order to respect
            for t in tables:
                conn.execute(sa.text(f"DELETE FROM {t}"))  # noqa: S608 - quoted identifiers
            for seq in conn.execute(sa.text(
                    """SELECT pg_get_serial_sequence(CAST(c.oid AS regclass)::text, a.attname)
                       FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
                       WHERE c.oid = ANY(CAST(:t AS regclass[]))"""), {"t": tables}).scalars():
                if seq:
                    conn.execute(sa.text("SELECT setval(:s, 1, false)"), {"s": seq})
        self._dirty.clear()

    def _columns(self, table: str, where: str) -> dict[str, str]:
        if table not in self._types:
            with self.engine.connect() as conn:
                if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": quote_ident(table)}).scalar() is None:
                    raise ConfigError(f"{where}: no table {table!r} in the schema the tests run against ({self.schema}): "
                                      "`opsfleet test --schema-from URL` copies a database's tables, `--schema FILE` "
                                      "runs an SQL file (`pg_dump -s` output too)")
                self._types[table] = dict(conn.execute(sa.text(
                    """SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                       WHERE a.attrelid = CAST(:t AS regclass) AND a.attnum > 0 AND NOT a.attisdropped"""),
                    {"t": quote_ident(table)}).all())
        return self._types[table]

    def _insert(self, doc: YamlDoc, loc: tuple, rows: Rows, now: datetime) -> None:
        with self.engine.begin() as conn:
            for table, items in rows.items():
                types = self._columns(table, doc.where((*loc, table)))
                for k, row in enumerate(items):
                    where = doc.where((*loc, table, k))
                    self._insert_row(conn, table, types, dict(row), now, where)
                self._dirty.add(quote_ident(table))
                for col, typ in types.items():  # ids given in the rows: later rows without one continue after
                    if typ in ("integer", "bigint"):
                        seq = conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                                           {"t": quote_ident(table), "c": col}).scalar()
                        if seq:
                            conn.execute(sa.text(f"SELECT setval(:s, GREATEST((SELECT max({quote_ident(col)}) "  # noqa: S608
                                                 f"FROM {quote_ident(table)}), 1))"), {"s": seq})

    def _insert_row(self, conn, table: str, types: dict[str, str], row: dict, now: datetime, where: str) -> None:
        n = row.pop("repeat", 1)
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"{where}: repeat: a whole number of rows, 1 or more")
        exprs, params = [], {"n": n}
        for i, (col, v) in enumerate(row.items()):
            if col not in types:
                raise ConfigError(f"{where}: table {table} has no column {col!r} (it has {', '.join(types)})")
            typ = types[col]
            if typ in _TIME_TYPES and isinstance(v, (str, int)) and not isinstance(v, bool) \
                    and _OFFSET.match(str(v).replace(" ", "")):
                v = now + offset(v, where)
                v = v.date() if typ == "date" else v
            elif isinstance(v, (dict, list)):
                v = json.dumps(v)
            elif isinstance(v, (datetime, date)):
                pass
            elif v is not None and not isinstance(v, str):
                v = str(v) if not isinstance(v, bool) else ("true" if v else "false")
            if isinstance(v, str) and "{g}" in v:
                exprs.append(f"CAST(replace(:p{i}, '{{g}}', g::text) AS {typ})")
            else:
                exprs.append(f"CAST(:p{i} AS {typ})")
            params[f"p{i}"] = v
        cols = ", ".join(quote_ident(c) for c in row)
        try:
            with conn.begin_nested():
                conn.execute(sa.text(f"INSERT INTO {quote_ident(table)} ({cols}) SELECT {', '.join(exprs)} "  # noqa: S608
                                     "FROM generate_series(1, :n) AS g"), params)
        except sa.exc.DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise ConfigError(f"{where}: the row does not go into {table}: {reason}") from None

    # -- one evaluation ------------------------------------------------------------------------
    def _evaluate(self, check: Check, at: datetime, expect: Expect, target: str | None = None) -> list[tuple[str, str]]:
        try:
            samples = collect(check, self.engine, at)
            if target is not None:
                samples = [Sample({**s.labels, "target": target}, s.value, s.reason) for s in samples]
        except CheckError as exc:
            if expect.error is not None and expect.error in str(exc):
                return []
            return [("error", f"expected {'an error containing ' + repr(expect.error) if expect.error else 'no error'}, "
                              f"got {exc}")]
        if expect.error is not None:
            return [("error", f"expected an error containing {expect.error!r}, got none")]
        with self.engine.begin() as conn:
            _, ids, _ = evaluate(check, samples, conn, at, self.routing, target=target or "")
        with self.engine.connect() as conn:
            alerts = conn.execute(sa.text("SELECT labels, state, last_value FROM fleet.alerts WHERE check_name = :c "
                                          "AND target = :t AND state IN ('pending', 'firing')"),
                                  {"c": check.name, "t": target or ""}).all()
            channels = [r[0] for r in conn.execute(sa.text(
                "SELECT channel FROM fleet.notifications WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids})]
        if target is not None:  # the target's own label is the test's, not an expectation's
            samples = [Sample({k: v for k, v in s.labels.items() if k != "target"}, s.value, s.reason) for s in samples]
            alerts = [SimpleNamespace(labels={k: v for k, v in dict(a.labels).items() if k != "target"}, state=a.state,
                                      last_value=a.last_value) for a in alerts]
        out: list[tuple[str, str]] = []
        tol = expect.tolerance

        def close(a: float | None, b: float | None) -> bool:
            return a is not None and b is not None and abs(a - b) <= tol

        if expect.no_data is not None:
            got_none = all(s.value is None for s in samples)
            if got_none != expect.no_data:
                out.append(("no_data", f"expected no_data {str(expect.no_data).lower()}, got "
                                       f"{_show_samples(check, samples)}"))
        if expect.value is not None:
            if len(samples) != 1 or not close(samples[0].value, expect.value):
                out.append(("value", f"expected value {expect.value:g}, got {_show_samples(check, samples)}"))
        if expect.instances is not None:
            got = sorted(_key(_own(check, s.labels)) for s in samples)
            want = sorted(_key(_own(check, lab)) for lab in expect.instances)
            if got != want:
                out.append(("instances", f"expected instances {[dict(k) for k in want]}, got {[dict(k) for k in got]}"))
        if expect.alerts is not None:
            got_alerts = sorted((_key(_own(check, dict(a.labels))), a.state, a.last_value) for a in alerts)
            want_alerts = sorted((_key(_own(check, a.labels)), a.state, a.value) for a in expect.alerts)
            matched = len(got_alerts) == len(want_alerts) and all(
                g[0] == w[0] and g[1] == w[1] and (w[2] is None or close(g[2], w[2]))
                for g, w in zip(got_alerts, want_alerts, strict=True))
            if not matched:
                out.append(("alerts", f"expected alerts {_show_alerts(want_alerts)}, got {_show_alerts(got_alerts)}"))
        if expect.notifications is not None:  # the channels named (which channels exist depends on the packs)
            got_n = {ch: channels.count(ch) for ch in sorted(expect.notifications)}
            want_n = dict(sorted(expect.notifications.items()))
            if got_n != want_n:
                out.append(("notifications", f"expected notifications {want_n}, got {got_n}"))
        return out


def _own(check: Check, labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if not (k in check.labels and check.labels[k] == v)}


def _key(labels: dict[str, str]) -> tuple:
    return tuple(sorted(labels.items()))


def _show_samples(check: Check, samples: list) -> str:
    if not samples:
        return "no rows"
    return ", ".join(f"{dict(_key(_own(check, s.labels))) or '{}'}={'NULL' if s.value is None else f'{s.value:g}'}"
                     for s in samples)


def _show_alerts(items: list[tuple]) -> str:
    if not items:
        return "none"
    return "[" + ", ".join(f"{dict(k) or '{}'} {state}" + ("" if v is None else f" {v:g}") for k, state, v in items) + "]"


def discover(roots: list[Path]) -> list[Path]:
    """The rule test files of these pack folders: <pack>/tests/*.yaml."""
    out: list[Path] = []
    for root in roots:
        out += sorted((root / "tests").glob("*.yaml"))
    return out
