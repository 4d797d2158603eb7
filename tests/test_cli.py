"""`funcnet` as a person runs it: bad values refused in one line before any work, a --save
target checked first, Ctrl-C that keeps the finished epochs, a diverging run stopped."""

from __future__ import annotations

import argparse
import ast
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from commands import FUNCNET, call, signal_after, start

from funcnet import checkpoints, models, optim, tasks, train
from funcnet.cli import _flags as flags
from funcnet.cli import _settings
from funcnet.data import load_mnist

TWO = ["--coordinator", "h:1", "--num-processes", "2"]  # two processes, without an id


def run(*args, **kw):
    return subprocess.run([*FUNCNET, *args], capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["train", "--epochs", "0"], "--epochs: must be > 0, got 0"),
        (["train", "--lr", "nan"], "--lr: must be finite, got nan"),
        (["train", "--lr", "-1"], "--lr: must be > 0, got -1"),
        (["train", "--batch", "x"], "--batch: expected a int, got 'x'"),
        (["train", "--hidden", "0"], "--hidden: must be > 0"),
        (["train", "--weight-std", "inf"], "--weight-std: must be finite"),
        (["train", "--average", "1"], "--average: must be in [0, 1), got 1"),
        (["train", "--subset", "-3"], "--subset: must be >= 0"),
        (["train", "--test-subset", "-1"], "--test-subset: must be >= 0"),
        (["train", "--subset", "50", "--batch", "100"], "--batch 100 is larger than --subset 50"),
        (["train", "--scan"], "--scan compiles each epoch with JAX: add --backend jax"),
        (["train", "--save", "/nonexistent-dir/p.npz"], "folder /nonexistent-dir does not exist"),
        (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
        (["train", "--devices", "0"], "--devices: must be > 0, got 0"),
        (["train", "--devices", "3"], "--batch 100 does not split evenly over 3 devices"),
        (["train", "--devices", "2", "--backend", "numpy"], "--devices runs the step on JAX"),
        (["train", "--coordinator", "node0"], "--coordinator: expected HOST:PORT, port 1..65535"),
        (["train", "--coordinator", "h:1"], "--coordinator needs --num-processes and --process-id"),
        (["train", "--process-id", "1"], "--process-id needs --coordinator HOST:PORT"),
        (["train", *TWO, "--process-id", "2"], "--process-id 2 must be below --num-processes 2"),
        (
            ["train", *TWO, "--process-id", "0", "--devices", "2", "--batch", "50"],
            "--batch 50 does not split evenly over 4 devices",
        ),
        (["train", "--cluster", "--coordinator", "h:1"], "--cluster reads the processes from"),
        (["train", "--peer-timeout", "0"], "--peer-timeout: must be > 0"),
        (["train", "--resume", "/nonexistent.npz"], "/nonexistent.npz does not exist"),
        (["train", "--checkpoint", "/nonexistent-dir/r.npz"], "folder /nonexistent-dir does not"),
        (["train", "--augment", "2"], "--augment shifts images: use it with --model convnet"),
        (["train", "--model", "deep", "--augment", "14"], "--augment 14 would shift a 28x28"),
        (["train", "--augment", "-1"], "--augment: must be >= 0"),
        (["train", "--lr-schedule", "linear"], "invalid choice: 'linear'"),
        (["train", "--task", "nope"], "invalid choice: 'nope' (choose from 'mnist', "),
        (["profile", "--repeats", "0"], "--repeats: must be > 0"),
        (["profile", "--model", "vgg"], "invalid choice: 'vgg'"),
        (["demo", "--x0", "nan", "1"], "--x0: must be finite, got nan"),
        (["demo", "--x0", "1e200", "1e200"], "--x0: must be within ±1e100"),
        (["demo", "--steps", "-1"], "--steps: must be >= 0"),
        (["check", "--seed", "-1"], "--seed: must be >= 0"),
    ],
)
def test_bad_values_are_one_line_and_exit_2_before_any_work(tmp_path, capsys, argv, says):
    # A data folder that does not exist: had the command got as far as loading, it would
    # complain about MNIST instead.
    extra = ["--data-dir", str(tmp_path / "none")] if argv[0] == "train" else []
    code, out, err = call(capsys, *argv, *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], err
    assert out == "" and not (tmp_path / "none").exists()


def test_ctrl_c_outside_training_is_one_line_and_exit_130(capsys, monkeypatch):
    from funcnet.cli import demo

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run", interrupted)
    code, out, err = call(capsys, "demo")
    assert code == 130 and out == "" and err == "funcnet demo: interrupted\n"


def test_save_to_a_directory_is_refused_first(tmp_path):
    # As a real process: the refusals above reach the shell as exit status 2.
    out = run("train", "--save", str(tmp_path), "--data-dir", str(tmp_path / "none"))
    assert out.returncode == 2 and "is a directory; give a file name" in out.stderr
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1


def test_version_and_help_show_defaults():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("funcnet ")
    text = " ".join(run("train", "--help").stdout.split())
    assert "(default: 0.01)" in text and "(default: None)" not in text
    # A default the task sets is described from its registry entry.
    assert (
        "LSTM units; None: by --task (mnist: 100; addition: 128 for seq2seq and peeky, 256 for "
        "attention; date: 256" in text
    )
    assert (
        "None: by --task (mnist: sgd for mlp, adam for convnet and deep; shakespeare: adamw; "
        "addition: adam; date: adam" in text
    )
    assert "None: by --task (addition: False; date: True" in text  # --reverse: no mnist
    assert (
        "training steps, each on --batch random windows" in text and "(shakespeare: 2000)" in text
    )


@pytest.fixture
def mnist_env(mnist_dir):
    return {**os.environ, "FUNCNET_DATA": str(mnist_dir)}


def test_ctrl_c_after_a_finished_epoch_keeps_it(tmp_path, mnist_env, mnist_dir):
    save = tmp_path / "p.npz"
    argv = ["train", "--subset", "3000", "--epochs", "1000", "--no-plot", "--save", str(save)]
    proc = start(argv, mnist_env)
    printed, rest, err = signal_after(proc, "epoch   2/1000")
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted after" in lines[0] and str(save) in lines[0]
    assert "Traceback" not in err and not list(tmp_path.glob("*.part"))
    # What was saved is the last finished epoch: it scores what that epoch printed.
    epoch = int(lines[0].split("the params of epoch ")[1].split()[0])
    row = next(r for r in printed + rest.splitlines() if r.startswith(f"epoch {epoch:>3}/"))
    shown = float(row.split("test ")[1].split("%")[0])
    net = models.two_layer_net(100)
    params = checkpoints.load_params(save, net.init(0, (-1, 784))[1])
    _, (xt, tt) = load_mnist(mnist_dir, download=False)
    assert round(100 * train.accuracy(net, params, xt, tt), 2) == shown


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_a_diverging_run_stops_with_one_line_naming_the_learning_rate(
    capsys, monkeypatch, mnist_dir, backend
):
    monkeypatch.setenv("FUNCNET_DATA", str(mnist_dir))
    code, _, err = call(
        capsys, "train", "--subset", "1000", "--epochs", "3", "--lr", "1e30", "--no-plot",
        "--backend", backend,
    )  # fmt: skip
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--lr 1e+30: try a smaller one" in lines[0], err
    assert "learning rate is probably too large" in lines[0]


def test_test_subset_scores_the_first_test_images(capsys, monkeypatch, mnist_dir):
    monkeypatch.setenv("FUNCNET_DATA", str(mnist_dir))
    code, out, err = call(
        capsys, "train", "--subset", "500", "--test-subset", "300", "--epochs", "1", "--no-color"
    )
    assert code == 0, err
    assert "500 training / 300 test images" in out
    assert re.search(r"\n\d+ of the first 300 test digits misclassified", out)
    shown = float(out.split("test accuracy ")[1].split("%")[0])
    assert "on the first 300 test images" in out
    (x, t), (xt, tt) = load_mnist(mnist_dir, download=False)
    net = models.two_layer_net(100)
    # The same run in process, scored on the first 300 test images: the figure printed.
    params, _, _ = train.fit(
        net, net.init(0, (-1, 784))[1], (x[:500], t[:500]), epochs=1, batch_size=100, seed=0,
        optimizer=optim.sgd(0.1), progress=False,
    )  # fmt: skip
    assert round(100 * train.accuracy(net, params, xt[:300], tt[:300]), 2) == shown
    # More than the files hold is refused once they are read, not quietly cut to fit.
    for flag, n, have in [("--test-subset", 10001, 10000), ("--subset", 60001, 60000)]:
        code, out, err = call(capsys, "train", flag, str(n), "--epochs", "1", "--no-plot")
        assert code == 2 and "epoch" not in out, out
        assert err.strip() == f"funcnet train: {flag} {n} is more than the {have} images there are"


def test_eval_reads_a_saved_model_back(tmp_path, capsys, monkeypatch, mnist_dir):
    monkeypatch.setenv("FUNCNET_DATA", str(mnist_dir))
    save = tmp_path / "p.npz"
    train_args = ["train", "--subset", "2000", "--epochs", "1", "--no-plot"]
    code, out, err = call(capsys, *train_args, "--save", str(save))
    assert code == 0, err
    shown = out.split("test accuracy ")[1].split("%")[0]
    code, out, err = call(capsys, "eval", "--load", str(save), "--no-color", "--show", "2")
    assert code == 0, err
    assert f"test accuracy {shown}% on all 10000 test images" in out
    assert "confusion matrix" in out and "true \\ pred" in out
    assert "misclassified; the first 2:" in out and "\x1b[" not in out
    code, _, err = call(capsys, "eval", "--load", str(save), "--model", "convnet")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert "does not match the network" in lines[0] and "--model convnet checkpoint" in lines[0]
    code, _, err = call(capsys, "eval", "--load", str(tmp_path / "none.npz"))
    assert code == 2 and "none.npz does not exist" in err
    # Two files: each one scored, then their ensemble, the mean of their softmax outputs.
    other = tmp_path / "q.npz"
    code, _, err = call(capsys, *train_args, "--seed", "1", "--save", str(other))
    assert code == 0, err
    code, out, err = call(capsys, "eval", "--load", str(save), str(other), "--no-plot")
    assert code == 0, err
    assert f"{save}: test accuracy {shown}%" in out
    net = models.two_layer_net()
    like = net.init(0, (-1, 784))[1]
    _, (xt, tt) = load_mnist(mnist_dir, download=False)
    mean = sum(
        train.probabilities(net, checkpoints.load_params(f, like), xt) for f in (save, other)
    )
    acc = 100 * np.mean(mean.argmax(axis=1) == tt)
    assert f"the ensemble of 2 (mean softmax): test accuracy {acc:.2f}%" in out


def test_examples_fail_like_the_cli_in_one_line(capsys):
    from funcnet.cli import run_script
    from funcnet.data import MNISTError

    def main():
        raise MNISTError("x.gz not found. Searched:\n  /a\n  /b\nPut the files in one of them.")

    with pytest.raises(SystemExit) as stop:
        run_script(main, "example.py")
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1
    assert err == ["example.py: x.gz not found. Searched: Put the files in one of them."]


# --------------------------------------------------------------------------- one place per flag

CLI = Path(__file__).resolve().parent.parent / "funcnet" / "cli"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _code_strings(path: Path) -> list[str]:
    """Every string in a module's code: literals and f-string parts, not docstrings."""
    tree = ast.parse(path.read_text())
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


def test_each_flag_is_written_once_in_the_cli_code():
    # Help texts and error messages included: a flag is named through its declaration.
    seen = Counter(f for p in CLI.glob("*.py") for s in _code_strings(p) for f in FLAG.findall(s))
    assert seen, "no flags found"
    assert {f: n for f, n in seen.items() if n != 1} == {}
    # As a plain grep sees it: each quoted "--flag" literal once in the package's source.
    quoted = Counter(
        m.group(1)
        for p in CLI.glob("*.py")
        for m in re.finditer(r"""["'](--[a-z][a-z0-9-]*)["']""", p.read_text())
    )
    assert {f: n for f, n in quoted.items() if n != 1} == {}
    assert {f.name for f in flags.ALL} <= set(quoted)


def test_every_declared_flag_is_offered_and_parses_its_declared_default(capsys):
    from funcnet.cli import COMMANDS, demo, evaluate, profile, sample
    from funcnet.cli import train as train_command

    used = {f.name for m in (demo, evaluate, profile, train_command, sample) for f in m.FLAGS}
    assert used | {flags.SEED.name} == {f.name for f in flags.ALL}
    assert set(COMMANDS) == {"check", "demo", "train", "eval", "profile", "sample"}
    assert len({f.dest for f in flags.ALL}) == len(flags.ALL)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    train_command.add_parser(sub)
    args = parser.parse_args(["train"])
    for f in train_command.FLAGS:
        default = f.default() if callable(f.default) else f.default
        # A switch a task sets (--reverse) is None, the task's, until given on or off.
        want = None if f.per_task else False if f.switch else default
        assert getattr(args, f.dest) == want, f.name
    assert args.task == tasks.DEFAULT_TASK and args.run is train_command.run


def _train_args(*argv):
    from funcnet.cli import train as train_command

    parser = argparse.ArgumentParser()
    train_command.add_parser(parser.add_subparsers())
    return _settings.resolved(parser.parse_args(["train", *argv]))


def test_recorded_settings_are_the_flags_declared_recorded(tmp_path, monkeypatch):
    recorded = {f.dest for f in flags.ALL if f.recorded}
    # What checkpoints have always recorded, and the task since there is more than one.
    old = {"model", "hidden", "optimizer", "lr", "average", "batch", "seed", "subset"}
    # The iteration-counted runs' settings (--task shakespeare) are recorded by theirs only.
    gpt = {"iters", "eval_every", "layers", "heads", "width", "context", "dropout"}
    seq = {"wordvec", "reverse", "clip"}  # the seq2seq tasks'
    assert recorded == old | {"augment", "lr_schedule", "task"} | gpt | seq
    got = _settings.settings(_train_args("--model", "convnet", "--seed", "3"))
    assert got == {
        "task": "mnist", "model": "convnet", "hidden": None, "optimizer": "adam",
        "lr": 0.001, "average": 0.999, "batch": 100, "seed": 3, "subset": 0, "augment": 0,
        "lr_schedule": "constant", "wordvec": None, "reverse": None, "clip": None,
    }  # fmt: skip
    # A flag declared recorded is recorded and checked on --resume, with no other edit.
    std = flags.WEIGHT_STD.but(recorded=True, legacy=0.01)
    monkeypatch.setattr(_settings, "RECORDED", (*_settings.RECORDED, std))
    args = _train_args("--weight-std", "0.02", "--epochs", "5")
    assert _settings.settings(args)["weight_std"] == 0.02
    _, params = models.two_layer_net().init(0, (-1, 784))
    run = tmp_path / "r.npz"
    # A checkpoint from before --task, --augment, --lr-schedule (and --weight-std) existed.
    meta = {k: _settings.settings(args)[k] for k in old}
    checkpoints.save_run(run, params, (), 2, meta)
    args.resume = str(run)
    assert _settings.resume_problem(args) == (
        "it was written with --weight-std 0.01, this run has 0.02"
    )
    args.weight_std = 0.01
    assert _settings.resume_problem(args) is None


def test_task_defaults_are_resolved_from_the_registry():
    mnist = tasks.TASKS["mnist"]
    for given, want in [
        ({}, ("mlp", "sgd", 0.1, 0.0)),
        ({"model": "convnet"}, ("convnet", "adam", 0.001, 0.999)),
        ({"model": "deep"}, ("deep", "adam", 0.001, 0.0)),
        ({"model": "mlp", "optimizer": "adam"}, ("mlp", "adam", 0.001, 0.0)),
        ({"model": "convnet", "optimizer": "momentum"}, ("convnet", "momentum", 0.1, 0.999)),
        ({"model": "convnet", "lr": 0.5, "average": 0.0}, ("convnet", "adam", 0.5, 0.0)),
    ]:
        got = mnist.resolve(given)
        assert (got["model"], got["optimizer"], got["lr"], got["average"]) == want, given
        assert (got["epochs"], got["batch"]) == (20, 100)
    for task in tasks.TASKS.values():  # the registry is whole
        assert set(task.models) <= set(models.MODELS) and task.defaults["model"] in task.models
        for m in task.models:
            assert task.setting(m, "optimizer") in task.learning_rates
    assert tasks.describe_default("optimizer") == (
        "mnist: sgd for mlp, adam for convnet and deep; shakespeare: adamw; addition: adam; "
        "date: adam"
    )
    assert tasks.describe_default("iters") == "shakespeare: 2000"


def _toy_task(seen):
    """A task added by one entry: 784-feature examples of three classes, its own settings."""

    def load(settings):
        seen.append(settings["data_dir"])
        rng = np.random.default_rng(0)
        t = np.arange(120) % 3
        x = (rng.random((120, 784)) * 0.1 + t[:, None] / 3).astype(np.float32)
        return tasks.Data((x[:90], t[:90]), (x[90:], t[90:]))

    return tasks.Task(
        name="toy", description="three easy classes", load=load, models=("mlp",),
        defaults={"model": "mlp", "hidden": 16, "optimizer": "adam", "epochs": 2, "batch": 30,
                  "average": 0.0},
        model_defaults={}, learning_rates={"adam": 0.01}, metrics={"accuracy": train.accuracy},
        unit="points", show=lambda net, params, test, **kw: f"{len(test[0])} points shown",
    )  # fmt: skip


def test_a_task_is_one_registry_entry(capsys, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setitem(tasks.TASKS, "toy", _toy_task(seen))
    code, out, err = call(capsys, "train", "--help")
    assert ",toy}" in out and "toy: 2" in " ".join(out.split())
    code, out, err = call(
        capsys, "train", "--task", "toy", "--data-dir", str(tmp_path), "--no-color"
    )
    assert code == 0, err
    assert seen == [str(tmp_path)]
    assert "90 training / 30 test points, batch 30, adam lr 0.01, 2 epochs" in out
    assert "epoch   2/2" in out and "on all 30 test points" in out and "30 points shown" in out
    assert "Dense(16)" in out
    code, _, err = call(capsys, "train", "--task", "toy", "--model", "convnet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--model convnet is not offered for --task toy: use one of mlp" in err
    code, _, err = call(capsys, "train", "--task", "toy", "--optimizer", "sgd")
    assert code == 2 and "--optimizer sgd is not offered for --task toy: use one of adam" in err


@pytest.mark.parametrize(
    ("argv", "heavy"),
    [
        (["demo", "--no-plot", "--steps", "2"], ("jax", "funcnet.data", "funcnet.tasks")),
        (["train", "--help"], ("jax", "funcnet.data", "funcnet.train")),
        (["--version"], ("jax", "funcnet.models")),
    ],
)
def test_a_command_imports_only_what_it_needs(argv, heavy):
    code = (
        f"import sys; from funcnet.cli import main\ntry: main({argv})\n"
        f"except SystemExit: pass\nprint([m for m in {heavy} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_signal_during_the_final_save_waits_for_it(tmp_path, capsys, monkeypatch, mnist_dir):
    import os

    from funcnet.cli import train as train_command

    monkeypatch.setenv("FUNCNET_DATA", str(mnist_dir))
    real = train_command._save

    def interrupted_save(*args):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as the write begins
        return real(*args)

    monkeypatch.setattr(train_command, "_save", interrupted_save)
    save = tmp_path / "p.npz"
    code, out, err = call(
        capsys, "train", "--subset", "1000", "--epochs", "1", "--no-plot", "--save", str(save)
    )
    assert code == 130, err
    assert (
        err.strip()
        == f"funcnet train: interrupted after all 1 epoch(s); the params are saved to {save}"
    )
    assert save.is_file() and "test accuracy" not in out
