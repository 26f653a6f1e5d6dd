"""The import graph of krabfast/ keeps its layers: no cycle, and each layer imports only
what is below it.

The graph is read from the source with `ast` (nothing is imported to build it): every
`import` and `from ... import` anywhere in a module, at module level or inside a function,
counts.
`from x import y` is an edge to the module `x.y` when that is a module, else to `x`;
relative imports are resolved against the importing module's package. Only edges to
krabfast's own modules are kept. Importing `a.b.c` also runs the `__init__` of `a` and
`a.b`; those implicit parent edges are not in the graph (a subpackage's `__init__` may
import its own submodules).

The layering, lowest first (roughly: each may build on those listed before it, never on
those after it; the tables below are what is checked):

    protocol          wire shapes, errors, scopes, method declarations
    _core             Cython frame/dispatch/fan-out core
    connection        one gateway socket (protocol + _core)
    store             sqlite state
    methods           method handlers
    web               the HTTP side: protocol, routes, pages (knows nothing of the gateway)
    gateway           hub, policies, picows server
    client, node      asyncio client, node host
    bench             load benchmarks
    cli               the command line (imported only by itself and krabfast.__main__)
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import krabfast

PACKAGE = "krabfast"
ROOT = Path(krabfast.__file__).resolve().parent

# -- the rules ---------------------------------------------------------------------------------
# A unit is a module or package name; it covers itself and everything below it, except the
# bare "krabfast", which means the package's own __init__ only (where __version__ lives).

# The layer may import ONLY from these units (and the standard library / third parties).
ONLY_FROM: dict[str, tuple[str, ...]] = {
    "krabfast.protocol":   ("krabfast.protocol", "krabfast"),
    "krabfast._core":      ("krabfast._core", "krabfast.protocol", "krabfast.wsutil"),
    "krabfast.connection": ("krabfast.connection", "krabfast.protocol", "krabfast._core",
                            "krabfast.logutil"),
    # Leaf helpers (WebSocket close echo over picows; throttled logging) build on nothing.
    "krabfast.wsutil":     ("krabfast.wsutil",),
    "krabfast.logutil":    ("krabfast.logutil",),
}

# The layer may import NOTHING from these units.
NEVER_FROM: dict[str, tuple[str, ...]] = {
    # Handlers reach state through their call context's services, never the store itself.
    "krabfast.methods": ("krabfast.gateway", "krabfast.store", "krabfast.connection",
                         "krabfast.cli", "krabfast.bench"),
    "krabfast.gateway": ("krabfast.cli", "krabfast.bench"),
    "krabfast.store":   ("krabfast.gateway", "krabfast.methods", "krabfast.cli"),
    "krabfast.client":  ("krabfast.gateway", "krabfast.cli", "krabfast.bench"),
    "krabfast.node":    ("krabfast.gateway", "krabfast.cli", "krabfast.bench"),
    "krabfast.web":     ("krabfast.gateway", "krabfast.connection", "krabfast.methods",
                         "krabfast.store", "krabfast.cli", "krabfast.bench"),
}

# Only these may import the unit (the command line is the top: nothing builds on it).
ONLY_IMPORTED_BY: dict[str, tuple[str, ...]] = {
    "krabfast.cli": ("krabfast.cli", "krabfast.__main__"),
}


# -- the graph ---------------------------------------------------------------------------------

@dataclass
class Graph:
    """edges[importer][imported] = line numbers of the import statements in importer."""

    edges: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    def add(self, src: str, dst: str, line: int = 0) -> None:
        lines = self.edges.setdefault(src, {}).setdefault(dst, [])
        if line not in lines:
            lines.append(line)
        self.edges.setdefault(dst, {})

    def where(self, src: str, dst: str) -> str:
        path = self.files.get(src)
        shown = path or src
        if path is not None and path.is_relative_to(ROOT.parent):
            shown = path.relative_to(ROOT.parent)
        lines = self.edges.get(src, {}).get(dst, [])
        source = ""
        if path is not None and lines:
            text = path.read_text(encoding="utf-8").splitlines()
            source = ": " + " | ".join(text[n - 1].strip() for n in lines if 0 < n <= len(text))
        return f"{src} -> {dst} ({shown}:{','.join(map(str, lines))}{source})"


def discover(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is_package) for every .py file under root."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        modules[".".join([package, *parts])] = (path, is_pkg)
    return modules


def _known(name: str, modules) -> str | None:
    """The longest prefix of name that is a module (None: not one of ours)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(name: str, path: Path, is_pkg: bool, modules) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement of the module, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules)
                if target:
                    found.append((target, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            for alias in node.names:
                full = f"{base_name}.{alias.name}"
                target = full if alias.name != "*" and full in modules else _known(base_name, modules)
                if target:
                    found.append((target, node.lineno))
    return found


def build_graph(root: Path = ROOT, package: str = PACKAGE) -> Graph:
    modules = discover(root, package)
    graph = Graph()
    for name, (path, is_pkg) in modules.items():
        graph.files[name] = path
        graph.edges.setdefault(name, {})
        for target, line in imports_of(name, path, is_pkg, modules):
            if target != name:
                graph.add(name, target, line)
    return graph


# -- the checks (each returns the problems; empty = fine) --------------------------------------

def within(module: str, unit: str) -> bool:
    if unit == PACKAGE:
        return module == PACKAGE
    return module == unit or module.startswith(unit + ".")


def unit_of(module: str) -> str:
    """The top-level subpackage or module: krabfast.gateway.hub -> krabfast.gateway."""
    return ".".join(module.split(".")[:2])


def components(edges: dict[str, set[str]] | dict[str, dict]) -> list[list[str]]:
    """The strongly connected components of more than one node, each sorted (Tarjan's
    algorithm, iterative): every cycle lies inside one. Self-loops are ignored."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def cycles(edges) -> list[list[str]]:
    """One shortest cycle (a, b, ..., a) per strongly connected component."""
    return [_cycle_through(edges, set(c)) for c in components(edges)]


def _cycle_through(edges, component: set[str]) -> list[str]:
    """A shortest cycle from the component's first node back to it, inside the component."""
    start = min(component)
    previous = {start: None}
    queue = [start]
    for node in queue:
        for child in sorted(edges.get(node, ())):
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child in component and child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def _cycle_problems(graph: Graph, group) -> list[str]:
    """One problem per cycle of the graph collapsed by group(module): an example cycle, and
    every import between members of its component (cutting enough of them ends it)."""
    grouped: dict[str, set[str]] = {}
    for src, targets in graph.edges.items():
        grouped.setdefault(group(src), set())
        grouped[group(src)].update(group(dst) for dst in targets if group(dst) != group(src))
    problems = []
    for component in components(grouped):
        members = set(component)
        imports = [graph.where(src, dst) for src, targets in sorted(graph.edges.items())
                   if group(src) in members for dst in sorted(targets)
                   if group(dst) in members and group(dst) != group(src)]
        problems.append("cycle: " + " -> ".join(_cycle_through(grouped, members))
                        + f" (all of {', '.join(component)} are in cycles); their imports of "
                        "each other:\n    " + "\n    ".join(imports))
    return problems


def module_cycle_problems(graph: Graph) -> list[str]:
    return _cycle_problems(graph, lambda module: module)


def unit_cycle_problems(graph: Graph) -> list[str]:
    return _cycle_problems(graph, unit_of)


def layer_problems(graph: Graph, only_from=None, never_from=None, only_imported_by=None) -> list[str]:
    only_from = ONLY_FROM if only_from is None else only_from
    never_from = NEVER_FROM if never_from is None else never_from
    only_imported_by = ONLY_IMPORTED_BY if only_imported_by is None else only_imported_by
    problems = []
    for src, targets in sorted(graph.edges.items()):
        for dst in sorted(targets):
            for layer, allowed in only_from.items():
                if within(src, layer) and not any(within(dst, a) for a in allowed):
                    problems.append(f"{layer} imports only {', '.join(allowed)}: "
                                    f"{graph.where(src, dst)}")
            for layer, banned in never_from.items():
                for unit in banned:
                    if within(src, layer) and within(dst, unit):
                        problems.append(f"{layer} never imports {unit}: {graph.where(src, dst)}")
            for unit, importers in only_imported_by.items():
                if within(dst, unit) and not any(within(src, i) for i in importers):
                    problems.append(f"only {', '.join(importers)} import {unit}: "
                                    f"{graph.where(src, dst)}")
    return problems


def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n" + "\n".join(problems)


# -- krabfast itself ---------------------------------------------------------------------------

def test_the_graph_covers_krabfast():
    graph = build_graph()
    assert "krabfast.cli.common" in graph.edges and "krabfast.gateway.hub" in graph.edges
    assert "krabfast.cli.common" in graph.edges["krabfast.cli.devices"]  # module level
    assert "krabfast.client.hints" in graph.edges["krabfast.cli.common"]  # inside a function
    assert "krabfast.client" in graph.edges["krabfast.cli.common"]  # from a package, a name


def test_no_cycle_among_modules():
    problems = module_cycle_problems(build_graph())
    assert not problems, _report(problems)


def test_no_cycle_among_top_level_units():
    problems = unit_cycle_problems(build_graph())
    assert not problems, _report(problems)


def _rule_test(**tables):
    empty = {"only_from": {}, "never_from": {}, "only_imported_by": {}}
    problems = layer_problems(build_graph(), **{**empty, **tables})
    assert not problems, _report(problems)


@pytest.mark.parametrize("layer", ONLY_FROM)
def test_layer_imports_only_what_is_below(layer):
    _rule_test(only_from={layer: ONLY_FROM[layer]})


@pytest.mark.parametrize("layer", NEVER_FROM)
def test_layer_never_imports_what_is_above(layer):
    _rule_test(never_from={layer: NEVER_FROM[layer]})


@pytest.mark.parametrize("unit", ONLY_IMPORTED_BY)
def test_unit_is_imported_only_by(unit):
    _rule_test(only_imported_by={unit: ONLY_IMPORTED_BY[unit]})


def test_cli_common_imports_no_command_module():
    graph = build_graph()
    assert not [dst for dst in graph.edges["krabfast.cli.common"] if within(dst, "krabfast.cli")]


def test_env_var_names_have_one_home():
    """The gateway's secret env-var names are defined once, in krabfast.envvars (below both
    the client side and the gateway), and the gateway's config uses those very tuples."""
    from krabfast import envvars
    from krabfast.gateway import config

    assert config.TOKEN_ENV_VARS is envvars.TOKEN_ENV_VARS
    assert config.PASSWORD_ENV_VARS is envvars.PASSWORD_ENV_VARS


# -- the checker on synthetic graphs -----------------------------------------------------------

def _graph(*edges: str) -> Graph:
    graph = Graph()
    for edge in edges:
        src, dst = edge.split(" -> ")
        graph.add(src, dst, 1)
    return graph


def test_checker_finds_a_module_cycle():
    graph = _graph("krabfast.a -> krabfast.b", "krabfast.b -> krabfast.c", "krabfast.c -> krabfast.a",
                   "krabfast.c -> krabfast.d", "krabfast.x -> krabfast.x")
    assert cycles(graph.edges) == [["krabfast.a", "krabfast.b", "krabfast.c", "krabfast.a"]]
    problems = module_cycle_problems(graph)
    assert len(problems) == 1 and "krabfast.a -> krabfast.b -> krabfast.c -> krabfast.a" in problems[0]
    assert not module_cycle_problems(_graph("krabfast.a -> krabfast.b", "krabfast.a -> krabfast.c",
                                            "krabfast.b -> krabfast.c"))


def test_checker_finds_two_separate_cycles():
    graph = _graph("m.a -> m.b", "m.b -> m.a", "m.c -> m.d", "m.d -> m.e", "m.e -> m.c", "m.a -> m.c")
    assert cycles(graph.edges) == [["m.a", "m.b", "m.a"], ["m.c", "m.d", "m.e", "m.c"]]
    assert len(module_cycle_problems(graph)) == 2
    graph = _graph("m.a -> m.b", "m.b -> m.a", "m.b -> m.c", "m.c -> m.a")  # one component
    assert components(graph.edges) == [["m.a", "m.b", "m.c"]]
    [problem] = module_cycle_problems(graph)
    assert problem.startswith("cycle: m.a -> m.b -> m.a (all of m.a, m.b, m.c are in cycles)")
    assert "m.b -> m.c" in problem and "m.c -> m.a" in problem


def test_checker_finds_a_unit_cycle_between_acyclic_modules():
    graph = _graph("krabfast.gateway.hub -> krabfast.methods.system",
                   "krabfast.methods.devices -> krabfast.gateway.pairing")
    assert not module_cycle_problems(graph)
    problems = unit_cycle_problems(graph)
    assert len(problems) == 1 and "krabfast.gateway -> krabfast.methods -> krabfast.gateway" in problems[0]
    assert "krabfast.methods.devices -> krabfast.gateway.pairing" in problems[0]


def test_checker_finds_layer_violations():
    graph = _graph("krabfast.protocol.frames -> krabfast", "krabfast.protocol.frames -> krabfast.protocol.x",
                   "krabfast.connection -> krabfast.gateway.auth",
                   "krabfast.connection -> krabfast.logutil",
                   "krabfast.store.db -> krabfast.methods.x",
                   "krabfast.node.host -> krabfast.cli",
                   "krabfast.__main__ -> krabfast.cli",
                   "krabfast.bench.cli -> krabfast.protocol.methods")
    problems = layer_problems(graph)
    assert len(problems) == 4, _report(problems)
    assert problems[0].startswith("krabfast.connection imports only") and "gateway.auth" in problems[0]
    assert problems[1].startswith("krabfast.node never imports krabfast.cli")
    assert problems[2].startswith("only krabfast.cli, krabfast.__main__ import krabfast.cli")
    assert "krabfast.node.host -> krabfast.cli" in problems[2]
    assert problems[3].startswith("krabfast.store never imports krabfast.methods")
    assert not layer_problems(_graph("krabfast.bench.cli -> krabfast.client"))
    assert layer_problems(_graph("krabfast.protocol.x -> krabfast.logutil"))
    assert not within("krabfast.bench.cli", "krabfast.cli") and within("krabfast.cli", "krabfast.cli")


def test_imports_are_read_at_every_depth_and_resolved(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '1'\n")
    (pkg / "low.py").write_text("X = 1\n")
    (pkg / "sub" / "__init__.py").write_text("from . import mod\n")
    (pkg / "sub" / "mod.py").write_text(
        "import os\nfrom pkg import __version__\n"
        "def f():\n    from ..low import X\n    from .. import low\n    import pkg.sub.other\n")
    (pkg / "sub" / "other.py").write_text(
        "class C:\n    def m(self):\n        from pkg.sub.mod import f\n")
    graph = build_graph(pkg, "pkg")
    assert graph.edges["pkg.sub"] == {"pkg.sub.mod": [1]}
    assert graph.edges["pkg.sub.mod"] == {"pkg": [2], "pkg.low": [4, 5], "pkg.sub.other": [6]}
    assert graph.edges["pkg.sub.other"] == {"pkg.sub.mod": [3]}
    assert cycles(graph.edges) == [["pkg.sub.mod", "pkg.sub.other", "pkg.sub.mod"]]
    assert "other.py:3: from pkg.sub.mod import f" in module_cycle_problems(graph)[0]
