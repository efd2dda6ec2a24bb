"""The architecture, checked rather than described (../shared/STYLE.md): an `ast` walk of every
import in proxy/. Pure modules import no event loop, server, client, store or metrics library; the
running proxy is wired in one place and entered from one; the layers import downwards only, and
no module imports itself back through another."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "proxy"

PURE = (
    "proxy.core",
    "proxy.config",
    "proxy.report.model",
    "proxy.report.build",
    "proxy.report.html",
    "proxy.metric_names",
)
"""Plain data in, plain data out."""

IMPURE_LIBRARIES = (
    "asyncio",
    "aiohttp",
    "uvloop",
    "prometheus_client",
    "redis",
    "sqlite3",
    "socket",
    "threading",
    "subprocess",
    "multidict",
    "yarl",
    "urllib.request",
)
"""What a pure module must not import: loops, sockets, servers and clients, stores, metrics."""

SHELL = (
    "proxy.analysis",
    "proxy.front",
    "proxy.processes",
    "proxy.store",
    "proxy.metrics",
    "proxy.supervisor",
    "proxy.validation",
    "proxy.__main__",
)
"""Modules that own a loop, a socket, a store, a process or a metric."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(name: str) -> Iterator[str]:
    """Every module `name` imports, at any depth of its code except `if TYPE_CHECKING:`."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            # `from proxy import metric_names` imports a module too.
            yield from (f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
        stack.extend(ast.iter_child_nodes(node))


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in prefixes)


def test_every_module_is_seen() -> None:
    assert "proxy.analysis.app" in MODULES
    assert "proxy.core.comparison" in MODULES
    assert set(imports("proxy.analysis.app")) >= {"proxy.analysis.routes", "aiohttp"}


@pytest.mark.parametrize("name", [m for m in MODULES if within(m, PURE)])
def test_pure_modules_import_no_loop_socket_store_or_metrics(name: str) -> None:
    found = sorted(
        imported
        for imported in set(imports(name))
        if within(imported, IMPURE_LIBRARIES) or within(imported, SHELL)
    )
    assert found == [], f"{name} is pure but imports {found}"


@pytest.mark.parametrize("name", [m for m in MODULES if within(m, ("proxy.core",))])
def test_the_core_imports_only_the_core(name: str) -> None:
    found = sorted(
        i for i in set(imports(name)) if i.startswith("proxy") and not within(i, ("proxy.core",))
    )
    assert found == [], f"{name} is in the core but imports {found}"


def test_only_the_process_entries_import_the_wiring() -> None:
    importers = sorted(m for m in MODULES if "proxy.analysis.app" in set(imports(m)))
    assert importers == ["proxy.processes.analysis", "proxy.processes.inline"]
    importers = sorted(m for m in MODULES if "proxy.processes.front" in set(imports(m)))
    assert importers == ["proxy.__main__", "proxy.processes.inline"]


def test_the_running_proxy_is_entered_only_from_the_process_entries() -> None:
    outside = sorted(
        m
        for m in MODULES
        if not within(m, ("proxy.analysis", "proxy.processes"))
        and any(within(i, ("proxy.analysis",)) for i in imports(m))
    )
    assert outside == []


def test_the_front_never_imports_the_analysis() -> None:
    for name in (m for m in MODULES if within(m, ("proxy.front", "proxy.processes.front"))):
        found = [i for i in imports(name) if within(i, ("proxy.analysis", "proxy.store"))]
        assert found == [], f"{name} is on the hot path but imports {found}"


def test_the_validator_runs_no_server_and_counts_no_metric() -> None:
    """It serves and counts nothing: it runs a child process that loads the config."""
    found = sorted(
        i
        for i in set(imports("proxy.validation"))
        if within(i, ("aiohttp", "uvloop", "prometheus_client", "redis", "sqlite3", "socket"))
        or (i.startswith("proxy") and not within(i, ("proxy.config",)))
    )
    assert found == []


def test_stores_know_nothing_of_the_server() -> None:
    for name in (m for m in MODULES if within(m, ("proxy.store",))):
        assert not any(within(i, ("proxy.analysis", "proxy.metrics")) for i in imports(name)), name


def test_no_import_cycles() -> None:
    graph = {m: {i for i in imports(m) if i in MODULES and i != m} for m in MODULES}
    # A package's __init__ is imported with any of its modules: not an edge of its own making.
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, " -> ".join(cycle[cycle.index(cycle[-1]) :])
