"""`funcnet train --task shakespeare` and `funcnet sample` as a person runs them: a tiny GPT
trained end to end and sampled from its --save (the same seed, the same text), Ctrl-C that
keeps the last finished iteration, a resumed run equal to the uninterrupted one, bad flags
refused in one line.  Skipped when tiny Shakespeare is not found."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from commands import FUNCNET, call, signal_after, start

from funcnet import checkpoints, gpt, shakespeare
from funcnet.cli import _iterations

# A model small enough to compile and score in seconds; the corpus is the real one.
TINY = ["--task", "shakespeare", "--layers", "1", "--heads", "2", "--width", "16",
        "--context", "16", "--batch", "4", "--no-color"]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus() -> Path:
    found = shakespeare.find() or shakespeare.find(ROOT.parent / "shared" / "tinyshakespeare")
    if found is None:
        pytest.skip("tiny Shakespeare not found: set FUNCNET_SHAKESPEARE")
    return found


@pytest.fixture
def env(corpus, monkeypatch):
    monkeypatch.setenv(shakespeare.ENV_VAR, str(corpus))  # for the in-process runs too
    return {**os.environ, shakespeare.ENV_VAR: str(corpus), "NO_COLOR": "1"}


def run(*args, env, **kw):
    return subprocess.run([*FUNCNET, *args], capture_output=True, text=True, timeout=120,
                          env=env, **kw)  # fmt: skip


def test_train_then_sample_twice_the_same_text(tmp_path, env, capsys):
    save = tmp_path / "gpt.npz"
    out = run("train", *TINY, "--iters", "20", "--eval-every", "10", "--save", str(save), env=env)
    assert out.returncode == 0, out.stderr
    assert re.search(r"(?m)^iter 10/20  train loss \d\.\d{4}  val loss \d\.\d{4}", out.stdout)
    assert re.search(r"(?m)^val loss \d\.\d{4} after 20 iterations$", out.stdout)
    assert "┌" in out.stdout and "• train" in out.stdout and "x validation" in out.stdout
    assert "\x1b[" not in out.stdout
    iterations, meta = checkpoints.run_info(save)
    assert iterations == 20 and meta["saved"] == "params" and meta["vocab"] == 65
    assert (meta["layers"], meta["heads"], meta["width"], meta["context"]) == (1, 2, 16, 16)
    argv = ["sample", "--load", str(save), "--prompt", "ROMEO:", "--tokens", "40", "--seed", "3"]
    texts = [run(*argv, env=env) for _ in range(2)]
    assert [t.returncode for t in texts] == [0, 0], texts[0].stderr
    assert texts[0].stdout == texts[1].stdout and texts[0].stdout.startswith("ROMEO:")
    assert len(texts[0].stdout) == len("ROMEO:") + 40 + 1  # and print's new line
    # A prompt the vocabulary lacks, an empty one and a file that holds no GPT: one line.
    code, _, err = call(capsys, "sample", "--load", str(save), "--prompt", "Ω!")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--prompt: 'Ω' not in the 65 characters" in err
    code, _, err = call(capsys, "sample", "--load", str(save), "--prompt", "")
    assert code == 2 and "--prompt needs at least one character" in err
    other = tmp_path / "other.npz"
    checkpoints.save_params(other, {"W": np.zeros(2)})
    code, _, err = call(capsys, "sample", "--load", str(other))
    assert code == 1 and err.strip().startswith(f"funcnet sample: {other} holds no")
    assert len(err.strip().splitlines()) == 1
    # GPT params of another layout (biases, as GPT-2's) under the same settings: one line.
    old = tmp_path / "old.npz"
    biased = gpt.gpt(65, 1, 2, 16, 16, bias=True, gelu="tanh").init(0, (-1, 16))[1]
    checkpoints.save_run(old, biased, (), iterations, meta)
    code, _, err = call(capsys, "sample", "--load", str(old))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert f"{old} holds a GPT of another layout" in err


def test_ctrl_c_keeps_the_last_finished_iteration(tmp_path, env):
    save, ckpt = tmp_path / "p.npz", tmp_path / "run.npz"
    argv = ["train", *TINY, "--iters", "100000", "--eval-every", "10", "--no-plot",
            "--save", str(save), "--checkpoint", str(ckpt)]  # fmt: skip
    proc = start(argv, env)
    _, _, err = signal_after(proc, "iter")
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    n = int(re.search(r"interrupted after (\d+) iteration", lines[0]).group(1))
    assert n >= 10
    assert f"the params of iteration {n} are saved to {save}" in lines[0]
    assert f"the run checkpoint of iteration {n} is in {ckpt}" in lines[0]
    assert checkpoints.run_info(save)[0] == n == checkpoints.run_info(ckpt)[0]
    assert not list(tmp_path.glob("*.part"))


def test_a_resumed_run_is_the_uninterrupted_one(tmp_path, env, capsys, monkeypatch):
    argv = ["train", *TINY, "--iters", "20", "--eval-every", "10", "--no-plot"]
    whole, part, resumed = (tmp_path / f"{n}.npz" for n in ("whole", "part", "resumed"))
    code, out_whole, err = call(capsys, *argv, "--save", str(whole))
    assert code == 0, err
    report = _iterations._report

    def stop_at_10(args, config):  # Ctrl-C right after the evaluation of iteration 10
        on_eval = report(args, config)

        def wrapped(row, params, opt_state):
            on_eval(row, params, opt_state)
            if row[0] == 10:
                raise KeyboardInterrupt

        return wrapped

    monkeypatch.setattr(_iterations, "_report", stop_at_10)
    code, _, err = call(capsys, *argv, "--checkpoint", str(part))
    assert code == 130 and "interrupted after 10 iteration(s)" in err
    monkeypatch.setattr(_iterations, "_report", report)
    code, out, err = call(capsys, *argv, "--resume", str(part), "--save", str(resumed))
    assert code == 0, err
    assert f"resuming {part} after iteration 10" in out
    last = [ln for ln in out_whole.splitlines() if ln.startswith(("iter 20/20", "val loss"))]
    assert last and all(ln.split("  ")[:3] == _same(out, ln) for ln in last)
    a, b = np.load(whole), np.load(resumed)
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        if k != "meta":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # Another setting than the checkpoint's is refused before any work.
    code, _, err = call(capsys, *argv, "--resume", str(part), "--lr", "0.002")
    assert code == 2 and "it was written with --lr 0.001, this run has 0.002" in err
    code, _, err = call(capsys, *argv, "--resume", str(whole))
    assert code == 2 and "it holds trained params (--save), not a run" in err


def _same(out: str, line: str) -> list[str]:
    """The fields of ``out``'s line that starts as ``line`` does (its time left out)."""
    head = line.split("  ")[0]
    return next(ln for ln in out.splitlines() if ln.startswith(head)).split("  ")[:3]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["train", "--task", "shakespeare", "--iters", "0"], "--iters: must be > 0, got 0"),
        (["train", "--task", "shakespeare", "--eval-every", "-1"], "--eval-every: must be >= 0"),
        (["train", "--task", "shakespeare", "--dropout", "1"], "--dropout: must be in [0, 1)"),
        (["train", "--task", "shakespeare", "--context", "x"], "--context: expected a int"),
        (["train", "--task", "shakespeare", "--epochs", "3"],
         "--epochs is for --task mnist or addition or date: --task shakespeare counts its run "
         "in iterations"),
        (["train", "--task", "shakespeare", "--devices", "2"], "--devices is for --task mnist"),
        (["train", "--task", "shakespeare", "--scan"], "--scan is for --task mnist"),
        (["train", "--iters", "5"], "--iters is for --task shakespeare: --task mnist counts its"),
        (["train", "--task", "shakespeare", "--width", "30", "--heads", "4"],
         "--width 30 does not split into --heads 4"),
        (["train", "--task", "shakespeare", "--model", "mlp"],
         "--model mlp is not offered for --task shakespeare: use one of gpt"),
        (["train", "--task", "shakespeare", "--optimizer", "sgd"], "use one of adamw"),
        (["sample", "--tokens", "0", "--load", "x.npz"], "--tokens: must be > 0, got 0"),
        (["sample", "--temperature", "-1", "--load", "x.npz"], "--temperature: must be > 0"),
        (["sample", "--load", "/nonexistent.npz"], "/nonexistent.npz does not exist"),
        (["sample"], "the following arguments are required: --load"),
    ],
)  # fmt: skip
def test_bad_flags_are_one_line_and_exit_2_before_any_work(capsys, tmp_path, argv, says):
    extra = ["--data-dir", str(tmp_path / "none")] if argv[0] == "train" else []
    code, out, err = call(capsys, *argv, *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], err
    assert out == ""


def test_the_backend_is_jax_unless_asked_for():
    import argparse

    from funcnet.cli import _settings
    from funcnet.cli import train as train_command

    parser = argparse.ArgumentParser()
    train_command.add_parser(parser.add_subparsers())

    def backend(*argv):
        return _settings.check(_settings.resolved(parser.parse_args(["train", *argv]))).backend

    assert backend("--task", "shakespeare") == "jax" and backend() == "numpy"
    assert backend("--task", "shakespeare", "--backend", "numpy") == "numpy"


def test_a_corpus_that_does_not_load_is_one_line(capsys, tmp_path):
    (tmp_path / "input.txt").write_text("not the play")
    code, out, err = call(capsys, "train", "--task", "shakespeare", "--data-dir", str(tmp_path))
    assert code == 2 and out == ""
    assert re.fullmatch(r"funcnet train: shakespeare: \S+ has md5 \w+, not \w+\n", err), err
    code, out, err = call(
        capsys, "train", "--task", "shakespeare", "--data-dir", str(tmp_path / "none")
    )
    assert code == 2 and err == f"funcnet train: shakespeare: {tmp_path / 'none'} does not exist\n"
