"""The functions a check's query calls, read by Postgres's own parser (pglast, libpg_query), so config
validation refuses a side-effect function wherever the query calls it: in a CTE, a FROM, a quoted name,
and inside the SQL text the query hands to a function that runs it (query_to_xml and its kin, ts_stat:
that text is parsed and walked in turn, each text a CASE or a format() of a literal can make; when it
is anything else there is nothing to read, so the call is refused). A name inside a string that nothing runs, a comment or a column is no call.

This is the first wall only: a function of the database's own can do anything its owner let it.
The second is the role (read-only, with a statement timeout: README, Least privilege)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from pglast.parser import ParseError, parse_sql_json
from sqlalchemy.dialects import postgresql

from worker.fleet.sqltext import code_only, second_statement

# functions a READ ONLY transaction still lets a query call, with effects outside it (tests/reliability
# shows each on a real server)
SIDE_EFFECTS = re.compile(r"pg_terminate_backend|pg_cancel_backend|pg_reload_conf|pg_(?:try_)?advisory_\w+|lo_\w+|"
                          r"dblink\w*")
# functions that run the SQL text they are given: (name pattern, the argument's position, its name)
EXECUTORS = ((re.compile(r"query_to_\w+"), 0, "query"), (re.compile(r"ts_stat"), 0, "sqlquery"))
MAX_DEPTH = 3  # SQL text inside SQL text inside SQL text: deeper is refused, not read
_DIALECT = postgresql.dialect(paramstyle="numeric_dollar")  # :now as $1, which the parser reads


class Refused(ValueError):
    """Why a query is refused: one line, with the line of the query it is about."""


@dataclass(frozen=True)
class Call:
    name: str  # as the server resolves it: the last part of a qualified name, unquoted
    line: int  # 1-based, in the check's query (for a call inside SQL text: the line of the executor's call)
    via: tuple[str, ...] = ()  # the executors whose SQL text holds it, outermost first


def _line(sql: str, offset: int) -> int:
    return sql.encode()[:max(offset, 0)].count(b"\n") + 1


def _parse(sql: str, where: str) -> list[dict]:
    """The FuncCall nodes of `sql`'s parse tree, collected as the JSON is decoded (no walk in Python)."""
    found: list[dict] = []

    def hook(d: dict) -> dict:
        if "FuncCall" in d:
            found.append(d["FuncCall"])
        return d

    try:
        json.loads(parse_sql_json(sql), object_hook=hook)
    except ParseError as exc:
        at = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        raise Refused(f"{where} does not parse: {exc.args[0]} (line {sql.count(chr(10), 0, at) + 1} of it)") from None
    except RecursionError:
        raise Refused(f"{where} nests too deeply to be read") from None
    return found


_FORMAT = re.compile(r"%(?:(\d+)\$)?-?(?:\d+|\*(?:\d+\$)?)?([sIL%])")


def _texts(node: object) -> list[str] | None:
    """Every SQL text an expression can hand to an executor, when it is made of what can be read before
    it runs: a string constant ('...', E'...', $$...$$, cast or not), NULL, a CASE whose results are
    such, or format() of such a template whose %I and %L are quoted by the server (a %s takes only
    one such text); else None."""
    while isinstance(node, dict) and "TypeCast" in node:
        node = node["TypeCast"].get("arg")
    if not isinstance(node, dict):
        return None
    if "A_Const" in node:
        const = node["A_Const"]
        if const.get("isnull"):
            return []
        sval = const.get("sval")
        return [sval.get("sval", "")] if isinstance(sval, dict) else None
    if "CaseExpr" in node:
        case = node["CaseExpr"]
        branches = [w.get("CaseWhen", {}).get("result") for w in case.get("args") or []]
        out: list[str] = []
        for b in [*branches, *([case["defresult"]] if case.get("defresult") is not None else [])]:
            got = _texts(b)
            if got is None:
                return None
            out += got
        return out
    call = node.get("FuncCall")
    names = [n["String"]["sval"] for n in (call or {}).get("funcname", []) if isinstance(n, dict) and "String" in n]
    if names and names[-1].lower() == "format" and call.get("args"):
        return _format(call["args"])
    return None


def _format(args: list) -> list[str] | None:
    """format(template, ...) with its %I and %L as quoted placeholders and each %s as its one text."""
    templates = _texts(args[0])
    if templates is None:
        return None
    out = []
    for template in templates:
        position, parts, end = 0, [], 0
        for m in _FORMAT.finditer(template):
            parts.append(template[end:m.start()])
            end = m.end()
            kind = m.group(2)
            if kind == "%":
                parts.append("%")
                continue
            position = int(m.group(1)) if m.group(1) else position + 1
            if kind == "I":
                parts.append('"opsfleet_format_arg"')
            elif kind == "L":
                parts.append("'opsfleet_format_arg'")
            else:
                got = _texts(args[position]) if position < len(args) else None
                if got is None or len(got) != 1:
                    return None
                parts.append(got[0])
        out.append("".join(parts) + template[end:])
    return out


def _sql_argument(args: list, position: int, name: str) -> object:
    for a in args:
        named = a.get("NamedArgExpr") if isinstance(a, dict) else None
        if named and named.get("name") == name:
            return named.get("arg")
    positional = [a for a in args if not (isinstance(a, dict) and "NamedArgExpr" in a)]
    return positional[position] if len(positional) > position else None


def calls(query: str) -> list[Call]:
    """Every function call of `query` (a check's query, :now bound), those in SQL text handed to an
    executor included. Refused when the query, or such a text, does not parse or is not a literal."""
    text = str(sa.text(query).compile(dialect=_DIALECT))
    return list(_walk(text, (), 0, None))


def _walk(sql: str, via: tuple[str, ...], depth: int, at: int | None) -> Iterator[Call]:
    """The calls of `sql`; `at`: the query's line of the executor call whose text `sql` is (None: the query)."""
    for call in _parse(sql, "the query" if not via else f"the SQL text given to {via[-1]}()"):
        names = [n["String"]["sval"] for n in call.get("funcname", []) if isinstance(n, dict) and "String" in n]
        name = names[-1].lower() if names else ""
        line = at or _line(sql, call.get("location", 0))
        yield Call(name, line, via)
        yield from _executed(call, name, line, via, depth)


def _executed(call: dict, name: str, line: int, via: tuple[str, ...], depth: int) -> Iterator[Call]:
    """The calls in the SQL text `call` runs, when `name` is an executor."""
    for pattern, position, arg_name in EXECUTORS:
        if pattern.fullmatch(name):
            texts = _texts(_sql_argument(call.get("args") or [], position, arg_name))
            inside = "" if not via else f", in the SQL text given to {via[-1]}()"
            if texts is None:
                raise Refused(f"the query calls {name}() (line {line} of the query{inside}) with SQL text that cannot "
                              "be read before it runs (a string literal, a CASE of them, or format() of one with %I "
                              "and %L): write the query itself, or its text in one of those forms")
            if depth >= MAX_DEPTH:
                raise Refused(f"the query nests SQL text more than {MAX_DEPTH} deep (line {line}); a check runs "
                              "its own query")
            for text in texts:
                yield from _walk(text, (*via, name), depth + 1, line)
            return


def side_effect(query: str) -> str | None:
    """Why the query is refused for a side-effect function it calls (one line), or None."""
    for c in calls(query):
        if SIDE_EFFECTS.fullmatch(c.name):
            inside = "".join(f", in the SQL text given to {v}()" for v in reversed(c.via))
            return (f"the query calls {c.name}() (line {c.line} of the query{inside}), which acts even in a READ ONLY transaction "
                    "(signals backends, reloads the server, takes session locks, reads or writes server files, or "
                    "writes through another connection); a check only reads")
    return None


def read_only_problem(query: str, what: str) -> str | None:
    """Why `query` may not run as `what` runs it ("a check", "evidence": one statement, READ ONLY), or
    None: a second statement, a first word that is not SELECT / WITH / VALUES / TABLE, or a side-effect
    function wherever Postgres's parser finds it (side_effect)."""
    line = second_statement(query)
    if line is not None:
        return f"the query holds a second SQL statement (line {line} of the query); {what} runs one statement, READ ONLY"
    code = code_only(query)
    first = re.match(r"\s*\(*\s*(\w+)", code)
    if first is None or first.group(1).lower() not in ("select", "with", "values", "table"):
        return (f"the query starts with {(first.group(1) if first else code.strip()[:20])!r}: {what} runs one SELECT "
                "(or WITH ... SELECT), READ ONLY")
    return side_effect(query)  # read by Postgres's parser: SQL text handed to query_to_xml and kin too
