"""Thirteen behaviours the suite did not pin down, each one a realistic bug that passed it:
pools past an int8 arg and with unequal padding, a loss of inf returned instead of refused,
an interrupted resumed run, the params a data-parallel averaged run scores, augmentation's
random stream under JAX, checkpoint writes that fail and files missing one key, the
command line's --batch/--subset boundary and an interrupt before any epoch, md5 digests in
upper case, a label of exactly 10, and sequence layers whose forward is wrong the same way
as their backward (PyTorch's gate order, its GRU update) that only a reference catches.  fit
and the command line are driven only through their public arguments, outputs and the layer
protocol."""

from __future__ import annotations

import gzip
import hashlib
import resource
import signal
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from nets import blobs, mlp

import funcnet as fn
from funcnet import checkpoints, cli, optim, parallel, train
from funcnet.data import MNISTError, load_mnist, read_idx

# ----------------------------------------------------------------- 1, 2: pools


def _pool_reference(kind, x, size, stride, padding):
    """lax.reduce_window over (size, stride, symmetric padding per axis)."""
    (kh, kw), (sh, sw), (ph, pw) = size, stride, padding
    pads = ((0, 0), (0, 0), (ph, ph), (pw, pw))
    if kind == "max":
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, kh, kw), (1, 1, sh, sw), pads)
    return lax.reduce_window(x, 0.0, lax.add, (1, 1, kh, kw), (1, 1, sh, sw), pads) / (kh * kw)


def _pool_against_lax(layer, kind, x, size, stride, padding):
    y, cache = layer.forward((), x)
    g = np.random.default_rng(1).standard_normal(y.shape)
    _, dx = layer.backward(cache, g)
    want, pull = jax.vjp(lambda x: _pool_reference(kind, x, size, stride, padding), x)
    np.testing.assert_allclose(y, want, rtol=1e-12)
    np.testing.assert_allclose(dx, pull(g)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "stride"),
    [((2, 4, 36, 12), 12), ((2, 4, 14, 12), 1)],
    ids=["running-maxima", "offset-by-offset"],
)
def test_numpy_maxpool_over_144_offsets_routes_every_gradient(shape, stride):
    x = np.random.default_rng(0).standard_normal(shape)
    # Some window's maximum sits at an offset past 127 (int8's largest).
    win = np.lib.stride_tricks.sliding_window_view(x, (12, 12), axis=(2, 3))[
        :, :, ::stride, ::stride
    ]
    assert (win.reshape(*win.shape[:4], 144).argmax(-1) >= 128).any()
    _pool_against_lax(fn.MaxPool(12, stride=stride), "max", x, (12, 12), (stride, stride), (0, 0))


@pytest.mark.parametrize("padding", [(0, 1), (1, 0)])
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_numpy_pools_with_unequal_height_and_width_padding(kind, padding):
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 6))
    layer = (fn.AvgPool if kind == "avg" else fn.MaxPool)(3, stride=1, padding=padding)
    _pool_against_lax(layer, kind, x, (3, 3), (1, 1), padding)


# ----------------------------------------------------------------- 3: the loss


@pytest.mark.parametrize("arrays", ["float64", "float32", "jax", "one-hot"])
def test_cross_entropy_refuses_a_minus_inf_logit_at_the_label(arrays):
    z = np.array([[0.5, -np.inf, 1.0], [1.0, 2.0, 3.0]])
    t = np.array([1, 0])
    if arrays == "float32":
        z = z.astype(np.float32)
    elif arrays == "jax":
        z = jnp.asarray(z)
    elif arrays == "one-hot":
        t = np.eye(3)[t]
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: logits .* non-finite"):
        fn.softmax_cross_entropy.forward(z, t)
    # Away from the label, −inf is a probability of 0: a finite loss.
    loss, _ = fn.softmax_cross_entropy.forward(z, np.array([0, 0]))
    assert np.isfinite(float(loss))


# ----------------------------------------------------------------- 4, 5, 6: fit


def _interrupting(net, at: int):
    """``net`` raising KeyboardInterrupt (Ctrl-C) in its ``at``-th train-mode forward."""
    calls = []

    def forward(params, x, *, train=False, rng=None):
        if train:
            calls.append(1)
            if len(calls) == at:
                raise KeyboardInterrupt
        return net.forward(params, x, train=train, rng=rng)

    return net._replace(forward=forward)


@pytest.mark.parametrize(("at", "done"), [(2, 2), (5, 3)], ids=["in-its-first-epoch", "later"])
def test_ctrl_c_in_a_resumed_fit_counts_the_epochs_of_the_whole_run(at, done):
    net, params = mlp()
    x, t = blobs(90)
    opt = optim.sgd(0.1)
    resume = train.Resume(2, opt.init(params))
    kw = dict(batch_size=30, progress=False, optimizer=opt, resume=resume)
    with pytest.raises(train.Interrupted) as stop:  # 3 steps an epoch, epochs 3..5 to run
        train.fit(_interrupting(net, at), params, (x, t), epochs=5, **kw)
    assert stop.value.epochs_done == done
    # And the params are those of that epoch: the given ones, or epoch 3's.
    want = params if done == 2 else train.fit(net, params, (x, t), epochs=3, **kw)[0]
    jax.tree_util.tree_map(np.testing.assert_array_equal, stop.value.params, want)


def test_data_parallel_fit_scores_the_averaged_params():
    net, params = mlp(seed=4)
    x, t = blobs(900, seed=4)
    train_set, test_set = (x[:600], t[:600]), (x[600:], t[600:])
    last, state, hist = train.fit(
        net, params, train_set, test_set, epochs=2, batch_size=20, progress=False,
        optimizer=optim.with_average(optim.sgd(0.02), 0.99), mesh=parallel.data_mesh(1),
    )  # fmt: skip
    avg = optim.averaged(jax.device_get(state), jax.device_get(fn.trainable(last)))
    scores = [train.accuracy(net, jax.device_get(p), *test_set) for p in (avg, last)]
    assert scores[0] != scores[1]  # the test can tell the two apart
    assert hist.test_acc[-1] == scores[0]
    assert hist.train_acc[-1] == train.accuracy(net, avg, *train_set)


def test_augmentation_under_jax_draws_from_a_stream_no_layer_gets():
    seen = {}

    def spy_augment(rng, xb):
        seen["augment"] = rng
        return xb

    def spy_forward(params, x, *, train=False, rng=None):
        seen.setdefault("layers", []).append(rng)
        return dense.forward(params, x, train=train, rng=rng)

    dense = fn.Dense(3)
    spy = dense._replace(forward=spy_forward)
    x = jnp.asarray(np.random.default_rng(0).random((6, 4), dtype=np.float32))
    key = jax.random.PRNGKey(7)
    net = fn.pipeline(fn.Relu(), spy)
    _, params = net.init(0, (-1, 4))
    step = train.make_step(net, optimizer=optim.sgd(0.1), augment=spy_augment)

    def keys(params, key):  # one compiled step; the keys it handed out come back out of it
        step(params, optim.sgd(0.1).init(params), x, jnp.arange(6) % 3, rng=key)
        return seen["augment"], seen["layers"]

    aug, layers = jax.jit(keys)(jax.device_put(params), key)
    # Not the step's key, not what a layer got, not any split a pipeline would give.
    taken = [key, *layers, *(k for n in range(1, 5) for k in jax.random.split(key, n))]
    for other in taken:
        assert not np.array_equal(np.asarray(aug), np.asarray(other))


# ----------------------------------------------------------------- 7, 8: checkpoints


def test_a_write_that_fails_midway_leaves_the_previous_checkpoint_whole(tmp_path):
    path = tmp_path / "p.npz"
    small = {"W": np.arange(6.0).reshape(2, 3)}
    checkpoints.save_params(path, small)
    big = {"W": np.ones((512, 512))}  # 2 MB: past the file size limit below
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not death
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, old_limit[1]))
    try:
        with pytest.raises(OSError):
            checkpoints.save_params(path, big)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    loaded = checkpoints.load_params(path, {"W": np.zeros((2, 3))})
    np.testing.assert_array_equal(loaded["W"], small["W"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz"]


@pytest.mark.parametrize("drop", ["epoch", "meta"])
def test_a_run_checkpoint_missing_one_of_its_keys_is_refused(tmp_path, drop):
    _, params = mlp()
    opt = optim.sgd(0.1)
    whole, cut = tmp_path / "r.npz", tmp_path / "cut.npz"
    checkpoints.save_run(whole, params, opt.init(params), 2, {"seed": 0})
    with np.load(whole) as f:
        np.savez(cut, **{k: f[k] for k in f.files if k != drop})
    with pytest.raises(ValueError, match=r"cut\.npz"):
        checkpoints.run_info(cut)
    with pytest.raises(ValueError, match=r"cut\.npz"):
        checkpoints.load_run(cut, params, opt.init(params))


# ----------------------------------------------------------------- 9, 10: the command line


@pytest.fixture
def digits(monkeypatch):
    """``funcnet train`` on 120 + 40 random 784-pixel images instead of MNIST."""
    rng = np.random.default_rng(0)
    x, t = rng.random((160, 784), dtype=np.float32), rng.integers(0, 10, 160)
    monkeypatch.setattr(
        "funcnet.data.load_mnist",
        lambda data_dir=None, **kw: ((x[:120], t[:120]), (x[120:], t[120:])),
    )


def test_a_batch_as_large_as_the_subset_is_accepted(digits, capsys):
    argv = ["train", "--subset", "100", "--batch", "100", "--epochs", "1", "--hidden", "8",
            "--no-plot"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "100 training / 40 test images, batch 100" in out and "epoch   1/1" in out


def test_ctrl_c_before_the_first_epoch_ends_saves_nothing(digits, capsys, monkeypatch, tmp_path):
    from funcnet import models

    mlp_entry = models.MODELS["mlp"]
    monkeypatch.setitem(
        models.MODELS,
        "mlp",
        mlp_entry._replace(build=lambda **kw: _interrupting(mlp_entry.build(**kw), 2)),
    )
    save, run = tmp_path / "p.npz", tmp_path / "run.npz"
    argv = ["train", "--epochs", "3", "--batch", "20", "--hidden", "8", "--no-plot",
            "--save", str(save), "--checkpoint", str(run)]  # fmt: skip
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no params, no run checkpoint, no partial file


# ----------------------------------------------------------------- 11, 12: MNIST files

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")  # fmt: skip


def _idx(magic: int, dims: tuple, payload: bytes) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload


def _mnist(folder, labels=(0, 1, 2, 3, 4)):
    n = len(labels)
    files = {
        "train-images-idx3-ubyte": _idx(2051, (n, 28, 28), bytes(n * 784)),
        "train-labels-idx1-ubyte": _idx(2049, (n,), bytes(labels)),
        "t10k-images-idx3-ubyte": _idx(2051, (2, 28, 28), bytes(2 * 784)),
        "t10k-labels-idx1-ubyte": _idx(2049, (2,), bytes([0, 1])),
    }
    for name, data in files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data))
    return {name: hashlib.md5(data).hexdigest() for name, data in files.items()}


def test_upper_case_md5_digests_are_accepted(tmp_path):
    md5s = _mnist(tmp_path)
    upper = {name: digest.upper() for name, digest in md5s.items()}
    (x, t), _ = load_mnist(tmp_path, download=False, checksums=upper)
    assert x.shape == (5, 784) and list(t) == [0, 1, 2, 3, 4]
    name = "train-labels-idx1-ubyte"
    assert list(read_idx(tmp_path / f"{name}.gz", 2049, md5=upper[name])) == [0, 1, 2, 3, 4]
    with pytest.raises(MNISTError, match="md5"):
        read_idx(tmp_path / f"{name}.gz", 2049, md5="F" * 32)


def test_a_label_of_exactly_10_is_refused(tmp_path):
    md5s = _mnist(tmp_path, labels=(0, 1, 10, 3, 9))
    with pytest.raises(MNISTError, match=r"1 labels out of range 0\.\.9 \(max 10\)"):
        load_mnist(tmp_path, download=False, checksums=md5s)


# ----------------------------------------------------------------- 13: sequence forwards


def _wrapped(layer, params_in, grads_out, dout=lambda d: d):
    """``layer`` under its own name, reading its params through ``params_in`` and returning
    their gradients through ``grads_out`` (its adjoint), its cotangent through ``dout``: a
    forward and a backward that agree with each other, so ``jax.vjp`` passes them."""

    def forward(params, x, *, train=False, rng=None):
        y, cache = layer.forward(params_in(params), x, train=train, rng=rng)
        return y, cache

    def backward(cache, d, *, need_dx=True):
        grads, dx = layer.backward(cache, dout(d), need_dx=need_dx)
        return grads_out(grads), dx

    return layer._replace(forward=forward, backward=backward)


def _scaled(layer, k=1.001):
    """Every output (and so every cotangent) times k."""

    def times(y):
        return tuple(k * o for o in y) if isinstance(y, tuple) else k * y

    twin = _wrapped(layer, lambda p: p, lambda g: g, times)

    def forward(params, x, *, train=False, rng=None):
        y, cache = twin.forward(params, x, train=train, rng=rng)
        return times(y), cache

    return twin._replace(forward=forward)


def _columns(perm_of, sign_of=None):
    """Params read with the gate columns of Wx, Wh and b permuted (and signed): the
    gradients go back through the inverse."""

    def params_in(p):
        perm, sign = perm_of(p), 1 if sign_of is None else sign_of(p)
        return {k: v[..., perm] * sign for k, v in p.items()}

    def make_out(p):
        perm, sign = perm_of(p), 1 if sign_of is None else sign_of(p)
        inv = np.argsort(perm)
        return lambda g: {k: (v * sign)[..., inv] for k, v in g.items()}

    return params_in, make_out


def _forward_rows(layer, case):
    """The catalogue's check of ``layer`` on ``case``'s params and inputs, NumPy arrays:
    -> (every row but the reference's passes, the reference's row fails)."""
    from funcnet.cli import check

    _kind, _layer, p, inputs, kw, _note = case
    report = check._flat_vjp_case(layer.name, layer, p, inputs, **kw)("numpy")
    ref = [r for r in report.rows if r.versus == "reference"]
    rest = [r for r in report.rows if r.versus != "reference"]
    return all(r.ok for r in rest), bool(ref) and not any(r.ok for r in ref)


def _sequence_case(label: str):
    from funcnet.cli import check

    cases = check.sequence_cases(0, np.random.default_rng([0, 30]))
    return next(c for c in cases if f"{c[1].name} ({c[5]})".startswith(label))


def test_an_lstm_reading_pytorchs_gate_order_passes_jax_but_not_the_reference():
    # PyTorch's columns are i, f, g, o; the book's (and funcnet's) f, g, i, o.
    case = _sequence_case("LSTM(4, return_state=True)")
    H = 4
    perm = np.r_[H : 2 * H, 2 * H : 3 * H, 0:H, 3 * H : 4 * H]  # book's block k <- torch's
    params_in, make_out = _columns(lambda p: perm)
    wrong = _wrapped(case[1], params_in, make_out(case[2]))
    assert _forward_rows(wrong, case) == (True, True)


def test_a_gru_with_pytorchs_update_gate_passes_jax_but_not_the_reference():
    # PyTorch: h = (1 − z)⊙h̃ + z⊙h, the book: (1 − z)⊙h + z⊙h̃; 1 − σ(a) = σ(−a), so the
    # same layer with the z columns negated.
    case = _sequence_case("GRU(4) (T=3)")
    sign = np.r_[-np.ones(4), np.ones(8)]
    params_in, make_out = _columns(lambda p: np.arange(12), lambda p: sign)
    wrong = _wrapped(case[1], params_in, make_out(case[2]))
    assert _forward_rows(wrong, case) == (True, True)


@pytest.mark.parametrize(
    "label",
    ["RNN(4) (T=3)", "BiLSTM(3)", "Embedding(5, 3)", "Attention(return_weights=True)",
     "peeky_seq2seq", "attention_seq2seq"],
)  # fmt: skip
def test_a_sequence_forward_off_by_a_factor_passes_jax_but_not_the_reference(label):
    case = _sequence_case(label)
    assert _forward_rows(_scaled(case[1]), case) == (True, True)
