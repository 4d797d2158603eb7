"""The package's structure, read from its source with ``ast``: no import cycle among
funcnet's modules, and no module writes another module's global."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import funcnet

ROOT = Path(funcnet.__file__).resolve().parent


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ("funcnet", *path.relative_to(ROOT).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = modules()


def _package(name: str) -> str:
    """The package a module's relative imports start from."""
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


FUNCTIONS = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


def _runtime_nodes(tree: ast.AST, lazy: bool):
    """Every node, except those under ``if TYPE_CHECKING:`` (never run) and, unless
    ``lazy``, those inside functions (run only when the function is called)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, FUNCTIONS) and not lazy:
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _base(node: ast.ImportFrom, package: str) -> str:
    """The absolute module ``from BASE import ...`` starts from, in ``package``."""
    base = node.module or ""
    if not node.level:
        return base
    parts = package.split(".")
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([base] if base else []))


def imported(name: str, lazy: bool) -> dict[str, str]:
    """The funcnet modules that module ``name`` imports, each with a line that does so: at
    module level and in class bodies, and with ``lazy`` in function bodies too.

    ``from P import x`` imports the module ``P.x`` when there is one, else ``P`` itself.
    The parents a Python import also runs (``funcnet/__init__`` for ``funcnet.core``) are not
    counted: a package's ``__init__`` imports its children, so every module would be in a
    cycle with it, and that pair is safe (the parent finishes its own import first).
    """
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    found = {}
    for node in _runtime_nodes(tree, lazy):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(node, _package(name))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.append(full if full in MODULES else base)
        for target in targets:
            if target in MODULES and target != name:
                found.setdefault(target, f"{MODULES[name].name}:{node.lineno}")
    return found


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _shown(graph, component) -> str:
    return ", ".join(f"{a} -> {b} ({graph[a][b]})" for a in component for b in graph[a]
                     if b in component)  # fmt: skip


# Cycles through an import inside a function that are allowed: none.
KNOWN_LAZY_CYCLES: list[list[str]] = []


def test_no_import_cycle_among_funcnet_modules_at_module_level():
    graph = {name: imported(name, lazy=False) for name in MODULES}
    assert graph["funcnet.layers.conv"], "the walk finds no imports at all"
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_shown(graph, c) for c in found)


def test_no_import_cycle_among_funcnet_modules_counting_imports_in_functions():
    graph = {name: imported(name, lazy=True) for name in MODULES}
    found = [c for c in cycles(graph) if c not in KNOWN_LAZY_CYCLES]
    assert not found, "import cycles:\n" + "\n".join(_shown(graph, c) for c in found)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}, "d": {"a": ""}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b": ""}, "b": {}}) == []


def module_aliases(tree: ast.AST, package: str) -> set[str]:
    """The names a module binds to funcnet modules (``import funcnet.x as y``,
    ``from . import x``, ``from ..layers import conv``, ``import funcnet``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "funcnet":
                    names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = _base(node, package)
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    names.add(alias.asname or alias.name)
    return names


def writes_to_modules(path: Path, package: str) -> list[str]:
    """``alias.attr = ...`` (or ``+=``, ``del``, ``setattr(alias, ...)``) where ``alias`` is a
    funcnet module imported into the file at ``path``, a module of ``package``."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = module_aliases(tree, package)

    def root(node):
        """The name at the root of ``a.b[i].c`` (None through a call: its result is no
        module's global)."""
        while isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    def written(target):
        """The module alias a target writes through (``alias.x``, ``alias.x[i]``,
        ``alias.x.y``), also inside ``a, alias.x = ...``."""
        if isinstance(target, ast.Tuple | ast.List):
            return next(filter(None, map(written, target.elts)), None)
        if isinstance(target, ast.Starred):
            return written(target.value)
        if isinstance(target, ast.Attribute | ast.Subscript) and root(target) in aliases:
            return root(target)
        return None

    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign | ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("setattr", "delattr") and node.args:
                if root(node.args[0]) in aliases:
                    found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if any(written(t) for t in targets):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_no_funcnet_module_writes_another_modules_global():
    found = [
        hit for name, path in MODULES.items() for hit in writes_to_modules(path, _package(name))
    ]
    assert not found, "writes to another module's globals:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "from .layers import _conv_numpy\n_conv_numpy.CHUNK_BYTES = 1\n",
        "from .layers import conv as c\ndef f():\n    c.X += 1\n",
        "import funcnet.layers.conv\nfuncnet.layers.conv.X = 1\n",
        "from funcnet import train\nsetattr(train, 'X', 1)\n",
        "from .layers import conv\na, conv.X = 1, 2\n",
        "from . import optim\noptim.CACHE[3] = 1\n",
    ],
)
def test_the_write_finder_finds_writes(tmp_path, source):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert writes_to_modules(path, "funcnet")


def test_the_write_finder_passes_writes_to_own_objects(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "import numpy as np\nfrom .layers import conv\nx = np.zeros(3)\nx.shape = (3,)\n"
        "conv.window(x, 0)[...] += 1\n"
    )
    assert not writes_to_modules(path, "funcnet")


def test_no_function_in_funcnet_is_over_80_lines():
    """A function reads on one screen; a longer one is split into named steps."""
    long = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{name}.{node.name} ({path.name}:{node.lineno}): {lines} lines")
    assert not long, "over 80 lines:\n" + "\n".join(long)
