"""The house's rules, read from the source (ast, function-level imports included), so a move that
breaks one fails here instead of in a reviewer's head:

- no import cycle between the project's modules (a cycle hidden behind a function-level import is
  still a cycle);
- worker/fleet/ is leaf infrastructure: it imports no domain package, no CLI, no Celery app;
- a domain package (checks, notify, channels, maintenance, backlog, reports) never imports the CLI, the
  Celery app, the config loader, the tasks or ops/;
- production code (worker/, tasks/) imports ops/ (the devkit and the sample app) only from the CLI's
  dev commands, inside the command function;
- no module takes another package's private (`_name`) definition;
- one writer per fleet table (fleet.notifications and fleet.held_back: notify/outbox.py;
  fleet.job_runs: fleet/runs.py; check_runs, alerts, alert_events: checks/store.py);
- no file of worker/, tasks/, ops/ over 400 lines unless docs/DESIGN.md names it with a reason.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("worker", "tasks", "ops")
DOMAINS = ("worker.checks", "worker.notify", "worker.channels", "worker.maintenance", "worker.backlog",
           "worker.reports")
COMPOSERS = ("worker.app", "worker.config", "worker.packs", "worker.beat", "worker.metrics", "worker.heartbeat", "worker.startup",
             "worker.health", "worker.web", "worker.cli", "tasks", "ops")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module of the project
    names: tuple[str, ...]  # names taken from it (from-imports)
    lazy: bool  # inside a function
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: Path = REPO) -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in (root / pkg).rglob("*.py"):
            if "__pycache__" not in path.parts:
                found[_module_name(path)] = path
    return found


def _imports(modules: dict[str, Path]) -> list[Import]:
    out = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        for node, lazy in _walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _resolve(alias.name, modules)
                    if target:
                        out.append(Import(name, target, (), lazy, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in modules:  # `from worker.fleet import db`: the module itself
                        out.append(Import(name, sub, (), lazy, node.lineno))
                    else:
                        target = _resolve(base, modules)
                        if target:
                            out.append(Import(name, target, (alias.name,), lazy, node.lineno))
    return out


def _walk(tree: ast.AST):
    def visit(node: ast.AST, lazy: bool):
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, lazy
            yield from visit(child, inner)

    yield from visit(tree, False)


def _resolve(dotted: str, modules: dict[str, Path]) -> str | None:
    """The project module that `import dotted` loads last (the longest known prefix)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                found.append(sorted(comp))

    import sys

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return modules, _imports(modules)


def _package_edges(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in imports:
        # `from worker.fleet import x` runs worker/fleet/__init__.py, but an import of a package's own
        # __init__ from inside it is the package reaching its face: count it, it is a real cycle
        edges.setdefault(imp.source, set()).add(imp.target)
    return edges


def test_the_import_graph_has_no_cycle(graph):
    _, imports = graph
    cycles = _cycles(_package_edges(imports))
    detail = []
    for comp in cycles:
        members = set(comp)
        ties = [f"{i.source}:{i.line} -> {i.target}" + (" (in a function)" if i.lazy else "")
                for i in imports if i.source in members and i.target in members]
        detail.append(" <-> ".join(comp) + "\n      " + "\n      ".join(ties))
    assert not cycles, "import cycles:\n  " + "\n  ".join(detail)


def test_fleet_is_leaf_infrastructure(graph):
    _, imports = graph
    bad = [f"{i.source}:{i.line} imports {i.target}" for i in imports
           if _within(i.source, "worker.fleet") and not _within(i.target, "worker.fleet")]
    assert not bad, "worker/fleet must import nothing of the domains, the CLI or the app:\n  " + "\n  ".join(bad)


def test_domains_import_no_composer(graph):
    _, imports = graph
    bad = [f"{i.source}:{i.line} imports {i.target}" for i in imports
           if any(_within(i.source, d) for d in DOMAINS) and any(_within(i.target, c) for c in COMPOSERS)]
    assert not bad, ("a domain package imports worker/fleet and other domains' public functions, never the CLI, "
                     "the Celery app, the config loader, tasks/ or ops/:\n  " + "\n  ".join(bad))


def test_production_code_reaches_the_devkit_only_from_the_dev_commands_lazily(graph):
    _, imports = graph
    bad = [f"{i.source}:{i.line} imports {i.target}" + ("" if i.lazy else " at module level") for i in imports
           if (_within(i.source, "worker") or _within(i.source, "tasks")) and _within(i.target, "ops")
           and not (i.source == "worker.cli.dev" and i.lazy)]
    assert not bad, ("ops/ (devkit, sample app) is imported by production code only from worker/cli/dev.py, "
                     "inside the command:\n  " + "\n  ".join(bad))


def test_no_module_takes_another_packages_private_name(graph):
    _, imports = graph

    def package(m: str) -> str:
        return m.rsplit(".", 1)[0] if m.count(".") >= 1 else m

    bad = [f"{i.source}:{i.line} takes {i.target}.{n}" for i in imports for n in i.names
           if n.startswith("_") and not n.startswith("__") and package(i.source) != package(i.target)
           and not _within(i.source, package(i.target))]
    assert not bad, "private names stay in their package:\n  " + "\n  ".join(bad)


WRITERS = {
    # table -> the one module (relative path) whose SQL writes it
    "fleet.notifications": {"worker/notify/outbox.py"},
    "fleet.held_back": {"worker/notify/outbox.py"},
    "fleet.job_runs": {"worker/fleet/runs.py"},
    "fleet.check_runs": {"worker/checks/store.py"},
    "fleet.alert_events": {"worker/checks/store.py"},
    "fleet.check_schedule": {"worker/checks/store.py"},
    "fleet.job_schedule": {"worker/fleet/runs.py"},
    # the alert state is the engine's; its last_notified column is the outbox's memory of what the
    # provider answered (Slack's ts, for threading), written when a send is recorded
    "fleet.alerts": {"worker/checks/store.py", "worker/notify/outbox.py"},
    "fleet.silences": {"worker/notify/silences.py"},
}
_WRITE = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(fleet\.[a-z_]+)", re.IGNORECASE)


def test_each_fleet_table_has_one_writer():
    seen: dict[str, set[str]] = {}
    for path in sorted(_modules().values()):
        rel = str(path.relative_to(REPO))
        if rel.startswith("worker/fleet/migrations/"):
            continue
        for m in _WRITE.finditer(path.read_text()):
            seen.setdefault(m.group(2).lower(), set()).add(rel)
    inserts = {rel for rel in seen.get("fleet.notifications", set())}
    assert inserts == {"worker/notify/outbox.py"}, f"fleet.notifications is written by {sorted(inserts)}"
    # the fleet's retention job deletes old history rows of every table it keeps tidy (by age, in batches)
    retention = {"worker/maintenance/jobs.py"}
    wrong = {t: sorted(mods - WRITERS.get(t, set()) - retention) for t, mods in seen.items()
             if mods - WRITERS.get(t, set()) - retention}
    assert not wrong, f"fleet tables written outside their owner: {wrong}"
    for table, owners in WRITERS.items():
        assert seen.get(table, set()) & owners, f"{table}: no write found in its owner {sorted(owners)}"


def test_no_file_passes_400_lines_unless_the_design_says_why():
    design = (REPO / "docs" / "DESIGN.md").read_text()
    long = []
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*"):
            if path.suffix not in (".py", ".j2", ".sql") or "__pycache__" in path.parts:
                continue
            n = len(path.read_text().splitlines())
            rel = str(path.relative_to(REPO))
            if n > 400 and f"`{rel}`" not in design:
                long.append(f"{rel} ({n} lines)")
    assert not long, ("over 400 lines, and docs/DESIGN.md (Files over 400 lines) does not say why: "
                      + ", ".join(long))
