"""The layers' arrows, read from the import graph of src/fluxserve (every import statement, module-level or
inside a function, since a lazy import is still an arrow; `if TYPE_CHECKING:` blocks, never run, excepted):

1. `core/` imports only the standard library and `core/` itself.
2. `api/`, `worker/`, `store/`, `blobs/`, `net/`, `provenance/`, `cli/` and `processes/` import no torch,
   diffusers or transformers themselves, and importing any of their modules loads none (checked in a fresh
   interpreter).
3. `api/` imports no store or blob backend (`store.sqlite`, `store.redis`, `blobs.local`, `blobs.s3`): it sees
   the protocols; which backend runs is decided by the process that wires it.
4. Only `processes/` imports `engine/`: a worker process is the one place a model is loaded.
5. No import cycles among modules, nor among the top-level packages, counting module-level imports (those
   are what Python resolves at import time; a function-level import cannot meet a half-initialised module).
6. Importing the package and the API process has no side effects (nothing written to the working directory).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "fluxserve"
SRC = Path(__file__).resolve().parents[2] / "src" / PACKAGE
HEAVY = ("torch", "diffusers", "transformers")
TORCH_FREE = ("api", "worker", "store", "blobs", "net", "provenance", "cli", "processes")
BACKENDS = ("store.sqlite", "store.redis", "blobs.local", "blobs.s3")


@dataclass(frozen=True)
class Arrow:
    source: str  # a module of the package, dotted
    target: str  # a module of the package, or the top-level name of any other import
    line: int
    at_import_time: bool  # module level, not inside a function

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.source.replace('.', '/')}.py:{self.line})"


def module_names() -> dict[str, Path]:
    names = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = module_names()


def resolve(name: str) -> str:
    """A dotted name as the package module it loads (a `from m import f` of a function loads m)."""
    if not name.startswith(PACKAGE):
        return name.split(".")[0]
    while name not in MODULES:
        name = name.rsplit(".", 1)[0]
    return name


def is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def arrows_of(module: str, path: Path) -> list[Arrow]:
    found: list[Arrow] = []
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if is_type_checking(child):
                continue
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in child.names]
            else:
                visit(child, nested)
                continue
            for target in targets:
                found.append(Arrow(module, resolve(target), child.lineno, not in_function))

    visit(ast.parse(path.read_text()), False)
    return found


# One arrow per import statement and target (`from m import a, b` of two functions is one arrow to m).
ARROWS = list(dict.fromkeys(a for module, path in sorted(MODULES.items()) for a in arrows_of(module, path)))


def layer(module: str) -> str:
    """The top-level package a module belongs to (`fluxserve` itself for __init__ and __main__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and f"{PACKAGE}.{parts[1]}" in MODULES else PACKAGE


def in_layer(module: str, *layers: str) -> bool:
    return module.startswith(PACKAGE + ".") and layer(module) in layers


def broken(rule) -> str:
    """The arrows that break a rule, one a line (empty when none does)."""
    return "\n".join(str(arrow) for arrow in ARROWS if rule(arrow))


def test_core_imports_only_the_standard_library():
    allowed = lambda target: in_layer(target, "core") or target in sys.stdlib_module_names  # noqa: E731
    found = broken(lambda a: in_layer(a.source, "core") and not allowed(a.target))
    assert not found, "\n" + found


def test_no_layer_but_engine_imports_torch():
    found = broken(lambda a: in_layer(a.source, *TORCH_FREE) and a.target in HEAVY)
    assert not found, "\n" + found


def test_the_api_imports_no_backend():
    backends = {f"{PACKAGE}.{name}" for name in BACKENDS}
    found = broken(lambda a: in_layer(a.source, "api") and a.target in backends)
    assert not found, "\n" + found


def test_only_processes_import_the_engine():
    found = broken(lambda a: in_layer(a.target, "engine") and not in_layer(a.source, "engine", "processes"))
    assert not found, "\n" + found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one node (Tarjan), as a sorted list of its nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            if component:
                found.append(sorted([node, *component]))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def import_time_graph(name_of) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for arrow in ARROWS:
        if arrow.at_import_time and arrow.target.startswith(PACKAGE):
            source, target = name_of(arrow.source), name_of(arrow.target)
            if source != target:
                graph[source].add(target)
    return graph


def cycle_report(name_of) -> str:
    """Each cycle, with the import-time arrows between its members."""
    lines = []
    for members in cycles(import_time_graph(name_of)):
        lines.append(" <-> ".join(members))
        for arrow in ARROWS:
            ends = name_of(arrow.source), name_of(arrow.target)
            if arrow.at_import_time and ends[0] != ends[1] and set(ends) <= set(members):
                lines.append(f"  {arrow}")
    return "\n".join(lines)


def test_no_import_cycles_among_modules():
    found = cycle_report(lambda module: module)
    assert not found, "\n" + found


def test_no_import_cycles_among_packages():
    found = cycle_report(layer)
    assert not found, "\n" + found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_importing_a_torch_free_module_loads_no_torch():
    """Each torch-free module imported in turn in one fresh interpreter; a module is blamed for the heavy
    libraries that appear in sys.modules while it is imported."""
    modules = sorted(m for m in MODULES if in_layer(m, *TORCH_FREE))
    code = (
        "import importlib, json, sys\n"
        f"heavy, blamed = {HEAVY!r}, {{}}\n"
        f"for name in {modules!r}:\n"
        "    before = {m for m in heavy if m in sys.modules}\n"
        "    importlib.import_module(name)\n"
        "    new = sorted(m for m in heavy if m in sys.modules and m not in before)\n"
        "    if new:\n"
        "        blamed[name] = new\n"
        "print(json.dumps(blamed))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}, out.stderr[-2000:]


def test_importing_the_package_has_no_side_effects(tmp_path):
    code = "import os, fluxserve, fluxserve.api.app, fluxserve.processes.api_process; print(os.listdir())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)  # fmt: skip
    assert out.stdout.strip() == "[]"
