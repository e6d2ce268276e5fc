"""Summary and details templates of a check: sandboxed Jinja2, validated when config loads, and
rendered so that a template error never aborts a check run."""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any

import jinja2.sandbox
from pydantic import BeforeValidator

_templates = jinja2.sandbox.SandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined)


def _template(v: str) -> str:
    try:
        _templates.parse(v)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error: {exc.message}") from None
    return v


Template = Annotated[str, BeforeValidator(_template)]


@functools.lru_cache(maxsize=4096)
def _compiled(template: str) -> jinja2.Template:
    """A template's compiled form, once per text: compiling took 3.7 ms, most of a one-instance
    check's cost beyond its query (bench/checks.py); a fleet has a few hundred distinct texts."""
    return _templates.from_string(template)


def render(template: str, **context: Any) -> str:
    """Render a summary/details template (sandboxed; a missing name renders as an error marker)."""
    try:
        return _compiled(template).render(**context)
    except Exception as exc:  # a template must never abort a check run (e.g. round() of a NULL value)
        return f"{template} [template error: {exc}]"


# what a description says for the people who maintain the rule, not for the people an alert wakes
_CITES = re.compile(r"^\s*(?:seed \d{3}|DESIGN\.md|Fleet health)\b", re.IGNORECASE)
_INTERNAL = re.compile(r"\bseeds?\b|DESIGN\.md|config/|\.ya?ml\b|ops/runbooks|pg_cron", re.IGNORECASE)


def _citation_end(text: str) -> int:
    """Where a leading citation ("seed 004, Alert Configuration / 1. X (a: b): ") ends: the first
    ': ' outside parentheses and quotes; 0 when the text does not start with one."""
    if not _CITES.match(text):
        return 0
    depth, quoted = 0, False
    for i, c in enumerate(text):
        if c == '"':
            quoted = not quoted
        elif not quoted and c == "(":
            depth += 1
        elif not quoted and c == ")":
            depth = max(0, depth - 1)
        elif not quoted and depth == 0 and c == ":" and text[i + 1:i + 2] == " ":
            return i + 2
    return 0


def _drop_internal_parentheses(text: str) -> str:
    out, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c == "(":
            if depth == 0:
                out.append(text[start:i])
                start = i
            depth += 1
        elif c == ")" and depth:
            depth -= 1
            if depth == 0:
                group = text[start:i + 1]
                if not _INTERNAL.search(group):
                    out.append(group)
                start = i + 1
    out.append(text[start:])
    return re.sub(r"\s+([,.;])", r"\1", re.sub(r"\s{2,}", " ", "".join(out))).strip()


def public_text(description: str) -> str:
    """A check's description as a message may show it: without the leading citation of the guide it
    comes from ("seed 004, Alert Configuration / Critical Alerts / 1. ...: "), without parentheses
    and sentences that point at the seeds, the design notes or config files."""
    text = " ".join(description.split())
    text = _drop_internal_parentheses(text[_citation_end(text):])
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z(\"'])", text)
    kept = " ".join(s for s in sentences if not _INTERNAL.search(s)).strip()
    return kept[:1].upper() + kept[1:]
