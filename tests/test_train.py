"""Training: the pure step on NumPy and under jit, convergence, fit, checkpoints, the CLI."""

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nets import blobs, mlp

import funcnet as fn
from funcnet import checkpoints, cli, models, optim, train
from funcnet.augment import random_shift
from funcnet.data import load_mnist


def test_step_on_numpy_and_jitted_jax_agree_and_stay_float32():
    net, params = mlp()
    x, t = blobs()
    opt = optim.sgd(0.1)
    step = train.make_step(net, fn.softmax_cross_entropy, opt)
    jstep = jax.jit(step)
    p_np, s_np = params, opt.init(params)
    p_j = train.to_backend(params, "jax")
    s_j = opt.init(p_j)
    for i in range(0, 300, 50):
        xb, tb = x[i : i + 50], t[i : i + 50]
        p_np, s_np, loss_np = step(p_np, s_np, xb, tb)
        p_j, s_j, loss_j = jstep(p_j, s_j, jnp.asarray(xb), jnp.asarray(tb))
        np.testing.assert_allclose(loss_j, loss_np, rtol=1e-5)
    assert all(isinstance(a, np.ndarray) for a in jax.tree_util.tree_leaves(p_np))
    assert all(a.dtype == np.float32 for a in jax.tree_util.tree_leaves((p_np, p_j)))
    assert np.asarray(loss_np).dtype == np.float32
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p_j, p_np
    )


def test_step_gradient_is_jax_grad_of_the_loss():
    net, params = mlp()
    x, t = blobs(50)
    p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    x64 = jnp.asarray(x, jnp.float64)
    # Both jitted, as fit runs the step: one compiled program each, not one per operation.
    step = jax.jit(train.make_step(net, fn.softmax_cross_entropy, optim.sgd(1.0)))
    new, _, _ = step(p64, optim.sgd(1.0).init(p64), x64, t)

    def loss(p):
        return fn.softmax_cross_entropy.forward(net.forward(p, x64)[0], t)[0]

    ref = jax.jit(jax.grad(loss))(p64)
    jax.tree_util.tree_map(
        lambda n, p, g: np.testing.assert_allclose(p - n, g, rtol=1e-10, atol=1e-14),
        new,
        p64,
        ref,
    )


@pytest.mark.parametrize(
    "opt",
    [optim.sgd(0.1), optim.adam(0.01), optim.with_average(optim.momentum(0.05), 0.9)],
    ids=["sgd", "adam", "averaged-momentum"],
)
@pytest.mark.parametrize("stateful", [False, True], ids=["plain", "batchnorm"])
def test_the_numpy_step_writes_into_nothing_it_was_given(opt, stateful):
    """Every input is read-only here, so an in-place write would raise; the results are
    the same bits as the step on writable copies, and the running state moved."""
    layers = [fn.Dense(6), fn.BatchNorm(), fn.Relu()] if stateful else [fn.Dense(6), fn.Relu()]
    net = fn.pipeline(*layers, fn.Dense(3))
    _, params = net.init(0, (-1, 8))
    x, t = blobs(40)
    state = opt.init(fn.trainable(params))
    step = train.make_step(net, fn.softmax_cross_entropy, opt)
    runs = {"read-only": (params, state), "copies": (params, state)}
    for i in range(3):
        for name, run in runs.items():
            inputs = (*run, x[i * 10 : i * 10 + 10], t[i * 10 : i * 10 + 10])
            inputs = jax.tree_util.tree_map(np.copy, inputs)
            for leaf in jax.tree_util.tree_leaves(inputs) if name == "read-only" else []:
                if isinstance(leaf, np.ndarray):
                    leaf.setflags(write=False)  # an in-place write would raise
            p, s, _ = step(*inputs)
            runs[name] = (p, s)
    jax.tree_util.tree_map(np.testing.assert_array_equal, runs["read-only"], runs["copies"])
    if stateful:  # the running state moved, and is where it belongs
        moved = runs["read-only"][0][1]["state"]["mean"]
        assert not np.array_equal(moved, params[1]["state"]["mean"])


def test_the_step_is_right_whatever_arrays_the_backward_hands_back():
    """A backward that hands back its parameter, the batch, or one array for two parameters
    gets the plain update θ - η·g all the same, and nothing the caller holds changes."""
    x, t = blobs(10)

    def odd(kind):  # y = x + b on 8 features, with a backward of the given odd kind
        def init(rng, in_shape, dtype=np.float32):
            return tuple(in_shape), {"a": np.zeros(8, dtype), "b": np.ones(8, dtype)}

        def forward(params, x, *, train=False, rng=None):
            return x + params["b"], (x, params["b"])

        def backward(cache, dout, *, need_dx=True):
            x, b = cache
            db = dout.sum(axis=0)
            da = {"param": b, "batch": x[0], "shared": db, "own": db.copy()}[kind]
            return {"a": da, "b": db}, dout

        return fn.Layer(f"odd-{kind}", init, forward, backward)

    for kind in ("param", "batch", "shared", "own"):
        net = fn.pipeline(odd(kind), fn.Dense(3))  # first: it sees the caller's batch
        params = net.init(0, (-1, 8))[1]
        xs = x[:, :8].copy()
        for leaf in jax.tree_util.tree_leaves((params, xs)):
            leaf.setflags(write=False)  # an in-place write would raise
        opt = optim.sgd(0.1)
        step = train.make_step(net, fn.softmax_cross_entropy, opt)
        p, s = params, opt.init(params)
        for _ in range(2):
            out, cache = net.forward(p, xs, train=True)
            _, lcache = fn.softmax_cross_entropy.forward(out, t)
            grads, _ = net.backward(cache, fn.softmax_cross_entropy.backward(lcache))
            expected = jax.tree_util.tree_map(lambda a, g: a - np.float32(0.1) * g, p, grads)
            p, s, _ = step(p, s, xs, t)
            jax.tree_util.tree_map(np.testing.assert_array_equal, p, expected)


def test_the_books_randn_would_upcast_but_initializers_do_not():
    rng = np.random.default_rng(0)
    assert (0.01 * rng.standard_normal((3, 3))).dtype == np.float64  # the book's idiom
    _, params = models.two_layer_net(5, 0.01).init(0, (-1, 4))
    assert all(a.dtype == np.float32 for a in jax.tree_util.tree_leaves(params))
    W = params[0]["W"]
    assert 0.005 < float(W.std()) < 0.02


@pytest.mark.parametrize(("backend", "scan"), [("numpy", False), ("jax", False), ("jax", True)])
def test_fit_converges_on_separable_data(backend, scan):
    net, params = mlp(seed=1)
    x, t = blobs(900, seed=1)
    seen = []
    params, _, hist = train.fit(
        net, train.to_backend(params, backend), (x[:600], t[:600]), (x[600:], t[600:]),
        optimizer=optim.sgd(0.1), epochs=8, batch_size=30, seed=0, scan=scan,
        progress=False, on_epoch=lambda e, h: seen.append(e),
    )  # fmt: skip
    assert seen == list(range(1, 9))
    assert len(hist.step_loss) == 8 * 20 and len(hist.test_acc) == 8
    assert hist.test_acc[-1] > 0.97 and hist.epoch_loss[-1] < 0.5 * hist.epoch_loss[0]
    assert all(isinstance(v, float) for v in hist.step_loss)


def test_fit_is_reproducible_from_the_seed_and_numpy_matches_jax():
    x, t = blobs(300, seed=2)
    runs = []
    for backend in ("numpy", "numpy", "jax"):
        net, params = mlp(seed=3)
        params = train.to_backend(params, backend)
        p, _, h = train.fit(net, params, (x, t), epochs=2, batch_size=50, seed=5)
        runs.append((p, h))
    jax.tree_util.tree_map(np.testing.assert_array_equal, runs[0][0], runs[1][0])
    assert runs[0][1].step_loss == runs[1][1].step_loss
    np.testing.assert_allclose(runs[2][1].step_loss, runs[0][1].step_loss, rtol=1e-4)


@pytest.mark.parametrize(("backend", "scan"), [("numpy", False), ("jax", True)])
def test_fit_scores_the_averaged_params_and_returns_the_last_iterate(backend, scan):
    net, params = mlp(seed=4)
    x, t = blobs(900, seed=4)
    train_set, test_set = (x[:600], t[:600]), (x[600:], t[600:])
    params = train.to_backend(params, backend)
    kw = dict(epochs=2, batch_size=20, seed=0, scan=scan, progress=False)
    plain_p, _, plain = train.fit(net, params, train_set, test_set, optimizer=optim.sgd(0.02), **kw)
    last, state, hist = train.fit(
        net, params, train_set, test_set, optimizer=optim.with_average(optim.sgd(0.02), 0.99),
        **kw,
    )  # fmt: skip
    jax.tree_util.tree_map(np.testing.assert_array_equal, last, plain_p)  # the same path
    assert hist.step_loss == plain.step_loss
    avg = optim.averaged(state)
    scores = [train.accuracy(net, p, *test_set) for p in (avg, last)]
    assert hist.test_acc[-1] == scores[0] != scores[1] == plain.test_acc[-1]
    assert hist.train_acc[-1] == train.accuracy(net, avg, *train_set)


def test_fit_visits_every_sample_once_per_epoch_in_a_new_order(monkeypatch):
    net, params = mlp()
    x, t = blobs(120)
    x = x.copy()
    x[:, 0] = np.arange(120)  # the first feature names the sample
    seen = []
    real = train.make_step

    def recording(*args, **kwargs):
        step = real(*args, **kwargs)

        def wrapped(params, opt_state, xb, tb, rng=None):
            seen.append(np.asarray(xb[:, 0]).astype(int))
            return step(params, opt_state, xb, tb, rng)

        return wrapped

    monkeypatch.setattr(train.loop, "make_step", recording)
    train.fit(net, params, (x, t), epochs=3, batch_size=40, seed=0, progress=False)
    epochs = [np.concatenate(seen[i : i + 3]) for i in (0, 3, 6)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(120))  # each sample once
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])


def test_fit_scores_the_train_accuracy_on_the_first_samples_when_asked():
    net, params = mlp()
    x, t = blobs(90)
    last, _, hist = train.fit(
        net, params, (x, t), epochs=2, batch_size=30, train_acc_samples=7, progress=False
    )
    assert hist.train_acc[-1] == train.accuracy(net, last, x[:7], t[:7])
    assert hist.train_acc[-1] != train.accuracy(net, last, x, t)  # not all 90 scored


def test_fit_rejects_bad_arguments():
    net, params = mlp()
    x, t = blobs(100)
    with pytest.raises(ValueError, match="100 training inputs but 99 targets"):
        train.fit(net, params, (x, t[:99]))
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 100\], got 500"):
        train.fit(net, params, (x, t), batch_size=500)
    with pytest.raises(ValueError, match=r"scan=True .* needs JAX params"):
        train.fit(net, params, (x, t), scan=True)
    for bad in (0, 101, 2.5, True):
        with pytest.raises(ValueError, match=r"train_acc_samples must be None or an int in"):
            train.fit(net, params, (x, t), train_acc_samples=bad)
    with pytest.raises(ValueError, match="backend must be 'numpy' or 'jax'"):
        train.to_backend(params, "torch")


def test_cli_train_on_synthetic_digits(monkeypatch, capsys, tmp_path):
    rng = np.random.default_rng(0)
    t = rng.integers(0, 10, 1200)
    protos = (rng.random((10, 784)) < 0.2).astype(np.float32)  # sparse strokes, like digits
    x = np.clip(protos[t] + 0.2 * rng.standard_normal((1200, 784)).astype(np.float32), 0, 1)
    monkeypatch.setattr(
        "funcnet.data.load_mnist",
        lambda data_dir=None, **kw: ((x[:1000], t[:1000]), (x[1000:], t[1000:])),
    )
    save = tmp_path / "p.npz"
    assert (
        cli.main(["train", "--epochs", "8", "--lr", "0.3", "--hidden", "20", "--save", str(save)])
        == 0
    )
    out = capsys.readouterr().out
    assert "epoch   8/8" in out and "test accuracy" in out and "training loss" in out
    assert "accuracy" in out and save.is_file()
    acc = float(out.split("test accuracy ")[1].split("%")[0])
    assert acc > 90
    wrong = round((100 - acc) / 100 * 200)  # 200 test digits
    if wrong:
        assert f"{wrong} test digits misclassified; the first {min(wrong, 12)}" in out
    else:
        assert "all 200 test digits classified right" in out


def test_cli_train_deep_convnet_with_augmentation_and_a_cosine_schedule(monkeypatch, capsys):
    rng = np.random.default_rng(0)
    x = rng.random((140, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, 140)
    monkeypatch.setattr(
        "funcnet.data.load_mnist",
        lambda data_dir=None, **kw: ((x[:100], t[:100]), (x[100:], t[100:])),
    )
    argv = ["train", "--model", "deep", "--epochs", "1", "--batch", "50", "--augment", "2",
            "--lr-schedule", "cosine", "--no-color"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("deep_convnet\n100 training / 40 test images, batch 50, adam lr 0.001")
    assert "(cosine decay to 0)" in out and "images shifted by up to 2 pixels" in out
    assert "the 16 first-layer filters before training" in out and "epoch   1/1" in out
    assert "misclassified" in out or "classified right" in out


def test_cli_profile_times_every_layer_on_both_backends(capsys):
    assert cli.main(["profile", "--model", "mlp", "--hidden", "8", "--repeats", "1",
                     "--batch", "4", "--no-color"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "NumPy:" in out and "JAX, each layer's programs on their own:" in out
    for layer in (" 0 Dense(8)", " 1 Relu", " 2 Dense(10)"):
        assert out.count(layer) == 2, layer
    assert out.count("slowest: ") == 2 and out.count("• forward   x backward") == 2


def test_cli_train_reports_missing_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FUNCNET_DATA", raising=False)
    monkeypatch.setattr("funcnet.data.MIRRORS", ("http://127.0.0.1:9/",))
    assert cli.main(["train", "--data-dir", str(tmp_path / "none")]) == 2
    assert "train-images" in capsys.readouterr().err


def test_real_mnist_subset_learns(mnist_dir):
    (x, t), (xt, tt) = load_mnist(mnist_dir, download=False)
    net = models.two_layer_net(100, 0.01)
    _, params = net.init(0, (-1, 784))
    params, _, hist = train.fit(
        net, train.to_backend(params, "jax"), (x[:10000], t[:10000]), (xt[:2000], tt[:2000]),
        epochs=5,
    )  # fmt: skip
    assert hist.test_acc[-1] > 0.85, hist.test_acc


@pytest.mark.slow
def test_seed_settings_full_mnist(mnist_dir):
    """The seed's run: 784-100-10, N(0, 0.01²), batch 100, lr 0.1, 20 epochs, full test set."""
    (x, t), (xt, tt) = load_mnist(mnist_dir, download=False)
    net = models.two_layer_net(100, 0.01)
    _, params = net.init(0, (-1, 784))
    _, _, hist = train.fit(net, params, (x, t), (xt, tt), epochs=20)
    # Measured: 97.51 % (seed 0) on all 10,000 test images, 97.51-97.65 % over seeds 0-4.
    assert hist.test_acc[-1] >= 0.975, hist.test_acc


@pytest.mark.parametrize(("backend", "scan"), [("numpy", False), ("jax", False), ("jax", True)])
def test_fit_feeds_dropout_fresh_randomness_and_updates_batchnorm(backend, scan):
    net = fn.pipeline(
        fn.Dense(32, W_init="he"), fn.BatchNorm(), fn.Relu(), fn.Dropout(0.3), fn.Dense(3)
    )
    _, params = net.init(0, (-1, 8))
    params = train.to_backend(params, backend)
    x, t = blobs(600, seed=4)
    decayed = optim.chain(optim.add_decayed_weights(1e-4, optim.key_mask("W")), optim.sgd(0.1))
    params, _, hist = train.fit(
        net, params, (x[:450], t[:450]), (x[450:], t[450:]), epochs=3, batch_size=50,
        optimizer=decayed, scan=scan, progress=False,
    )  # fmt: skip
    assert hist.test_acc[-1] > 0.95
    # running statistics were threaded through
    assert np.asarray(params[1]["state"]["mean"]).any()
    # With lr 0 and the whole set as one batch, every step sees the same function of the
    # same data: only fresh dropout masks can make the losses differ.
    _, _, frozen = train.fit(
        net, params, (x, t), epochs=4, batch_size=600, optimizer=optim.sgd(0.0),
        scan=scan, progress=False,
    )  # fmt: skip
    assert np.ptp(frozen.step_loss) > 1e-3, frozen.step_loss
    without = fn.pipeline(fn.Dense(32), fn.Relu(), fn.Dense(3))
    _, p0 = without.init(0, (-1, 8))
    _, _, still = train.fit(
        without, train.to_backend(p0, backend), (x, t), epochs=4, batch_size=600,
        optimizer=optim.sgd(0.0), scan=scan, progress=False,
    )  # fmt: skip
    assert np.ptp(still.step_loss) < 1e-5, still.step_loss


def test_cli_train_convnet_on_synthetic_digits(monkeypatch, capsys):
    rng = np.random.default_rng(1)
    t = rng.integers(0, 10, 700)
    protos = (rng.random((10, 1, 28, 28)) < 0.2).astype(np.float32)
    x = np.clip(protos[t] + 0.2 * rng.standard_normal((700, 1, 28, 28)).astype(np.float32), 0, 1)
    seen = {}

    def fake_load(data_dir=None, **kw):
        seen.update(kw)
        return (x[:600], t[:600]), (x[600:], t[600:])

    monkeypatch.setattr("funcnet.data.load_mnist", fake_load)
    assert cli.main(["train", "--model", "convnet", "--epochs", "3", "--backend", "jax"]) == 0
    out = capsys.readouterr().out
    assert seen == {"flatten": False}
    assert "Conv(30, 5)" in out and "adam lr 0.001" in out
    assert "filters before training" in out and "filters after training" in out
    assert "moving average of the params (decay 0.999)" in out
    assert "(averaged params; the last iterate itself: " in out
    assert float(out.split("test accuracy ")[1].split("%")[0]) > 80  # chance is 10 %


def test_cli_train_average_flag(monkeypatch, capsys, tmp_path):
    x, t = blobs(700, classes=10, dim=784, seed=3)
    split = ((x[:600], t[:600]), (x[600:], t[600:]))
    monkeypatch.setattr("funcnet.data.load_mnist", lambda data_dir=None, **kw: split)
    base = ["train", "--epochs", "2", "--no-plot", "--backend", "jax", "--hidden", "8"]
    assert cli.main([*base, "--average", "0.9", "--save", str(tmp_path / "a.npz")]) == 0
    out = capsys.readouterr().out
    assert "moving average of the params (decay 0.9)" in out
    scored = float(out.split("test accuracy ")[1].split("%")[0])
    plain = float(out.split("the last iterate itself: ")[1].split("%")[0])
    # What was saved is what was scored: the average, not the last iterate.
    net = models.two_layer_net(8)
    saved = checkpoints.load_params(tmp_path / "a.npz", net.init(0, (-1, 784))[1])
    assert round(100 * train.accuracy(net, saved, x[600:], t[600:]), 2) == scored != plain
    assert cli.main(base) == 0  # the mlp default: no averaging
    out = capsys.readouterr().out
    assert "moving average" not in out and "last iterate" not in out
    for bad in ("1", "-0.5", "x"):
        with pytest.raises(SystemExit):
            cli.main([*base, "--average", bad])
        assert "--average" in capsys.readouterr().err


def test_simple_convnet_shapes_and_gradients():
    net = models.simple_convnet()
    out_shape, params = net.init(0, (-1, 1, 28, 28))
    assert out_shape == (-1, 10)
    assert params[0]["W"].shape == (30, 1, 5, 5) and params[4]["W"].shape == (4320, 100)
    small = fn.pipeline(*[fn.Conv(3, 5), fn.Relu(), fn.MaxPool(2), fn.Flatten(), fn.Dense(4)])
    _, p = small.init(0, (-1, 1, 10, 10), dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, 1, 10, 10))
    fn.check_layer(small, p, x)


@pytest.mark.slow
def test_simple_convnet_full_mnist(mnist_dir):
    """The book's SimpleConvNet: Adam 0.001, batch 100, 20 epochs, full test set (JAX),
    scored like ``funcnet train --model convnet``: the moving average of the params."""
    (x, t), (xt, tt) = load_mnist(mnist_dir, download=False, flatten=False)
    net = models.simple_convnet()
    _, params = net.init(0, (-1, 1, 28, 28))
    last, _, hist = train.fit(
        net, train.to_backend(params, "jax"), (x, t), (xt, tt),
        optimizer=optim.with_average(optim.adam(0.001), 0.999), epochs=20, scan=True,
    )  # fmt: skip
    # Measured on 2 CPU cores, seed 0: the average 99.04 %, the last iterate 98.64 %.
    assert hist.test_acc[-1] >= 0.989, hist.test_acc
    assert train.accuracy(net, last, xt, tt) >= 0.985


@pytest.mark.slow
@pytest.mark.parametrize(
    "seed", [int(v) for v in os.environ.get("FUNCNET_DEEP_SEEDS", "0").split(",")]
)
def test_deep_convnet_full_mnist(mnist_dir, seed):
    """The book's chapter-8 run: deep_convnet, He init, Adam 0.001, batch 100, 20 epochs,
    NumPy, scored on all 10,000 test images after every epoch and, as the book's trainer
    does, on 1,000 training images (``FUNCNET_DEEP_SEEDS=0,1,2`` runs several seeds; each
    takes most of an hour on 2 CPU cores).  ``FUNCNET_DEEP_AUGMENT=2`` trains on images
    shifted by up to 2 pixels (``augment.random_shift``) and ``FUNCNET_DEEP_SCHEDULE=cosine``
    decays the rate to 0 over the 12,000 steps (``optim.cosine_decay``), as
    ``funcnet train --augment 2 --lr-schedule cosine`` does, to measure what each adds.
    ``FUNCNET_DEEP_SAVE=DIR`` writes each seed's final params to DIR, named by its settings,
    for ``funcnet eval --model deep --load ...`` (an ensemble of runs)."""
    (x, t), (xt, tt) = load_mnist(mnist_dir, download=False, flatten=False)
    net = models.deep_convnet()
    _, params = net.init(seed, (-1, 1, 28, 28))
    shift = int(os.environ.get("FUNCNET_DEEP_AUGMENT", "0"))
    schedule = os.environ.get("FUNCNET_DEEP_SCHEDULE", "constant")
    assert schedule in ("constant", "cosine"), f"FUNCNET_DEEP_SCHEDULE={schedule!r}"
    epochs, batch = 20, 100
    steps = epochs * (len(x) // batch)  # as fit draws them: whole batches per epoch
    rate = optim.cosine_decay(0.001, steps) if schedule == "cosine" else 0.001

    def report(epoch, hist):  # visible with -s: the figures docs/chapter8.md quotes
        acc, secs = hist.test_acc[-1], hist.epoch_time[-1]
        print(f"seed {seed} shift {shift} {schedule} epoch {epoch}: test {acc:.4f}, {secs:.0f} s",
              flush=True)  # fmt: skip

    params, _, hist = train.fit(
        net, params, (x, t), (xt, tt), optimizer=optim.adam(rate), epochs=epochs,
        batch_size=batch, seed=seed, progress=False, on_epoch=report, train_acc_samples=1000,
        augment=random_shift(shift) if shift else None,
    )  # fmt: skip
    if save := os.environ.get("FUNCNET_DEEP_SAVE"):
        checkpoints.save_params(Path(save) / f"deep-s{seed}-shift{shift}-{schedule}.npz", params)
    assert hist.test_acc[-1] >= 0.993, hist.test_acc


def test_multilayer_net_variants_and_shared_dense_weights():
    plain = models.multilayer_net((6, 5), 0.1)
    full = models.multilayer_net((6, 5), 0.1, batchnorm=True, dropout=0.5, dropout_scale_at="eval")
    assert [layer.split("(")[0] for layer in plain.name[9:-1].split(", ")] == [
        "Dense", "Relu", "Dense", "Relu", "Dense",
    ]  # fmt: skip
    assert "BatchNorm, Relu, Dropout(0.5, scale_at=eval)" in full.name
    _, p_plain = plain.init(0, (-1, 4))
    _, p_full = full.init(1, (-1, 4))
    shared = models.with_dense_weights(p_full, models.dense_weights(p_plain))
    for a, b in zip(models.dense_weights(shared), models.dense_weights(p_plain), strict=True):
        assert a is b
    assert shared[1] is p_full[1]  # BatchNorm params untouched


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_fit_validates_every_label_before_training_on_both_backends(backend):
    net, params = mlp()
    params = train.to_backend(params, backend)
    x, t = blobs(90)
    bad = t.copy()
    bad[-1] = 7  # 3 classes: the last sample's label is out of range
    with pytest.raises(ValueError, match=r"fit: training targets: .*labels must be in \[0, 2\]"):
        train.fit(net, params, (x, bad), epochs=1, batch_size=30)
    with pytest.raises(ValueError, match=r"fit: test targets: .*one-hot"):
        train.fit(net, params, (x, t), (x, np.eye(4)[t]), epochs=1, batch_size=30)


def test_fit_stops_on_a_non_finite_loss_under_jit():
    net, params = mlp()
    x, t = blobs(90)
    with pytest.raises(FloatingPointError, match=r"the loss is (nan|inf) from step \d+ of epoch 1"):
        train.fit(
            net, train.to_backend(params, "jax"), (x, t), epochs=2, batch_size=30,
            optimizer=optim.sgd(1e30),
        )  # fmt: skip


def test_a_diverging_run_can_be_kept_going_for_the_books_experiments():
    net, params = mlp()
    x, t = blobs(90)
    _, _, hist = train.fit(
        net, train.to_backend(params, "jax"), (x, t), epochs=2, batch_size=30,
        optimizer=optim.sgd(1e30), stop_if_diverged=False,
    )  # fmt: skip
    assert len(hist.epoch_loss) == 2 and not np.isfinite(hist.epoch_loss[-1])


def test_ctrl_c_in_fit_hands_back_the_last_finished_epoch(monkeypatch):
    net, params = mlp()
    x, t = blobs(90)
    calls = []
    real = train.make_step

    def interrupting(*args, **kwargs):
        step = real(*args, **kwargs)

        def wrapped(*a, **k):
            calls.append(1)
            if len(calls) == 5:  # the second step of epoch 2
                raise KeyboardInterrupt
            return step(*a, **k)

        return wrapped

    monkeypatch.setattr(train.loop, "make_step", interrupting)
    with pytest.raises(train.Interrupted) as stop:
        train.fit(net, params, (x, t), epochs=5, batch_size=30, progress=False)
    assert stop.value.epochs_done == 1 and len(stop.value.history.epoch_loss) == 1
    monkeypatch.setattr(train.loop, "make_step", real)
    one, _, _ = train.fit(net, params, (x, t), epochs=1, batch_size=30, progress=False)
    jax.tree_util.tree_map(np.testing.assert_array_equal, stop.value.params, one)


def _mean_loss(net, params, x, t):  # a metric of the kind a language model's perplexity is
    out = np.asarray(net.forward(params, x)[0], dtype=np.float64)
    return float(fn.softmax_cross_entropy.forward(out, t)[0])


@pytest.mark.parametrize(("backend", "scan"), [("numpy", False), ("jax", False), ("jax", True)])
def test_fit_records_every_metric_it_is_given_on_both_sets(backend, scan):
    net, params = mlp(seed=1)
    x, t = blobs(300, seed=1)
    train_set, test_set = (x[:240], t[:240]), (x[240:], t[240:])
    params = train.to_backend(params, backend)
    metrics = {"accuracy": train.accuracy, "loss": _mean_loss}
    last, _, hist = train.fit(
        net, params, train_set, test_set, epochs=2, batch_size=30, scan=scan, progress=False,
        metrics=metrics,
    )  # fmt: skip
    assert set(hist.train) == set(hist.test) == {"accuracy", "loss"}
    assert all(len(v) == 2 for v in (*hist.train.values(), *hist.test.values()))
    assert hist.train_acc is hist.train["accuracy"] and hist.test_acc is hist.test["accuracy"]
    assert hist.test["accuracy"][-1] == train.accuracy(net, last, *test_set)
    assert hist.test["loss"][-1] == pytest.approx(_mean_loss(net, last, *test_set), rel=1e-6)
    assert hist.train["loss"][-1] < hist.train["loss"][0]
    with pytest.raises(AttributeError):
        hist.train_acc = []  # read-only: the values live in hist.train


def test_fit_without_a_test_set_or_an_accuracy_metric():
    net, params = mlp()
    x, t = blobs(90)
    _, _, hist = train.fit(net, params, (x, t), epochs=1, batch_size=30, progress=False)
    assert len(hist.train_acc) == 1 and hist.test_acc == [] and hist.test == {"accuracy": []}
    _, _, hist = train.fit(
        net, params, (x, t), epochs=1, batch_size=30, progress=False, metrics={"loss": _mean_loss}
    )
    assert list(hist.train) == ["loss"]
    with pytest.raises(KeyError, match="no 'accuracy' among the metrics"):
        hist.train_acc  # noqa: B018
    for bad in ([train.accuracy], {"acc": 0.5}, {1: train.accuracy}):
        with pytest.raises(ValueError, match="metrics must map names"):
            train.fit(net, params, (x, t), batch_size=30, metrics=bad)


def test_fit_compiles_the_eval_forward_once_per_run_not_once_per_epoch():
    net, params = mlp()
    x, t = blobs(120)
    traced = []

    def forward(p, xb, *, train=False, rng=None):
        if not train and isinstance(xb, jax.core.Tracer):
            traced.append(xb.shape)
        return net.forward(p, xb, train=train, rng=rng)

    counting = net._replace(forward=forward)
    for epochs in (1, 4):
        traced.clear()
        train.fit(
            counting, train.to_backend(params, "jax"), (x[:90], t[:90]), (x[90:], t[90:]),
            epochs=epochs, batch_size=30, progress=False,
        )  # fmt: skip
        # the target checks' shapes, then the scorer's two (90 and 30 rows), once each
        assert sorted(traced) == [(1, 8), (1, 8), (30, 8), (90, 8)], traced
    scorer = train.scoring_net(net, train.to_backend(params, "jax"))
    assert train.scoring_net(scorer, params) is scorer
    np.testing.assert_array_equal(
        train.predict(scorer, train.to_backend(params, "jax"), x), train.predict(net, params, x)
    )
    with pytest.raises(ValueError, match="only scores"):
        scorer.forward(params, x, train=True)
    assert train.scoring_net(net, params) is net  # NumPy: nothing to compile


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_a_runner_epoch_is_the_epoch_fit_runs(backend):
    net, params = mlp()
    x, t = blobs(90)
    params = train.to_backend(params, backend)
    opt = optim.adam(0.01)
    step = train.make_step(net, fn.softmax_cross_entropy, opt)
    runner = train.make_runner(step, (x, t), 30, 3, on_jax=backend == "jax", start=1)
    assert runner.steps == 3 and runner.mode == {"numpy": "numpy", "jax": "jit"}[backend]
    p, s = runner.start(params, opt.init(params))
    p, s, losses = runner.epoch(p, s, 2)
    resumed, _, rest = train.fit(
        net, params, (x, t), optimizer=opt, epochs=2, batch_size=30, seed=3, progress=False,
        resume=train.Resume(1),
    )  # fmt: skip
    assert rest.step_loss == np.asarray(losses, np.float64).tolist()
    jax.tree_util.tree_map(np.testing.assert_array_equal, p, resumed)
    if backend == "jax":
        assert train.make_runner(step, (x, t), 30, 3, on_jax=True, scan=True).mode == "scan"
