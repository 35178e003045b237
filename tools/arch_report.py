"""Architecture measurements of a moduseg checkout, as Markdown.

    python tools/arch_report.py [REPO]      (default: this checkout)

Prints the package dependency diagram (every ``import`` of another moduseg
module, at any depth in the file, including imports inside functions), the
package-level cycles, lines per module, the 15 largest functions and the
import time of ``moduseg`` (median of 5 fresh interpreters). Reads the code
as text (``ast``) except for the import timing; run it on two commits to
compare them.
"""

from __future__ import annotations

import ast
import functools
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path


def modules(pkg: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(pkg.rglob("*.py")):
        parts = list(p.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def package_of(mod: str) -> str:
    parts = mod.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def package_graph(pkg: Path) -> tuple[Counter, int, int]:
    """(package -> package edge counts, all internal imports, those inside functions)."""
    mods = modules(pkg)
    edges: Counter = Counter()
    total = nested = 0
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_func = set()
        for f in ast.walk(tree):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for n in ast.walk(f):
                    if isinstance(n, (ast.Import, ast.ImportFrom)):
                        in_func.add(id(n))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for t in sorted(set(_one(mod, path, node, set(mods)))):
                total += 1
                nested += id(node) in in_func
                a, b = package_of(mod), package_of(t)
                if a != b:
                    edges[a, b] += 1
    return edges, total, nested


def _one(mod, path, node, known):
    """The moduseg modules one import statement names (a submodule when it is one)."""
    if isinstance(node, ast.Import):
        cands = [[a.name] for a in node.names]
    else:
        stem = _import_cycles().import_stem(mod, path.name == "__init__.py", node)
        cands = [[f"{stem}.{a.name}", stem] for a in node.names]
    out = []
    for options in cands:
        for t in options:
            if t in known:
                if t != mod:
                    out.append(t)
                break
    return out


@functools.lru_cache(maxsize=1)
def _import_cycles():
    """tests/test_import_cycles.py: its import resolution and cycle finder, used here too."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_import_cycles", Path(__file__).resolve().parents[1] / "tests" / "test_import_cycles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cycles(edges) -> list[list[str]]:
    """Strongly connected package groups (the cycle finder of tests/test_import_cycles.py)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    return _import_cycles().find_cycles(graph)


def functions(pkg: Path) -> list[tuple[int, str]]:
    out = []
    for mod, path in modules(pkg).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1,
                            f"{mod}.{node.name} ({path.relative_to(pkg.parent)}:{node.lineno})"))
    return out


def import_time(repo: Path, runs: int = 5) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(repo))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import moduseg"], env=env, check=True, cwd=repo)
        times.append(time.perf_counter() - t)
    base = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True, cwd=repo)
        base.append(time.perf_counter() - t)
    return times, base


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    repo = Path(argv[0] if argv else Path(__file__).resolve().parents[1]).resolve()
    pkg = repo / "moduseg"
    edges, total, nested = package_graph(pkg)
    print(f"# Architecture measurements of {repo}\n")
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = "?"
    print(f"commit {rev}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"python tools/arch_report.py\n")
    print(f"## Package dependency diagram\n\n{total} internal imports, {nested} of them "
          f"inside functions (one per statement and module). Arrow: importer -> imported (count).\n\n```")
    for a in sorted({a for a, _ in edges}):
        outs = ", ".join(f"{b} ({edges[a, b]})" for b in sorted(b for x, b in edges if x == a))
        print(f"{a} -> {outs}")
    print("```\n")
    cyc = cycles(edges)
    print("Package-level cycles (strongly connected groups): "
          + ("; ".join(" <-> ".join(c) for c in cyc) if cyc else "none") + "\n")
    pairs = sorted({tuple(sorted((a, b))) for a, b in edges if (b, a) in edges})
    print("Two-way package pairs: "
          + (", ".join(f"{a} <-> {b}" for a, b in pairs) if pairs else "none") + "\n")
    lines = sorted(((sum(1 for _ in p.open(encoding="utf-8")), m)
                    for m, p in modules(pkg).items()), reverse=True)
    print(f"## Lines per module\n\n{len(lines)} modules, {sum(n for n, _ in lines)} lines; "
          f"median {statistics.median(n for n, _ in lines):.0f}.\n\n```")
    for n, m in lines:
        print(f"{n:6d} {m}")
    print("```\n")
    fns = functions(pkg)
    print(f"## Largest functions\n\n{len(fns)} functions, median "
          f"{statistics.median(n for n, _ in fns):.0f} lines.\n\n```")
    for n, name in sorted(fns, reverse=True)[:15]:
        print(f"{n:5d} {name}")
    print("```\n")
    times, base = import_time(repo)
    print(f"## Import time\n\n`python -c 'import moduseg'`, 5 runs: median "
          f"{statistics.median(times) * 1000:.0f} ms (empty interpreter: median "
          f"{statistics.median(base) * 1000:.0f} ms); runs "
          + ", ".join(f"{t * 1000:.0f}" for t in times) + " ms; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()) + "\n")


if __name__ == "__main__":
    main()
