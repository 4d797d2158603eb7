"""Mutants of funcnet's functions, made from the syntax tree rather than the text.

A ``Mutation`` names a module, a piece of code (``old``) and what replaces it (``new``),
both written as the code reads today.  ``old`` is matched against the module's syntax tree:

* an expression matches any expression of the same shape; a statement (an assignment, an
  augmented assignment, a return) any statement of the same shape;
* every *name* in ``old`` (a variable, a function called by its name, a module alias) stands
  for whatever name sits there, the same name wherever it repeats and different names for
  different ones; ``new`` is written in ``old``'s names and gets the names that matched;
* everything else must be equal: operators, constants, attribute names (``.sum``, ``.T``),
  keyword names, the structure.  Formatting, comments and parentheses never matter.

So a site survives renaming a variable or a helper function, reformatting and edits around
it; it fails loudly (naming the count) when its code is gone or when it matches more than
once in its scope.  The scope is the whole module unless ``inside`` names a function or
class (dotted for nesting: ``"BatchNorm"``, ``"Cls.method"``); name one only when the code
alone is ambiguous in the module, or write more of the statement.

The mutant replaces the code object of the module-level function (or method) that holds
the match, compiled from the module's mutated tree: every reference to that function (an
import under another name, a ``Loss``, a jitted wrapper through ``__wrapped__``) runs the
mutant, and closures it builds (a layer's ``backward``) are the mutant's.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from types import CodeType


@dataclass(frozen=True)
class Mutation:
    module: str  # e.g. "funcnet.layers._conv_numpy"
    old: str  # an expression or a statement, as the code reads today
    new: str  # what replaces it, in old's names
    catch: str  # a part of the labels of the catalogue cases that must catch it
    arrays: str = "numpy jax"  # the array types to run those cases on
    inside: str | None = None  # the function or class to look in, when old alone is ambiguous

    @property
    def id(self) -> str:
        new = " ".join(self.new.split())[:48]
        return f"{self.module.rpartition('.')[2]}:{new} @ {self.catch}"


DEFINITIONS = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


@functools.cache
def _tree(path: str) -> ast.Module:
    """The module's syntax tree, parsed once (a mutant puts its change in and takes it out)."""
    return ast.parse(Path(path).read_text(), path)


def _snippet(text: str) -> ast.AST:
    """``text`` as one expression node, or one statement node."""
    body = ast.parse(text.strip()).body
    if len(body) != 1:
        raise ValueError(f"a mutation's code is one expression or statement, got {text!r}")
    return body[0].value if isinstance(body[0], ast.Expr) else body[0]


def _bind(names: dict, pattern: str, name: str) -> bool:
    """Bind a pattern name to a source name, one to one."""
    if pattern in names:
        return names[pattern] == name
    if name in names.values():
        return False
    names[pattern] = name
    return True


def matches(pattern, node, names: dict) -> bool:
    """Whether ``node`` has ``pattern``'s shape, binding the pattern's names into ``names``."""
    if isinstance(pattern, list):
        return (
            isinstance(node, list)
            and len(pattern) == len(node)
            and all(matches(p, n, names) for p, n in zip(pattern, node, strict=True))
        )
    if not isinstance(pattern, ast.AST):
        return type(pattern) is type(node) and pattern == node
    if type(pattern) is not type(node):
        return False
    if isinstance(pattern, ast.Name):
        return _bind(names, pattern.id, node.id)
    return all(
        matches(value, getattr(node, field, None), names)
        for field, value in ast.iter_fields(pattern)
        if field not in ("ctx", "type_comment")
    )


def _renamed(snippet: ast.AST, names: dict) -> ast.AST:
    snippet = copy.deepcopy(snippet)
    for node in ast.walk(snippet):
        if isinstance(node, ast.Name):
            node.id = names.get(node.id, node.id)
    return snippet


def _scope(tree: ast.Module, inside: str | None) -> tuple[ast.AST, tuple]:
    """The node to look in, and the nodes above it."""
    scope, above = tree, ()
    for name in inside.split(".") if inside else ():
        found = [
            n for n in ast.iter_child_nodes(scope) if isinstance(n, DEFINITIONS) and n.name == name
        ]
        if len(found) != 1:
            raise LookupError(f"no function or class {inside!r} to look in")
        scope, above = found[0], (*above, scope)
    return scope, above


def _walk(node, above):
    """Every node under ``node`` (itself included) with the nodes above it."""
    yield node, above
    above = (*above, node)
    for child in ast.iter_child_nodes(node):
        yield from _walk(child, above)


def _holder(above) -> list[str]:
    """The names from the module down to the outermost function among the nodes ``above``
    a site: its runtime object is ``getattr(module, names[0])...``."""
    path = []
    for node in above:
        if isinstance(node, ast.ClassDef):
            path.append(node.name)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return [*path, node.name]
    return []


def _replace(parent: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return
        if isinstance(value, list) and any(v is old for v in value):
            value[[v is old for v in value].index(True)] = new
            return


def _code(code: CodeType, qualname: str) -> CodeType | None:
    for const in code.co_consts:
        if isinstance(const, CodeType):
            if const.co_qualname == qualname:
                return const
            found = _code(const, qualname)
            if found is not None:
                return found
    return None


def mutant(mutation: Mutation):
    """(function, mutated code object, where): ``function`` is the module-level function
    (or method) holding the one match of ``mutation.old``; ``where`` says which."""
    module = importlib.import_module(mutation.module)
    tree = _tree(module.__file__)
    pattern, replacement = _snippet(mutation.old), _snippet(mutation.new)
    found = []
    for node, above in _walk(*_scope(tree, mutation.inside)):
        names: dict = {}
        if type(node) is type(pattern) and matches(pattern, node, names):
            found.append((node, above, names))
    scope = mutation.inside or "the module"
    if len(found) != 1:
        raise LookupError(
            f"{mutation.module}: {mutation.old!r} matches {len(found)} times in {scope}, "
            "not once (write more of the statement, or name the function with inside=)"
        )
    node, above, names = found[0]
    holder = _holder(above)
    if not holder:
        raise LookupError(f"{mutation.module}: {mutation.old!r} is not inside a function")
    new = ast.fix_missing_locations(ast.copy_location(_renamed(replacement, names), node))
    # Only the definition that holds the site is compiled (with the module's __future__
    # imports): its code object is all the mutant needs.
    outer = next(n for n in tree.body if isinstance(n, DEFINITIONS) and n.name == holder[0])
    future = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    _replace(above[-1], node, new)
    try:
        unit = ast.Module(body=[*future, outer], type_ignores=[])
        compiled = compile(unit, f"<mutant of {mutation.module}>", "exec", dont_inherit=True)
    finally:
        _replace(above[-1], new, node)  # the cached tree is the module's source again
    function = module
    for name in holder:
        function = getattr(function, name)
    function = inspect.unwrap(function)
    return function, _code(compiled, ".".join(holder)), f"{mutation.module}.{'.'.join(holder)}"
