"""worker.fleet.sqltext: where a check's query would start a second statement (config validation)."""

from __future__ import annotations

import pytest

from worker.fleet.sqltext import second_statement


@pytest.mark.parametrize(
    ("sql", "line"),
    [
        ("SELECT 1 AS value", None),
        ("SELECT 1 AS value;", None),
        ("SELECT 1 AS value;\n  -- trailing comment\n", None),
        ("SELECT 1 AS value;;", None),
        ("SELECT ';' AS value", None),
        ("SELECT 'it''s; fine' AS value", None),
        ("SELECT E'\\\\' AS value; DELETE FROM t", 1),  # E'\\' is one backslash: the ; is outside
        ("SELECT E'\\'; still inside' AS value", None),
        ('SELECT "odd;name" AS value FROM t', None),
        ("SELECT $$;$$ AS value", None),
        ("SELECT $fn$ ; $x$ ; $fn$ AS value", None),
        ("/* ; /* nested ; */ ; */ SELECT 1 AS value", None),
        ("SELECT 1 AS value -- ; not a statement\n", None),
        ("SELECT 1 AS value; DELETE FROM t", 1),
        ("SELECT 1 AS value\n;\nCOMMIT", 3),
        ("SELECT 1 AS value; /* c */ 'x'", 1),
    ],
)
def test_second_statement(sql, line):
    assert second_statement(sql) == line

