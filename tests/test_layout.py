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
- no file of worker/, tasks/, ops/ over 400 lines unless docs/DESIGN.md's section "Files over 400
  lines" names it with a reason (a path named elsewhere on the page, the writers table's, does not
  count);
- notify's policy (plan.py) imports no SQL, holds.py writes no table, the backtest reads only the
  plan and the routing of notify;
- under tests/, no file imports a test module or a conftest: what test modules share is in
  tests/support/ (plain modules), their fixtures in the conftest.py of their folder or above it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import REPO

PACKAGES = ("worker", "tasks", "ops")
DOMAINS = ("worker.checks", "worker.notify", "worker.channels", "worker.maintenance", "worker.backlog",
           "worker.reports")
COMPOSERS = ("worker.app", "worker.config", "worker.packs", "worker.beat", "worker.watch", "worker.startup",
             "worker.web", "worker.cli", "tasks", "ops")


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
    "fleet.alert_evidence": {"worker/checks/evidence.py"},
    "fleet.alert_actions": {"worker/actions/store.py"},
    "fleet.statement_snapshots": {"worker/checks/statements.py"},
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


def long_files_section(design: str) -> str:
    """The text of docs/DESIGN.md's "Files over 400 lines" section, and nothing else of the page (a
    path named anywhere else, the writers table for one, is no reason for a long file)."""
    lines = design.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip() == "Files over 400 lines"
                     and line.startswith("#"))
    except StopIteration:
        raise AssertionError('docs/DESIGN.md has no "Files over 400 lines" section') from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
    return "\n".join(lines[start + 1:end])


def test_no_file_passes_400_lines_unless_the_design_says_why():
    section = long_files_section((REPO / "docs" / "DESIGN.md").read_text())
    long = []
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*"):
            if path.suffix not in (".py", ".j2", ".sql") or "__pycache__" in path.parts:
                continue
            n = len(path.read_text().splitlines())
            rel = str(path.relative_to(REPO))
            # named in the section, on a line that says more than the path: the reason
            said = [line for line in section.splitlines() if f"`{rel}`" in line]
            if n > 400 and not any(len(line.replace(f"`{rel}`", "").strip(" -*:|")) > 20 for line in said):
                long.append(f"{rel} ({n} lines)")
    assert not long, ("over 400 lines, and docs/DESIGN.md's section \"Files over 400 lines\" does not name it "
                      "with a reason: " + ", ".join(long))


def test_notify_policy_imports_no_sql_and_holds_write_nothing(graph):
    """plan.py is the pure policy (the backtest imports it and routing alone of notify); holds.py only
    reads; the outbox alone writes fleet.notifications (test_each_fleet_table_has_one_writer)."""
    _, imports = graph
    tree = ast.parse((REPO / "worker" / "notify" / "plan.py").read_text())
    taken = {a.name.split(".")[0] for n, _ in _walk(tree) if isinstance(n, ast.Import) for a in n.names}
    taken |= {(n.module or "").split(".")[0] for n, _ in _walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not taken & {"sqlalchemy", "psycopg", "redis"}, f"worker/notify/plan.py imports {taken & {'sqlalchemy', 'psycopg', 'redis'}}"
    assert not _WRITE.search((REPO / "worker" / "notify" / "holds.py").read_text()), "holds.py writes a table"
    backtest = {i.target for i in imports if i.source == "worker.checks.backtest" and i.target.startswith("worker.notify")}
    assert backtest <= {"worker.notify.plan", "worker.notify.routing"}, f"the backtest imports {sorted(backtest)}"


TESTS = REPO / "tests"


def _test_tree_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file under tests/ (function-level ones included), with a
    relative import resolved and `from package import name` counted as the module package.name when
    that module exists."""
    package = list(path.relative_to(REPO).parent.parts)  # what `from . import x` is relative to
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            for alias in node.names:
                sub = REPO.joinpath(*base.split("."), alias.name)
                if sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file():
                    found.append((node.lineno, f"{base}.{alias.name}"))
    return found


def test_no_test_file_imports_a_test_module_or_a_conftest():
    """A helper two test modules share lives in tests/support/ (a plain module), a fixture in a
    conftest.py that pytest finds by folder: a test module is never imported (its tests would be
    collected twice, its fixtures shadow by accident), nor is a conftest (pytest loads it, once)."""
    bad = []
    for path in sorted(TESTS.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(REPO)
        for line, module in _test_tree_imports(path):
            last = module.rsplit(".", 1)[-1]
            if module.split(".")[0] == "tests" and (last.startswith("test_") or last == "conftest"):
                bad.append(f"{rel}:{line} imports {module}")
    assert not bad, ("a file under tests/ imports a test module or a conftest (shared helpers go to tests/support/, "
                     "shared fixtures to a conftest.py):\n  " + "\n  ".join(bad))
