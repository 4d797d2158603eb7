"""The package face: what `import funcnet` costs and gives, and export lists that are whole."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import funcnet as fn

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(fn.__path__, "funcnet.")
    if not m.name.rsplit(".", 1)[-1].startswith("_")
)


def test_import_funcnet_loads_numpy_and_nothing_heavier():
    code = (
        "import sys, funcnet as fn; "
        "heavy = [m for m in ('jax', 'plotext', 'optax', 'torch') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_submodules_are_reachable_from_the_package():
    for name in ("optim", "train", "models", "data", "checkpoints", "experiments", "plot"):
        assert getattr(fn, name) is importlib.import_module(f"funcnet.{name}")
    assert fn.check_layer is importlib.import_module("funcnet.gradcheck").check_layer
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fn.nope  # noqa: B018


@pytest.mark.parametrize("name", ["funcnet", *MODULES])
def test_every_all_is_complete_and_resolves(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if name.startswith("funcnet.cli"):
        return  # the command's modules are not an API
    assert exported is not None, f"{name} has no __all__"
    for n in exported:
        assert getattr(module, n) is not None, n
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(v) or inspect.isclass(v))
        and getattr(v, "__module__", None) == name
    }
    assert public <= set(exported), f"{name}.__all__ lacks {sorted(public - set(exported))}"
