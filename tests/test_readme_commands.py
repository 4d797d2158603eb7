"""The README's commands work as written: each one runs, against the MNIST the README says
to point at.  Training commands get a shortening suffix (fewer epochs, iterations or images)
so that the default suite stays short; ``--run-slow`` runs them exactly as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from funcnet import shakespeare

ROOT = Path(__file__).resolve().parent.parent
SECTION = ROOT.joinpath("README.md").read_text().split("## Commands and examples", 1)[1]
BLOCK = re.search(r"```bash\n(.*?)```", SECTION, re.S).group(1)
COMMANDS = [
    line.split("  #")[0].strip()
    for line in BLOCK.splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]
# What makes each long command short; the command itself is run as the README writes it.
SHORT_TRAINING = ["--epochs", "1", "--subset", "600", "--test-subset", "1000", "--no-plot"]
SHORTER = {
    # Before "funcnet train": the GPT's run is counted in iterations, and a tiny model.
    "--task shakespeare": [
        "--iters",
        "20",
        "--eval-every",
        "10",
        "--layers",
        "1",
        "--heads",
        "2",
        "--width",
        "16",
        "--context",
        "16",
    ],
    "funcnet sample": ["--tokens", "20"],
    "funcnet train": SHORT_TRAINING,
    "examples/train_mnist.py": SHORT_TRAINING,
    "examples/compare_optimizers.py": ["--iters", "20", "--every", "5", "--test-size", "200"],
    "examples/compare_init.py": ["--iters", "20", "--every", "5", "--test-size", "200"],
    "examples/batchnorm.py": ["--epochs", "2", "--stds", "1.0", "--train-size", "200"],
    "examples/dropout_overfit.py": ["--epochs", "2"],
    "funcnet profile": ["--repeats", "1", "--backend", "numpy"],
}
# What a command must print (regular expressions, multi-line), beyond exiting with 0.  A
# plot is a box drawn without colour (NO_COLOR is set).
PLOT = ["┌", "└"]
OPTIMIZERS = ("SGD", "Momentum", "AdaGrad", "Adam")
EXPECT = {
    "--task shakespeare": [*PLOT, r"(?m)^val loss \d\.\d{4} after \d+ iterations$"],
    "funcnet sample": [r"^ROMEO:"],
    "examples/optimizer_paths.py": [
        *PLOT,
        r"optimizer paths on x²/20 \+ y²",
        *(f"(?m)^{n} " for n in OPTIMIZERS),
    ],
    "examples/compare_optimizers.py": [
        *PLOT,
        r"training loss \(mean of every \d+ iterations\)",
        *(f"(?m)^{n} .*final loss" for n in OPTIMIZERS),
    ],
    "examples/compare_init.py": [*PLOT, "std=0.01 ", "Xavier ", "He "],
    "examples/batchnorm.py": [
        *PLOT,
        r"W init std [\d.]+: train accuracy",
        "BatchNorm's mean train accuracy",
    ],
    "examples/dropout_overfit.py": [
        *PLOT,
        "without dropout: accuracy",
        r"dropout 0.2 \(inverted\): accuracy",
        "gap",
    ],
}


def test_the_readme_lists_its_commands():
    assert any(c.startswith("funcnet train") for c in COMMANDS)
    assert any(c.startswith("python examples/") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, mnist_dir, tmp_path, request):
    slow = request.config.getoption("--run-slow") or os.environ.get("FUNCNET_SLOW") == "1"
    env = {**os.environ, "FUNCNET_DATA": str(mnist_dir), "NO_COLOR": "1"}
    if command == "funcnet check" and not slow:
        pytest.skip("the whole catalogue runs in test_examples.py already")
    if "--model deep" in command and "train" in command and not slow:
        # Even shortened to 6 steps and 1,000 test images, the deep net's command took 63 s
        # here (on a busy machine); the same command runs in-process on synthetic images in
        # test_train.py.
        pytest.skip("the deep convnet on MNIST runs with --run-slow")
    if "shakespeare" in command and shakespeare.find() is None:
        pytest.skip("tiny Shakespeare not found: set FUNCNET_SHAKESPEARE")
    for part in command.split("&&"):
        part = part.replace("../shared/mnist", str(mnist_dir))
        argv = shlex.split(part.replace("[--grad jax]", ""))
        if ";" in part:  # a shell line such as `funcnet --version; funcnet train --help`
            argv = ["bash", "-c", part.replace("funcnet", f"{sys.executable} -m funcnet")]
        elif argv[0] == "python":
            argv = [sys.executable, str(ROOT / argv[1]), *argv[2:]]
        else:
            argv = [sys.executable, "-m", "funcnet", *argv[1:]]
        key = next((k for k in SHORTER if k in part), None)
        if key and not slow:
            argv += SHORTER[key]
        out = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, f"{part}\n{out.stderr[-2000:]}"
        for expected in next((v for k, v in EXPECT.items() if k in part), []):
            assert re.search(expected, out.stdout), f"{part}: no {expected!r} in\n{out.stdout}"
        assert "\x1b[" not in out.stdout, f"{part}: colour with NO_COLOR set"
