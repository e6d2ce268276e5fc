"""Just enough of PostgreSQL's lexer to find the `;` that ends a statement in a check's query.

Quotes ('...', E'...' with backslash escapes, "..."), dollar quotes ($tag$...$tag$) and comments (-- to
the end of the line, nested /* */) hide a `;`; anything else ends the statement. Config validation
uses it to refuse `SELECT ...; DELETE ...` at load time with the line of the query; the check engine's
extended-protocol execution refuses it again at run time.
"""

from __future__ import annotations

import re

_DOLLAR = re.compile(r"\$([A-Za-z_\x80-\uffff][A-Za-z_0-9\x80-\uffff]*)?\$")


def second_statement(sql: str) -> int | None:
    """The 1-based line of the query where a second statement starts, or None when there is one."""
    i, n = 0, len(sql)
    ended_at: int | None = None  # offset of a top-level `;`
    while i < n:
        c = sql[i]
        if ended_at is not None and not c.isspace() and c != ";" and not sql.startswith(("--", "/*"), i):
            return sql.count("\n", 0, i) + 1
        if c == "'" or (c in "eE" and sql.startswith("'", i + 1) and (i == 0 or not _ident_char(sql[i - 1]))):
            backslash = c != "'"
            i += 2 if backslash else 1
            while i < n:
                if backslash and sql[i] == "\\":
                    i += 2
                    continue
                if sql[i] == "'":
                    if sql.startswith("'", i + 1):
                        i += 2
                        continue
                    break
                i += 1
            i += 1
        elif c == '"':
            end = sql.find('"', i + 1)
            while end != -1 and sql.startswith('"', end + 1):
                end = sql.find('"', end + 2)
            i = n if end == -1 else end + 1
        elif c == "$" and (m := _DOLLAR.match(sql, i)) and (i == 0 or not _ident_char(sql[i - 1])):
            end = sql.find(m.group(0), m.end())
            i = n if end == -1 else end + len(m.group(0))
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            if c == ";":
                ended_at = i
            i += 1
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
    out, i, n = [], 0, len(sql)
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
            out.append(" '' ")
            i = j + 1
        elif c == '"':
            end = sql.find('"', i + 1)
            while end != -1 and sql.startswith('"', end + 1):
                end = sql.find('"', end + 2)
            end = n if end == -1 else end
            out.append(sql[i + 1:end].replace('""', '"'))
            i = end + 1
        elif c == "$" and (m := _DOLLAR.match(sql, i)) and (i == 0 or not _ident_char(sql[i - 1])):
            end = sql.find(m.group(0), m.end())
            out.append(" '' ")
            i = n if end == -1 else end + len(m.group(0))
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            out.append(" ")
            i = n if end == -1 else end
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
        else:
            out.append(c)
            i += 1
    return "".join(out)
