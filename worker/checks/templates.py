"""Summary and details templates of a check: sandboxed Jinja2, validated when config loads, and
rendered so that a template error never aborts a check run."""

from __future__ import annotations

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


def render(template: str, **context: Any) -> str:
    """Render a summary/details template (sandboxed; a missing name renders as an error marker)."""
    try:
        return _templates.from_string(template).render(**context)
    except Exception as exc:  # a template must never abort a check run (e.g. round() of a NULL value)
        return f"{template} [template error: {exc}]"
