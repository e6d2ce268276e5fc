"""Just enough of PostgreSQL's lexer to find the `;` that ends a statement in a check's query.

Quotes ('...', E'...' with backslash escapes, "..."), dollar quotes ($tag$...$tag$) and comments (-- to
the end of the line, nested /* */) hide a `;`; anything else ends the statement. Config validation
uses it to refuse `SELECT ...; DELETE ...` at load time with the line of the query; the check engine's
extended-protocol execution refuses it again at run time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_DOLLAR = re.compile(r"\$([A-Za-z_\x80-\uffff][A-Za-z_0-9\x80-\uffff]*)?\$")


def _pieces(sql: str) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) over `sql`: `literal` ('...', E'...', $tag$...$tag$), `quoted` (a "name",
    `quoted_open` when it never closes), `comment` (-- to the end of the line, nested /* */), or `code`
    (one character). An unclosed literal or comment runs to the end."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "'" or (c in "eE" and sql.startswith("'", i + 1) and (i == 0 or not _ident_char(sql[i - 1]))):
            backslash = c != "'"
            j = i + (2 if backslash else 1)
            while j < n:
                if backslash and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == "'":
                    if sql.startswith("'", j + 1):
                        j += 2
                        continue
                    break
                j += 1
            yield "literal", i, min(j + 1, n)
            i = j + 1
        elif c == '"':
            end = sql.find('"', i + 1)
            while end != -1 and sql.startswith('"', end + 1):
                end = sql.find('"', end + 2)
            yield ("quoted_open", i, n) if end == -1 else ("quoted", i, end + 1)
            i = n if end == -1 else end + 1
        elif c == "$" and (m := _DOLLAR.match(sql, i)) and (i == 0 or not _ident_char(sql[i - 1])):
            end = sql.find(m.group(0), m.end())
            end = n if end == -1 else end + len(m.group(0))
            yield "literal", i, end
            i = end
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end == -1 else end
            yield "comment", i, end
            i = end
        elif sql.startswith("/*", i):
            start, depth, i = i, 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            yield "comment", start, i
        else:
            yield "code", i, i + 1
            i += 1


def second_statement(sql: str) -> int | None:
    """The 1-based line of the query where a second statement starts, or None when there is one."""
    ended = False  # a top-level `;` was seen
    for kind, start, _ in _pieces(sql):
        c = sql[start]
        if ended and kind != "comment" and not (kind == "code" and (c.isspace() or c == ";")):
            return sql.count("\n", 0, start) + 1
        if kind == "code" and c == ";":
            ended = True
    return None


def _ident_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def quote_ident(ident: str) -> str:
    """Quote a validated identifier (optionally schema.table): "schema"."table"."""
    return ".".join('"' + p.replace('"', '""') + '"' for p in ident.split("."))


def code_only(sql: str) -> str:
    """`sql` with string literals ('...', E'...', $tag$...$tag$) and comments blanked out and double
    quotes dropped from quoted identifiers: what is left is what the server would run as names and
    keywords (for a word-boundary search that a literal mentioning a name cannot trip)."""
    out = []
    for kind, start, end in _pieces(sql):
        if kind == "literal":
            out.append(" '' ")
        elif kind == "comment":
            out.append(" ")
        elif kind in ("quoted", "quoted_open"):
            out.append(sql[start + 1:end - 1 if kind == "quoted" else end].replace('""', '"'))
        else:
            out.append(sql[start])
    return "".join(out)


def statements(sql: str) -> list[tuple[int, str]]:
    """The statements of an SQL script, each with the 1-based line it starts on (its first line that is
    not blank or a comment), split at each top-level `;`; empty ones are left out."""
    out: list[tuple[int, str]] = []
    first = None  # the offset of the current statement's first character that is not blank or a comment
    for kind, start, end in _pieces(sql):
        if kind == "comment":
            continue
        c = sql[start]
        if kind == "code" and c == ";":
            if first is not None:
                out.append((sql.count("\n", 0, first) + 1, sql[first:end]))
            first = None
        elif first is None and not (kind == "code" and c.isspace()):
            first = start
    if first is not None:
        out.append((sql.count("\n", 0, first) + 1, sql[first:].rstrip()))
    return out
