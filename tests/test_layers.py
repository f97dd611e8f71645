"""The package's layers go one way.

Read statically (with :mod:`ast`, nothing imported but ``dclust`` itself), every file under
``dclust/`` gives the modules it imports, at module level and inside functions alike: a
function-level import is still a dependency, only a later one. From that graph:

- no import cycle among ``dclust`` modules;
- the kernels (pure per-chunk functions, shipped to every worker) import nothing of
  Dask, of the runtime, or of any layer above them;
- every third-party package imported by ``dclust`` is declared in ``pyproject.toml``.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

import dclust

PACKAGE_DIR = Path(dclust.__file__).resolve().parent
PYPROJECT = PACKAGE_DIR.parent / "pyproject.toml"

# The layers a kernel may not reach: graph building, process and cluster concerns, and
# everything that drives the kernels.
KERNEL_FORBIDDEN = (
    "dask",
    "distributed",
    "dclust.runtime",
    "dclust.reductions",
    "dclust.algorithms",
    "dclust.estimators",
    "dclust.io",
    "dclust.cli",
)

# Import names whose distribution on PyPI is called otherwise (everything else maps to
# its import name with "_" read as "-").
DISTRIBUTION_OF = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "cupy": "cupy-cuda12x",
    "cupyx": "cupy-cuda12x",
    "ot": "pot",
    "faiss": "faiss-cpu",
    "dask_cuda": "dask-cuda",
    "dask_ml": "dask-ml",
    "dask_jobqueue": "dask-jobqueue",
}

# Cycles through code that is being rewritten elsewhere and cannot be changed here yet,
# as exact edges ("importer -> imported"). Temporary: each entry names the edge to remove.
ALLOWED_CYCLE_EDGES: frozenset[str] = frozenset()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _import_nodes(tree: ast.AST):
    """Every import statement, at any depth, except under ``if TYPE_CHECKING:`` (which
    never runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        for child in ast.iter_child_nodes(node):
            if not _is_type_checking_block(child):
                stack.append(child)


def _imports_of(module: str, path: Path, modules) -> set[str]:
    """Fully qualified names ``module`` imports: a ``dclust`` module where the name is
    one (``from pkg import name`` counts as ``pkg.name`` when that is a module), else the
    name as written (third-party and standard-library imports)."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")
            if node.level > 1:
                base = base[: -(node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            found.add(sub if sub in modules else target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    sources = _sources()
    return {m: _imports_of(m, p, sources) for m, p in sources.items()}


def _internal(graph, module, allowed=frozenset()):
    """The ``dclust`` modules ``module`` imports, less the edges in ``allowed``."""
    return [t for t in sorted(graph[module])
            if t in graph and t != module and f"{module} -> {t}" not in allowed]


def _find_cycle(graph, allowed=frozenset()):
    """One cycle among ``dclust`` modules as a list of names (first repeated last), or
    ``None``; edges in ``allowed`` ("a -> b") are left out."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for root in sorted(graph):
        if colour[root] != WHITE:
            continue
        colour[root] = GREY
        path = [root]
        todo = [iter(_internal(graph, root, allowed))]
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                colour[path.pop()] = BLACK
                todo.pop()
            elif colour[nxt] == GREY:
                return path[path.index(nxt):] + [nxt]
            elif colour[nxt] == WHITE:
                colour[nxt] = GREY
                path.append(nxt)
                todo.append(iter(_internal(graph, nxt, allowed)))
    return None


def test_reader_resolves_every_kind_of_import(tmp_path):
    """What the checks below rely on, on a toy module (guards against a vacuous pass)."""
    src = tmp_path / "m.py"
    src.write_text(
        "import numpy as np, dask.array\n"
        "from . import sibling, not_a_module\n"
        "from .._xp import array_namespace\n"
        "from ..io import zarr_io\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ..estimators import base\n"
        "def f():\n"
        "    import zarr\n"
        "    from ...outside import x\n"
    )
    modules = {"dclust.kernels.sibling", "dclust._xp", "dclust.io.zarr_io"}
    found = _imports_of("dclust.kernels.m", src, modules)
    assert found == {
        "numpy", "dask.array", "typing", "zarr",
        "dclust.kernels.sibling",  # from . import <module>
        "dclust.kernels",  # from . import <name in the package>
        "dclust._xp",  # from .._xp import <name>
        "dclust.io.zarr_io",  # from ..io import <module>
        "outside",  # beyond the package root: left as written
    }


def test_reader_sees_the_whole_package(graph):
    assert len(graph) > 40 and "dclust" in graph and "dclust.kernels.sinkhorn" in graph
    assert "dclust._xp" in graph["dclust.kernels.sinkhorn"]


def test_checks_catch_what_they_look_for():
    toy = {"a": {"b"}, "b": {"c", "numpy"}, "c": {"a"}, "d": {"a"}}
    assert _find_cycle(toy) == ["a", "b", "c", "a"]
    assert _find_cycle(toy, frozenset({"c -> a"})) is None
    toy["e"], toy["f"] = {"f"}, {"e"}
    assert _cycles(toy) == [["a", "b", "c", "a"], ["e", "f", "e"]]
    kernels = {"dclust.kernels.k": {"dask.array", "dclust.runtime.threads", "dclust._xp"},
               "dclust.kernels": set(), "dclust.runtime.threads": {"dclust.kernels.k"}}
    assert _kernel_violations(kernels) == ["dclust.kernels.k imports dask.array",
                                           "dclust.kernels.k imports dclust.runtime.threads"]
    third = {"dclust.x": {"os", "sklearn.base", "yaml", "psutil", "dclust.y"}}
    assert _undeclared(third, {"scikit-learn"}) == [
        "dclust.x imports psutil (distribution 'psutil')",
        "dclust.x imports yaml (distribution 'pyyaml')",
    ]


def _cycles(graph, allowed=frozenset()) -> list[list[str]]:
    """Cycles until none is left, each found with the closing edge of the ones before
    it left out (so every cycle of the graph is broken by at least one edge reported)."""
    found, allowed = [], set(allowed)
    while (cycle := _find_cycle(graph, frozenset(allowed))) is not None:
        found.append(cycle)
        allowed.add(f"{cycle[-2]} -> {cycle[-1]}")
    return found


def test_no_import_cycles(graph):
    cycles = _cycles(graph, ALLOWED_CYCLE_EDGES)
    assert not cycles, "import cycles among dclust modules: " + "; ".join(
        " -> ".join(c) for c in cycles)


def test_allowed_cycle_edges_still_exist(graph):
    """An allow-list entry whose edge is gone must be removed."""
    gone = [e for e in sorted(ALLOWED_CYCLE_EDGES)
            if e.split(" -> ")[1] not in graph.get(e.split(" -> ")[0], ())]
    assert not gone, f"remove these edges from ALLOWED_CYCLE_EDGES, they are gone: {gone}"


def _kernel_violations(graph) -> list[str]:
    return [
        f"{module} imports {target}"
        for module in sorted(graph)
        if module == "dclust.kernels" or module.startswith("dclust.kernels.")
        for target in sorted(graph[module])
        if any(target == f or target.startswith(f + ".") for f in KERNEL_FORBIDDEN)
    ]


def test_kernels_import_no_dask_runtime_or_upper_layer(graph):
    bad = _kernel_violations(graph)
    assert not bad, "kernels must stay pure (no dask, runtime or upper layers): " + "; ".join(bad)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_distributions() -> set[str]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    specs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    return {_normalise(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", s).group(1)) for s in specs}


def _undeclared(graph, declared) -> list[str]:
    found = []
    for module in sorted(graph):
        for target in sorted(graph[module]):
            top = target.split(".")[0]
            if top == "dclust" or top in sys.stdlib_module_names:
                continue
            dist = _normalise(DISTRIBUTION_OF.get(top, top))
            if dist not in declared:
                found.append(f"{module} imports {target} (distribution {dist!r})")
    return found


def test_third_party_imports_are_declared(graph):
    undeclared = _undeclared(graph, _declared_distributions())
    assert not undeclared, ("third-party imports not declared in pyproject.toml's dependencies "
                            "or optional-dependencies: " + "; ".join(undeclared))
