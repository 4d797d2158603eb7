"""The examples run, print their plots, and reproduce the seed numbers."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import funcnet as fn
from funcnet.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


def run_example(name, *args):
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_apple_orange_prints_the_seed_numbers_and_the_graph():
    out = run_example("apple_orange.py")
    for line in ["price 715", "dApple 2.2", "dApple_num 110", "dOrange 3.3", "dOrange_num 165",
                 "dTax 650"]:  # fmt: skip
        assert line in out.splitlines()
    assert "(×)" in out and "(+)" in out and "715 [1]" in out and "100 [2.2]" in out


def test_gradient_descent_example_and_cli_demo(capsys):
    out = run_example("gradient_descent.py", "--grad", "jax")
    assert "final x = (-0.0346, 0.0461)" in out and "f(x) = 0.0033231" in out
    assert "path on the (x1, x2) plane" in out and "f over the steps" in out
    assert cli(["demo", "--no-plot"]) == 0
    assert "final x = (-0.0346, 0.0461)" in capsys.readouterr().out


def test_linear_regression_recovers_w_and_b():
    out = run_example("linear_regression.py")
    assert "training loss" in out
    mod = {}
    exec(compile((ROOT / "examples" / "linear_regression.py").read_text(), "lr", "exec"), mod)
    r = mod["run"]()
    assert abs(r["b"] - 3.0) < 0.05
    assert np.max(np.abs(r["w"] - r["w_true"])) < 0.05
    assert r["losses"][-1] < 0.02 < r["losses"][0]


def test_cli_check_passes_and_fails_when_a_gradient_is_wrong(capsys, monkeypatch):
    assert cli(["check"]) == 0
    out = capsys.readouterr().out
    total = int(out.split("\n")[-2].split()[0])
    assert f"{total} passed, 0 failed" in out and "Softmax [jax]" in out
    real = fn.layers.activations.Tanh

    def broken_tanh(**kw):
        layer = real(**kw)
        return layer._replace(backward=lambda c, d, **k: ((), 1.001 * layer.backward(c, d)[1]))

    # The catalogue builds its layers at check time, from their modules.
    monkeypatch.setattr(fn.layers.activations, "Tanh", broken_tanh)
    from funcnet.cli import check

    every = check.builtin_checks
    monkeypatch.setattr(check, "builtin_checks", lambda seed: every(seed, kinds={"activation"}))
    assert cli(["check"]) == 1
    out = capsys.readouterr().out
    assert "Tanh [numpy]" in out and "FAIL vs jax" in out and ", 2 failed" in out


@pytest.mark.parametrize(
    ("name", "prefix"),
    [("train_mnist.py", ["train"]), ("train_convnet.py", ["train", "--model", "convnet"])],
)
def test_training_examples_are_the_cli(monkeypatch, name, prefix):
    import runpy

    seen = []
    monkeypatch.setattr("funcnet.cli.main", lambda argv: seen.append(argv) or 0)
    monkeypatch.setattr(sys, "argv", [name, "--epochs", "1"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    assert stop.value.code == 0 and seen == [[*prefix, "--epochs", "1"]]


EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))


def test_examples_found():
    assert {"train_mnist.py", "train_convnet.py", "apple_orange.py"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_have_a_docstring_with_usage(name):
    text = (ROOT / "examples" / name).read_text()
    assert text.startswith('"""') and f"python examples/{name}" in text


def test_residual_example_trains_the_residual_net(monkeypatch, capsys):
    import runpy

    rng = np.random.default_rng(0)
    x, t = rng.random((300, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 300)
    mod = runpy.run_path(str(ROOT / "examples" / "residual_mnist.py"))
    data = ((x[:200], t[:200]), (x[200:], t[200:]))
    monkeypatch.setitem(mod["main"].__globals__, "load_mnist", lambda *a, **k: data)
    assert mod["main"](["--epochs", "1", "--backend", "numpy", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert out.count("residual(pipeline(Conv(8, 3, padding=1, bias=False), BatchNorm") == 2
    assert "200 training images" in out and "epoch 1: train" in out
