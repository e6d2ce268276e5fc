"""YAML loading that remembers where every value came from, so errors can say file:line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from worker.fleet.errors import ConfigError

Loc = tuple[str | int, ...]


# libyaml's parser where PyYAML was built with it (the wheels are): the same documents, nodes and
# marks; with one parse instead of two, loading every pack takes 0.12 s of CPU instead of 0.45 s
# (config is read at every worker, beat and CLI start)
_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BASE):  # type: ignore[misc,valid-type]
    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A value its tag cannot read (`!!int abc`, a date 2001-13-40) is a YAML error at its line, not
        the constructor's ValueError (found by tests/reliability)."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            if isinstance(exc, yaml.YAMLError):
                raise
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.tag.rsplit(':', 1)[-1]} value {str(node.value)[:60]!r}", node.start_mark
            ) from None


def _reject_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value, not a list or a mapping", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})", key_node.start_mark
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _reject_duplicates)


def _lines(node: yaml.Node, loc: Loc, out: dict[Loc, int], within: frozenset[int] = frozenset(),
           blocks: dict[Loc, tuple[int, int]] | None = None) -> None:
    out[loc] = node.start_mark.line + 1
    if blocks is not None and isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        blocks[loc] = (node.start_mark.line + 1, node.end_mark.line)  # its text's lines, 0-based, end excluded
    if id(node) in within:  # an alias of a node that holds it (`a: &x [*x]`): its lines are known
        return
    within = within | {id(node)}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[(*loc, key)] = k.start_mark.line + 1
            _lines(v, (*loc, key), out, within, blocks)
            out[(*loc, key)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*loc, i), out, within, blocks)


class YamlDoc:
    def __init__(self, path: Path, data: Any, lines: dict[Loc, int], text: str = "",
                 blocks: dict[Loc, tuple[int, int]] | None = None) -> None:
        self.path = path
        self.data = data
        self.lines = lines
        self.text_lines = text.splitlines()
        self.blocks = blocks or {}  # each block scalar (`query: |`): the lines of its text

    def field(self, loc: Loc) -> str:
        """The dotted name of `loc`, an element of a list by its `name` where it has one:
        `checks[orders_failed].condition` (not `checks.2.condition`)."""
        out, node = "", self.data
        for part in loc:
            named = None
            if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
                node = node[part]
                named = node.get("name") if isinstance(node, dict) else None
            else:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(named, (str, int)) and not isinstance(named, bool) and str(named).strip():
                out += f"[{named}]"
            else:
                out += f"{'.' if out else ''}{part}"
        return out

    def swallowed(self, loc: Loc) -> str | None:
        """Where the missing field `loc` was written into a block scalar of its mapping (a line
        `field: ...` indented deeper than the block's key, so YAML read it as the block's text), or None."""
        parent, key = tuple(loc[:-1]), loc[-1]
        for block, (first, end) in self.blocks.items():
            if block[:-1] != parent:
                continue
            for n in range(first, min(end, len(self.text_lines))):
                text = self.text_lines[n].strip()
                if text.startswith(f"{key}:") and (len(text) == len(key) + 1 or text[len(key) + 1].isspace()):
                    return (f"{self.path}:{n + 1}: {self.field(loc)}: required field is missing: line {n + 1} "
                            f"({text[:60]}) is read as part of `{block[-1]}`'s text, as it is indented deeper than "
                            f"`{block[-1]}:`; indent `{key}:` as `{block[-1]}:` is")
        return None

    def line_of(self, loc: Loc) -> int:
        loc = tuple(loc)
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return self.lines.get(loc, 1)

    def where(self, loc: Loc) -> str:
        return f"{self.path}:{self.line_of(loc)}"

    def error(self, loc: Loc, message: str) -> ConfigError:
        field = self.field(loc) if loc else "(top level)"
        return ConfigError(f"{self.where(loc)}: {field}: {message}")

    def validation_error(self, exc: ValidationError, base: Loc = ()) -> ConfigError:
        msgs = []
        for err in exc.errors()[:5]:
            loc = (*base, *[p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check its spelling against config/README.md)"
            elif err["type"] == "missing":
                msg = "required field is missing"
                if swallowed := self.swallowed(loc):
                    msgs.append(swallowed)
                    continue
            msgs.append(f"{self.where(loc)}: {self.field(loc)}: {msg}")
        more = len(exc.errors()) - 5
        if more > 0:
            msgs.append(f"... and {more} more")
        return ConfigError("; ".join(msgs))


def load_yaml(path: Path) -> YamlDoc:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        loader = _Loader(text)
        try:  # one parse: the node tree gives the lines, and the data is built from it
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # libyaml marks a problem found at the end of the text on the line after the last one when the
        # text has no final newline: name the file's last line
        line = min(mark.line + 1 if mark else 1, text.count("\n") + 1)
        context = ""
        if exc.context and exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
            context = f" ({exc.context} started at line {exc.context_mark.line + 1})"
        raise ConfigError(f"{path}:{line}: malformed YAML: {exc.problem or exc.context}{context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}:1: malformed YAML: nested too deeply") from None
    lines: dict[Loc, int] = {}
    blocks: dict[Loc, tuple[int, int]] = {}
    if node is not None:
        _lines(node, (), lines, blocks=blocks)
    return YamlDoc(path, data, lines, text, blocks)
