"""Every failure is one true line: what is wrong, what was expected and what came, with a
non-zero exit from the command (2: a bad flag found before any work; 1: a failure during
work).  The cases: non-finite or huge training inputs, NaN params, a diverging descent,
accuracy on targets it cannot score, a batch or a run too large, bad ``fit`` counts, a bad
``$FUNCNET_DATA``, and ``funcnet eval`` with the test files only."""

import os
import subprocess

import numpy as np
import pytest
from commands import FUNCNET, call
from nets import blobs, mlp

import funcnet as fn
from funcnet import checkpoints, models, optim, train
from funcnet._checks import NonFiniteError
from funcnet.cli import _setup
from funcnet.data import MNISTError, load_mnist_test

# --- a. what a non-finite loss is blamed on -------------------------------------------------


@pytest.mark.parametrize(
    ("where", "value", "shown"),
    [("x", np.nan, "nan"), ("x", np.inf, "inf"), ("t", -np.inf, "-inf")],
)
def test_non_finite_inputs_are_named_with_their_first_index_before_any_step(where, value, shown):
    net, params = mlp()
    x, t = blobs(90)
    t = np.eye(3, dtype=np.float32)[t]  # float targets: checked too
    bad = {"x": x.copy(), "t": t.copy()}
    bad[where][40, 2] = value
    bad[where][70, 1] = value
    with pytest.raises(NonFiniteError) as e:
        train.fit(net, params, (bad["x"], bad["t"]), epochs=1, batch_size=30, progress=False)
    message = str(e.value)
    assert f"{where}[40, 2] is {shown} (2 non-finite value(s))" in message, message
    assert "learning rate" not in message
    with pytest.raises(NonFiniteError, match=r"fit: test inputs: x\[0, 0\] is nan"):
        test_x = x.copy()
        test_x[0, 0] = np.nan
        train.fit(net, params, (x, t), (test_x, t), epochs=1, batch_size=30, progress=False)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_huge_finite_inputs_are_blamed_not_the_learning_rate(backend):
    net, params = mlp()
    x, t = blobs(90)
    x[7, 3] = 1e30  # finite, but a step's update grows with |x|² past float32
    with pytest.raises(NonFiniteError) as e:
        train.fit(
            net, train.to_backend(params, backend), (x, t), epochs=3, batch_size=30,
            progress=False,
        )  # fmt: skip
    message = str(e.value)
    assert "the training inputs reach |x| = 1e+30 (at x[7, 3])" in message, message
    assert "learning rate" not in message


def test_a_loss_not_finite_before_any_update_is_not_the_learning_rate():
    net, params = mlp()
    x, t = blobs(90)
    x[:] = 1e38
    params[0]["W"] *= 1e3  # the first forward already overflows float32
    with pytest.raises(NonFiniteError) as e:
        train.fit(net, params, (x, t), epochs=1, batch_size=30, optimizer=optim.sgd(1e-9),
                  progress=False)  # fmt: skip
    assert "step 1 of epoch 1" in str(e.value)
    assert "before any update, so not the learning rate" in str(e.value)
    assert "|x| = 1e+38" in str(e.value)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_a_finite_run_that_diverges_is_blamed_on_the_learning_rate(backend):
    net, params = mlp()
    x, t = blobs(90)
    with pytest.raises(FloatingPointError, match=r"learning rate is probably too large"):
        train.fit(
            net, train.to_backend(params, backend), (x, t), epochs=3, batch_size=30,
            optimizer=optim.sgd(1e30), progress=False,
        )  # fmt: skip


def test_fit_refuses_non_finite_params_naming_the_leaf():
    net, params = mlp()
    params[2]["W"][4, 1] = np.nan
    x, t = blobs(90)
    with pytest.raises(NonFiniteError, match=r"fit: params\[2\]\['W'\]\[4, 1\] is nan"):
        train.fit(net, params, (x, t), epochs=1, batch_size=30, progress=False)


# --- b, i. funcnet eval: NaN params refused; the test files are all it reads ---------------


@pytest.fixture
def test_split_only(tmp_path, mnist_dir):
    """A folder with MNIST's two test files only."""
    d = tmp_path / "t10k"
    d.mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        src = next(p for p in (mnist_dir / f"{name}.gz", mnist_dir / name) if p.is_file())
        os.symlink(src, d / src.name)
    return d


def test_eval_refuses_nan_params_naming_the_array(capsys, tmp_path, test_split_only):
    net, _ = models.by_name("mlp")
    _, params = net.init(0, (-1, 784))
    params[2]["W"][3, 7] = np.nan
    path = tmp_path / "nan.npz"
    checkpoints.save_params(path, params)
    code, out, err = call(capsys, "eval", "--load", str(path), "--data-dir", str(test_split_only))
    assert code == 1 and out == "", (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "params[2]['W'][3, 7] is nan" in lines[0], err


def test_eval_needs_only_the_test_files(capsys, tmp_path, test_split_only, monkeypatch):
    monkeypatch.delenv("FUNCNET_DATA", raising=False)
    net, _ = models.by_name("mlp")
    _, params = net.init(0, (-1, 784))
    path = tmp_path / "fresh.npz"
    checkpoints.save_params(path, params)
    code, out, err = call(
        capsys, "eval", "--load", str(path), "--data-dir", str(test_split_only), "--no-plot"
    )
    assert code == 0, err
    assert "on all 10000 test images" in out
    x, t = load_mnist_test(test_split_only, download=False, flatten=False)
    assert x.shape == (10000, 1, 28, 28) and t.shape == (10000,)


# --- c. a diverging descent in funcnet demo ---------------------------------------------------


def test_demo_with_a_rate_that_diverges_says_so_in_one_line():
    run = subprocess.run(
        [*FUNCNET, "demo", "--lr", "1.5", "--steps", "2000", "--no-plot"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "RuntimeWarning" not in run.stderr and "nan" not in run.stdout
    assert "x is not finite after step 39" in lines[0] and "lr 1.5" in lines[0], lines[0]
    assert "1 − 2·lr = -2" in lines[0]


def test_gradient_descent_names_the_step_where_it_left_the_finite_numbers():
    with pytest.raises(FloatingPointError, match=r"f\(x\) is not finite after step \d+ .*lr 10"):
        fn.gradient_descent(lambda x: np.sum(x**2), np.array([1.0]), lr=10.0, steps=1000,
                            grad=lambda x: 2 * x)  # fmt: skip


# --- d. accuracy on targets it can score ------------------------------------------------------


def test_a_regression_is_not_scored_by_accuracy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 10))
    y = x @ rng.standard_normal((10, 1)) + 3
    net = fn.pipeline(fn.MatMul(1), fn.Bias())
    _, params = net.init(0, (-1, 10), dtype=np.float64)
    # One output: its argmax is always 0, as is the targets', so every example "was right".
    with pytest.raises(ValueError, match=r"fit: metric 'accuracy' .*1 output per example"):
        train.fit(net, params, (x, y), loss=fn.mean_squared_error, epochs=1, batch_size=10)
    _, _, hist = train.fit(net, params, (x, y), loss=fn.mean_squared_error, epochs=2,
                           batch_size=10, metrics={}, progress=False)  # fmt: skip
    assert hist.epoch_loss[1] < hist.epoch_loss[0]
    with pytest.raises(ValueError, match=r"accuracy: .*1 output per example"):
        train.accuracy(net, params, x, y)
    three = fn.pipeline(fn.MatMul(3))
    _, weights = three.init(0, (-1, 10), dtype=np.float64)
    with pytest.raises(ValueError, match=r"not one-hot rows"):
        train.accuracy(three, weights, x, np.ones((100, 3)))


def test_mean_squared_error_on_one_hot_targets_scores_the_classes():
    net, params = mlp()
    x, t = blobs(90)
    onehot = np.eye(3, dtype=np.float32)[t]
    last, _, hist = train.fit(net, params, (x, onehot), loss=fn.mean_squared_error, epochs=2,
                              batch_size=30, progress=False)  # fmt: skip
    assert hist.train_acc[-1] == train.accuracy(net, last, x, t) < 1.0


# --- e, f. a batch or a run too large: refused before any work -------------------------------


def test_a_batch_larger_than_mnist_is_refused_before_any_work(capsys, tmp_path):
    code, out, err = call(
        capsys, "train", "--batch", "100000", "--data-dir", str(tmp_path / "none"), "--no-plot"
    )
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--batch 100000 is larger than the 60000 training images" in err


def test_a_run_that_needs_more_memory_than_there_is_is_refused(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(_setup, "available_memory", lambda: 2 * 2**30)
    code, out, err = call(
        capsys, "train", "--model", "deep", "--batch", "20000", "--data-dir",
        str(tmp_path / "none"), "--no-plot",
    )  # fmt: skip
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "more than the 2 GiB of memory available" in lines[0], err
    assert "activations of 20000 examples" in lines[0] and "--batch" in lines[0]


def test_params_that_cannot_be_allocated_are_one_line(capsys, monkeypatch, tmp_path):
    def init(rng, in_shape, dtype=np.float32):
        raise MemoryError("Unable to allocate 29.2 GiB for an array with shape (784, 10000000)")

    huge = fn.Layer("huge", init, None, None)
    entry = models.MODELS["mlp"]._replace(build=lambda **_: huge)
    monkeypatch.setitem(models.MODELS, "mlp", entry)
    code, _, err = call(capsys, "train", "--data-dir", str(tmp_path / "none"), "--no-plot")
    assert code == 2
    assert err.count("\n") == 1 and "Unable to allocate 29.2 GiB" in err, err


def test_the_estimate_is_of_the_right_order():
    net = models.MODELS["deep"].build()
    _, params = net.init(0, (-1, 1, 28, 28))
    parts = _setup.memory_needed(net, params, (1, 28, 28), 100, optim.adam(1e-3))
    assert parts["optimizer state"] == parts["params and gradients"]  # Adam: 2 per weight
    assert 10 * 2**20 < parts["activations of 100 examples"] < 200 * 2**20


# --- g. fit's counts --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.array([]), np.array(30), 30.0, True, "30", None])
@pytest.mark.parametrize("name", ["batch_size", "epochs"])
def test_fit_counts_of_the_wrong_type_name_the_argument(name, value):
    net, params = mlp()
    x, t = blobs(90)
    with pytest.raises(TypeError, match=rf"fit: {name} must be an int, got {type(value).__name__}"):
        train.fit(net, params, (x, t), **{"epochs": 1, "batch_size": 30, name: value})
    with pytest.raises(ValueError, match=rf"fit: {name} must be >= 1, got 0"):
        train.fit(net, params, (x, t), **{"epochs": 1, "batch_size": 30, name: 0})
    train.fit(net, params, (x, t), **{"epochs": 1, "batch_size": 30, name: np.int64(1)},
              progress=False)  # fmt: skip


# --- h. a bad $FUNCNET_DATA -------------------------------------------------------------------


def _bad_folders(tmp_path, missing_file: str):
    """A folder that does not exist, one without the file, a file: (path, what is said)."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("")
    return [
        (tmp_path / "missing", "does not exist"),
        (tmp_path / "empty", f"has no {missing_file}"),
        (tmp_path / "a-file", "is a file, not a folder"),
    ]


def test_a_bad_funcnet_data_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for target, what in _bad_folders(tmp_path, "t10k-images-idx3-ubyte[.gz]"):
        monkeypatch.setenv("FUNCNET_DATA", str(target))
        with pytest.raises(MNISTError) as e:
            load_mnist_test(download=False)
        assert str(e.value).startswith(f"$FUNCNET_DATA is set to {target}, which {what}")


def test_a_bad_seq2seq_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    from funcnet import text

    for target, what in _bad_folders(tmp_path, "addition.txt"):
        monkeypatch.setenv(text.ENV, str(target))
        with pytest.raises(FileNotFoundError) as e:
            text.find_file("addition")
        assert str(e.value) == f"load_seq2seq: ${text.ENV} is set to {target}, which {what}"


def test_a_memory_error_in_a_step_names_the_epoch_and_the_batch():
    net, params = mlp()
    x, t = blobs(90)

    def forward(p, xb, *, train=False, rng=None):
        if train:
            raise MemoryError("Unable to allocate 12.0 GiB for an array")
        return net.forward(p, xb)

    with pytest.raises(MemoryError, match=r"fit: out of memory in epoch 1 with batch_size 30 "):
        train.fit(net._replace(forward=forward), params, (x, t), epochs=1, batch_size=30)


def test_a_bad_shakespeare_place_is_an_error_naming_it(tmp_path, monkeypatch):
    from funcnet import shakespeare

    for target, what in _bad_folders(tmp_path, "input.txt"):
        what = {"has no input.txt": "holds no input.txt", "is a file, not a folder": ""}.get(
            what, what
        )
        monkeypatch.setenv(shakespeare.ENV_VAR, str(target))
        if not what:  # a file is taken as the corpus itself
            assert shakespeare.find() == target
            continue
        with pytest.raises(FileNotFoundError) as e:
            shakespeare.find()
        assert (
            str(e.value) == f"shakespeare: ${shakespeare.ENV_VAR} is set to {target}, which {what}"
        )


def test_sample_refuses_nan_params_naming_the_array(capsys, tmp_path):
    from funcnet import checkpoints, gpt

    net = gpt.gpt(5, layers=1, heads=1, width=4, context=4)
    params = net.init(0, (-1, 4))[1]
    params["wte"] = params["wte"].copy()
    params["wte"][2, 1] = np.nan
    meta = {"saved": "params", "chars": "abcde", "context": 4, "model": "gpt", "vocab": 5,
            "layers": 1, "heads": 1, "width": 4}  # fmt: skip
    path = tmp_path / "g.npz"
    checkpoints.save_run(path, params, (), 1, meta)
    code, _, err = call(capsys, "sample", "--load", str(path), "--prompt", "ab", "--tokens", "3")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"{path}: params['wte'][2, 1] is nan" in err
