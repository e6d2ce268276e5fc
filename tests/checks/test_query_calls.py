"""Config validation reads a check's query with Postgres's own parser (worker/checks/sqlcalls.py): a
side-effect function is refused wherever it is called, inside the SQL text the query hands to
query_to_xml and its kin too (which used to pass: the text was blanked as a string before a regex
looked), with the file and line of the query; SQL text that cannot be read before it runs is refused;
every shipped pack still loads whole."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml

from tests.support import REPO
from worker.config import load_config
from worker.fleet.errors import ConfigError

CHECK = """\
checks:
  - name: sneaky
    description: a check of the test's own
    schedule: 1m
    query: |
{query}
    condition: "> 0"
    severity: info
    summary: s
"""
HOSTILE = {
    # the two bypasses of issue 21: SQL text that query_to_xml runs, in quotes and in dollar quotes
    "terminate": ("SELECT count(*) AS value\nFROM pg_stat_activity a\n"
                  "WHERE query_to_xml('SELECT pg_terminate_backend(' || 1 || ')', false, true, '') IS NOT NULL",
                  "calls query_to_xml() (line 3 of the query) with SQL text that cannot be read before it runs"),
    "terminate_literal": ("SELECT 1 AS value\nFROM query_to_xml('SELECT pg_terminate_backend(pid) FROM pg_stat_activity',"
                          " false, true, '') AS x",
                          "calls pg_terminate_backend() (line 2 of the query, in the SQL text given to query_to_xml())"),
    "advisory": ("SELECT (xpath('/row/v/text()',\n  query_to_xml($q$SELECT pg_advisory_lock(42)::text AS v$q$, false, "
                 "true, '')))[1]::text IS NOT NULL AS value",
                 "calls pg_advisory_lock() (line 2 of the query, in the SQL text given to query_to_xml())"),
    "nested": ("SELECT 1 AS value FROM pg_catalog.query_to_xml_and_xmlschema(\n"
               "  E'SELECT query_to_xml(''SELECT pg_reload_conf()'', true, true, '''')', true, true, '')",
               "calls pg_reload_conf() (line 1 of the query, in the SQL text given to query_to_xml(), in the SQL text "
               "given to query_to_xml_and_xmlschema())"),
    "named_argument": ("SELECT 1 AS value FROM query_to_xml(nulls => true, tableforest => true, targetns => '',\n"
                       "  query => 'SELECT lo_unlink(1)')", "calls lo_unlink() (line 1 of the query"),
    "case_branch": ("SELECT 1 AS value FROM query_to_xml(CASE WHEN random() > 2 THEN 'SELECT 1'\n"
                    "  ELSE 'SELECT pg_cancel_backend(1)' END, false, true, '')", "calls pg_cancel_backend() (line 1"),
    "format_s": ("SELECT 1 AS value FROM query_to_xml(format('SELECT %s', current_setting('x')), false, true, '')",
                 "with SQL text that cannot be read before it runs"),
    "ts_stat": ("SELECT count(*) AS value\nFROM ts_stat('SELECT to_tsvector(pg_advisory_unlock_all()::text)')",
                "calls pg_advisory_unlock_all() (line 2 of the query, in the SQL text given to ts_stat())"),
    "qualified_from": ("SELECT 1 AS value FROM pg_catalog.pg_try_advisory_lock(42)", "calls pg_try_advisory_lock()"),
    "syntax": ("SELECT 1 AS value\nFROM WHERE", "the query does not parse: syntax error at or near \"WHERE\" (line 2"),
    "inner_syntax": ("SELECT 1 AS value FROM query_to_xml('SELEC 1', true, true, '')",
                     "the SQL text given to query_to_xml() does not parse"),
}


def _folder(tmp_path, query: str):
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "checks.yaml").write_text(CHECK.format(query=textwrap.indent(query, " " * 6)))
    return cfg


@pytest.mark.parametrize("case", HOSTILE)
def test_a_side_effect_inside_sql_text_is_refused_with_its_file_and_line(case, tmp_path):
    query, needle = HOSTILE[case]
    cfg = _folder(tmp_path, query)
    with pytest.raises(ConfigError) as err:
        load_config(cfg, packs=[])
    text = str(err.value)
    assert text.startswith(f"{cfg / 'checks.yaml'}:5: checks[sneaky].query: "), text  # the file and the query's line
    assert needle in text and "\n" not in text, text


@pytest.mark.parametrize("query", [
    # what sql text may hold and still be read: %I and %L are quoted by the server, CASE of literals
    "SELECT 1 AS value FROM query_to_xml(format('SELECT count(*) FROM %I.pg_stat_statements', 'public'), "
    "false, true, '')",
    "SELECT 1 AS value FROM query_to_xml(CASE WHEN true THEN 'SELECT 1' ELSE 'SELECT 2' END, false, true, '')",
    "SELECT length('pg_terminate_backend(1)') AS value",  # a string nothing runs
    "SELECT 1 AS value FROM query_to_xml('SELECT ''pg_advisory_lock(1)'' AS s', false, true, '')",
    "SELECT count(*) AS value FROM pg_stat_activity WHERE backend_start < :now - interval '5 minutes'",
])
def test_what_only_reads_loads(query, tmp_path):
    cfg = load_config(_folder(tmp_path, query), packs=[])
    assert cfg.checks["sneaky"].query.strip() == query


def _names(folder) -> set[str]:
    paths = [folder / "checks.yaml", *sorted((folder / "checks").glob("*.yaml"))]
    return {c["name"] for p in paths if p.is_file() for c in (yaml.safe_load(p.read_text()) or {}).get("checks") or []}


def test_every_check_of_every_shipped_pack_loads():
    cfg = load_config(REPO / "config", packs="all")
    packs = [p for p in (REPO / "config").iterdir() if (p / "pack.yaml").is_file()]
    assert len(packs) >= 7
    for pack in packs:
        names = _names(pack)
        assert names and {n for n, p in cfg.check_pack.items() if p == pack.name} == names, pack.name
    assert sum(1 for c in cfg.checks.values() if c.query and re.search(r"query_to_xml", c.query)) >= 3  # still read

