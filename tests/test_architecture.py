"""The layout stays: modules import alone, no cycles, floors only point down.

The import graph is built from the source with :mod:`ast` (not by importing), so a
lazy import inside a function body counts as much as one at the top: both run
eventually, and both decide whether the layers can be understood bottom-up.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source directory -> installed package name (see [tool.setuptools.package-dir]).
SOURCE_ROOTS = {
    "sbi_exsitu": ROOT / "sbi_exsitu",
    "sbi_exsitu.embeddings": ROOT / "embeddings",
    "sbi_exsitu.configs": ROOT / "configs",
}

# Bottom to top; a module may import only from its own floor or lower ones.
FLOORS: list[set[str]] = [
    {
        "errors",
        "atomic",
        "statefiles",
        "schema",
        "tables",
        "seeding",
        "device",
        "configs",
    },
    {"data", "embeddings"},
    {"figures"},
    {"config"},
    {"runs"},
    {"evaluation"},
    {"posteriors"},
    {"training"},
    {"baselines"},
    {"studies"},
    {"cli", "__main__"},
]
FLOOR_OF = {name: i for i, names in enumerate(FLOORS) for name in names}
# Self-contained beside data: these import nothing of sbi_exsitu.
ISOLATED = {"embeddings", "configs"}


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: dict[str, int] = field(default_factory=dict)  # target -> line


def _module_files() -> dict[str, tuple[Path, bool]]:
    found: dict[str, tuple[Path, bool]] = {}
    for package, root in SOURCE_ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join([package, *parts])
            # `sbi_exsitu/embeddings` does not exist, but never let two roots claim
            # one name silently.
            assert name not in found, f"{name} found twice: {path}"
            found[name] = (path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_runtime(node: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (its else still runs)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield stmt
                yield from _walk_runtime(stmt)
            continue
        yield child
        yield from _walk_runtime(child)


def _parse(name: str, path: Path, is_package: bool, known: set[str]) -> Module:
    module = Module(name, path, is_package)
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in _walk_runtime(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in known else base)
        for target in targets:
            if target == "sbi_exsitu" or target.startswith("sbi_exsitu."):
                module.imports.setdefault(target, node.lineno)
    return module


def import_graph() -> dict[str, Module]:
    files = _module_files()
    known = set(files)
    return {
        name: _parse(name, path, is_package, known)
        for name, (path, is_package) in files.items()
    }


def _top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def _reexport_only(module: Module) -> bool:
    """A package ``__init__`` made of a docstring, imports and ``__all__`` only."""
    if not module.is_package:
        return False
    tree = ast.parse(module.path.read_text(encoding="utf-8"))
    for stmt in tree.body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if all(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                continue
        return False
    return True


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a path, or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for start in sorted(edges):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(edges[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(edges.get(child, ())))))
    return None


GRAPH = import_graph()


def test_graph_sees_the_whole_tree():
    # Guards the walker itself: a wrong root would make every test below vacuous.
    assert "sbi_exsitu.embeddings.resnet" in GRAPH
    assert "sbi_exsitu.data.mock.base" in GRAPH
    assert "sbi_exsitu.cli" in GRAPH
    assert len(GRAPH) > 60
    assert "sbi_exsitu.training.fit" in GRAPH["sbi_exsitu.cli.fit"].imports or any(
        t.startswith("sbi_exsitu.training") for t in GRAPH["sbi_exsitu.cli.fit"].imports
    )


def test_every_top_level_name_has_a_floor():
    tops = {_top(name) for name in GRAPH} - {""}
    missing = tops - set(FLOOR_OF)
    assert not missing, f"give these a floor in FLOORS: {missing}"


def test_floors_only_point_down():
    bad = []
    for name, module in GRAPH.items():
        if name == "sbi_exsitu":
            continue  # the facade re-exports from every floor, lazily
        here = FLOOR_OF[_top(name)]
        for target, line in module.imports.items():
            top = _top(target)
            if target == "sbi_exsitu" or FLOOR_OF[top] > here:
                bad.append(f"{module.path.relative_to(ROOT)}:{line} imports {target}")
            elif _top(name) in ISOLATED and top != _top(name):
                bad.append(f"{module.path.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "imports that point up a floor:\n" + "\n".join(bad)


def test_import_graph_is_acyclic():
    # An edge into a re-export-only __init__ stands for edges into the modules it
    # re-exports, which are already in the graph; following it would report every
    # `from pkg.sub import x` inside `pkg` as a cycle through `pkg/__init__`.
    skip = {name for name, module in GRAPH.items() if _reexport_only(module)}
    skip.add("sbi_exsitu")
    edges = {
        name: {t for t in module.imports if t not in skip and t != name}
        for name, module in GRAPH.items()
    }
    cycle = _find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def _run(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_every_module_imports_alone():
    # A fresh interpreter per module would pay the torch import ~90 times (minutes
    # on a shared machine). One child instead imports the modules one after the
    # other, dropping every `sbi_exsitu` module from `sys.modules` in between, so
    # each import starts with none of the package loaded: a module that only works
    # when a sibling was imported first still fails. Third-party modules stay
    # cached, which is the part that costs time and never hides such a bug.
    names = sorted(n for n in GRAPH if not n.endswith("__main__"))
    code = (
        "import importlib, sys, traceback\n"
        "bad = []\n"
        f"for name in {names!r}:\n"
        "    for m in [m for m in sys.modules if m.split('.')[0] == 'sbi_exsitu']:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except BaseException as err:\n"
        "        bad.append(f'{name}: {type(err).__name__}: {err}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = _run(code)
    assert done.returncode == 0, (
        "modules that fail to import alone:\n" + done.stdout + done.stderr[-2000:]
    )


@pytest.mark.parametrize(
    ("prefix", "forbidden"),
    [("sbi_exsitu.data", "torch"), ("sbi_exsitu.embeddings", "sbi")],
)
def test_layer_does_not_load(prefix, forbidden):
    names = sorted(n for n in GRAPH if n == prefix or n.startswith(prefix + "."))
    assert len(names) > 3
    code = (
        "import sys\n"
        + "".join(f"import {n}\n" for n in names)
        + f"bad = sorted(m for m in sys.modules if m == {forbidden!r}"
        + f" or m.startswith({forbidden!r} + '.'))\n"
        + "print(bad[:5])\n"
        + "sys.exit(1 if bad else 0)\n"
    )
    done = _run(code)
    assert done.returncode == 0, (
        f"importing {prefix} loads {forbidden}: {done.stdout}{done.stderr[-2000:]}"
    )


def test_the_sbi_exsitu_names_stay_what_all_says():
    # Importing a submodule binds it as an attribute of its parent package; if a
    # submodule shared a name in __all__, `sx.fit` would turn into a module.
    names = sorted(n for n in GRAPH if not n.endswith("__main__"))
    code = (
        "import importlib, inspect, sys\n"
        "import sbi_exsitu as sx\n"
        f"for n in {names!r}: importlib.import_module(n)\n"
        "bad = [n for n in sx.__all__\n"
        "       if inspect.ismodule(getattr(sx, n)) or not callable(getattr(sx, n))]\n"
        "missing = sorted(set(sx.__all__) - set(dir(sx)))\n"
        "print(bad, missing)\n"
        "sys.exit(1 if bad or missing else 0)\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_sx_names_resolve_to_their_objects():
    import inspect

    import sbi_exsitu as sx

    for name in ("fit", "predict", "simulate", "calibrate", "load_posterior"):
        assert inspect.isfunction(getattr(sx, name)), name
    for name in ("ExSituPosterior", "MapPosterior", "ExperimentConfig"):
        assert inspect.isclass(getattr(sx, name)), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sx.nope  # noqa: B018


def test_the_layout_stays_small():
    top = sorted(p.name for p in (ROOT / "sbi_exsitu").glob("*.py"))
    assert len(top) <= 12, f"{len(top)} modules directly under sbi_exsitu/: {top}"
    long = {
        str(m.path.relative_to(ROOT)): n
        for m in GRAPH.values()
        if (n := len(m.path.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert not long, f"modules over 500 lines (split them by idea): {long}"
