"""No import cycle inside the package: every module's imports of other
``moduseg`` modules (at any depth in the file, lazy ones included) form a DAG,
and so do the packages (``moduseg.runtime``, ``moduseg.bank``, ... and the
top-level modules): packages import downwards only.

A package ``__init__`` importing its own submodules is not a cycle in the
sense that matters here, so edges into a package's own ``__init__`` from its
children are ignored.
"""

import ast
from pathlib import Path

import moduseg

ROOT = Path(moduseg.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_stem(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` statement of ``mod`` imports from."""
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    stem = import_stem(mod, is_pkg, node)
    names = [stem]
    names += [f"{stem}.{a.name}" for a in node.names]
    return names


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve(mod, is_pkg, node)
            else:
                continue
            for t in targets:
                if t in files and t != mod and not mod.startswith(t + "."):
                    graph[mod].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_finds_a_planted_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_package_has_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def package_of(module: str) -> str:
    """``moduseg.runtime.proposers.sam`` -> ``moduseg.runtime``; a top-level module is
    its own node (``moduseg.io``); ``moduseg`` (the root ``__init__``) stays itself."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    graph = import_graph() if graph is None else graph
    out: dict[str, set[str]] = {}
    for mod, targets in graph.items():
        a = package_of(mod)
        out.setdefault(a, set())
        for t in targets:
            b = package_of(t)
            out.setdefault(b, set())
            if a != b:
                out[a].add(b)
    return out


def _edges_between(graph, pkgs: list[str]) -> list[str]:
    """Module-level imports that make up a package cycle, for the failure message."""
    return sorted(f"{m} -> {t}" for m, ts in graph.items() for t in ts
                  if package_of(m) in pkgs and package_of(t) in pkgs
                  and package_of(m) != package_of(t))


def test_package_graph_finds_a_loop_through_a_lazy_import(tmp_path):
    """Two packages that import each other only inside functions are still a cycle."""
    g = {"moduseg.runtime.assemble": {"moduseg.models.defaults"},
         "moduseg.models.defaults": {"moduseg.runtime.backbones"},
         "moduseg.runtime.backbones": set(), "moduseg.io": set()}
    assert find_cycles(package_graph(g)) == [["moduseg.models", "moduseg.runtime"]]
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from moduseg.runtime import pipeline\n")
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(ast.parse(src.read_text())))


def test_packages_import_downwards_only():
    graph = import_graph()
    cycles = find_cycles(package_graph(graph))
    assert not cycles, "package import cycles: " + "; ".join(
        " <-> ".join(c) + " (" + ", ".join(_edges_between(graph, c)) + ")" for c in cycles)


def test_the_runtime_imports_no_application_layer():
    """The runtime runs one image; the app, the composition root, banks, scale-out,
    serving and export sit above it."""
    above = {"moduseg.app", "moduseg.build", "moduseg.bank", "moduseg.scale",
             "moduseg.serve", "moduseg.export", "moduseg.bench", "moduseg.cli"}
    pg = package_graph()
    assert not (pg["moduseg.runtime"] & above), pg["moduseg.runtime"] & above


if __name__ == "__main__":
    for c in find_cycles(import_graph()):
        print(" <-> ".join(c))
    for c in find_cycles(package_graph()):
        print("packages:", " <-> ".join(c))
