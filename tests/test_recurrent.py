"""The sequence layers and loss of the second book: hand-written backwards against
``jax.vjp`` (float64, random shapes and cotangents), the book's own layers as the reference
for outputs and gradients, state in and out, lax.scan under jit, and bad input.  That
``funcnet check``'s sequence cases catch a slightly wrong backward is
tests/meta/test_sequence_mutations.py."""

from __future__ import annotations

import importlib

import jax
import numpy as np
import pytest

import funcnet as fn
from funcnet import losses
from funcnet.cli import check

CELLS = {"RNN": (fn.RNN, 1), "LSTM": (fn.LSTM, 2), "GRU": (fn.GRU, 1)}


@pytest.fixture(scope="module")
def book(dlfs2):
    """The book's ``common.time_layers`` (tests/conftest.py's ``dlfs2`` finds it)."""
    return importlib.import_module("common.time_layers")


def _random_params(layer, in_shape, rng):
    _, p = layer.init(0, in_shape, dtype=np.float64)
    return jax.tree_util.tree_map(lambda a: rng.standard_normal(a.shape), p)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("arrays", ["numpy", "jax"])
def test_every_sequence_case_of_the_catalogue_passes(arrays):
    reports = [run(arrays) for _, _, run in check.sequence_entries(0)]
    assert reports and all(r.ok for r in reports), [str(r) for r in reports if not r.ok]
    # Every forward was also compared with its independent reference.
    assert [r.name for r in reports if r.max_ref_rel is None] == []


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("seed", [1, 2])
def test_random_shapes_against_jax(cell, seed):
    rng = np.random.default_rng(seed)
    n, steps, d, h = rng.integers(1, 4), rng.integers(1, 6), rng.integers(1, 5), rng.integers(1, 5)
    steps = 1 if seed == 1 else steps  # T = 1 always among them
    make, _n_state = CELLS[cell]
    layer = make(int(h))
    p = _random_params(layer, (-1, steps, d), rng)
    x = rng.standard_normal((n, steps, d))
    for arrays in ("numpy", "jax"):
        fn.check_layer(layer, p, x, arrays=arrays, seed=seed)


# --------------------------------------------------------------------------- the book


def _book_vs_ours(book_layer, ours, params, x, dout):
    ys_b = book_layer.forward(x)
    dx_b = book_layer.backward(dout.copy())
    y, cache = ours.forward(params, x)
    dp, dx = ours.backward(cache, dout)
    np.testing.assert_allclose(y, ys_b, rtol=1e-5, atol=1e-6)
    return dp, dx, dx_b


@pytest.mark.parametrize("cell", list(CELLS))
def test_same_outputs_and_gradients_as_the_books_layer(book, cell):
    rng = np.random.default_rng(3)
    n, steps, d, h = 4, 5, 3, 6
    make, _ = CELLS[cell]
    layer = make(h)
    p = {k: v.astype(np.float32) for k, v in _random_params(layer, (-1, steps, d), rng).items()}
    x = rng.standard_normal((n, steps, d)).astype(np.float32)
    dhs = rng.standard_normal((n, steps, h)).astype(np.float32)
    ref = getattr(book, f"Time{cell}")(p["Wx"].copy(), p["Wh"].copy(), p["b"].copy())
    dp, dx, dx_b = _book_vs_ours(ref, layer, p, x, dhs)
    np.testing.assert_allclose(dx, dx_b, rtol=1e-4, atol=1e-5)
    for key, g in zip(("Wx", "Wh", "b"), ref.grads, strict=True):
        np.testing.assert_allclose(dp[key], g, rtol=1e-4, atol=1e-5)
    # The final state: the book keeps it on self.h (and self.c).
    _out, *final = make(h, return_state=True).forward(p, x)[0]
    np.testing.assert_allclose(final[0], ref.h, rtol=1e-5, atol=1e-6)
    if cell == "LSTM":
        np.testing.assert_allclose(final[1], ref.c, rtol=1e-5, atol=1e-6)


def test_bilstm_embedding_attention_and_loss_match_the_book(book):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    bi = fn.BiLSTM(5)
    p = jax.tree_util.tree_map(lambda a: a.astype(np.float32), _random_params(bi, (-1, 4, 2), rng))
    ref = book.TimeBiLSTM(
        *(p[0][k].copy() for k in ("Wx", "Wh", "b")), *(p[1][k].copy() for k in ("Wx", "Wh", "b"))
    )
    dout = rng.standard_normal((3, 4, 10)).astype(np.float32)
    dp, dx, dx_b = _book_vs_ours(ref, bi, p, x, dout)
    np.testing.assert_allclose(dx, dx_b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dp[1]["Wh"], ref.grads[4], rtol=1e-4, atol=1e-5)

    emb = fn.Embedding(7, 3)
    W = rng.standard_normal((7, 3)).astype(np.float32)
    ids = np.array([[1, 1, 6], [0, 1, 6]])
    ref = book.TimeEmbedding(W.copy())
    dout = rng.standard_normal((2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(emb.forward({"W": W}, ids)[0], ref.forward(ids))
    ref.backward(dout)
    dW = emb.backward(emb.forward({"W": W}, ids)[1], dout)[0]["W"]
    np.testing.assert_allclose(dW, ref.grads[0], rtol=1e-6, atol=1e-6)

    from ch08.attention_layer import TimeAttention

    enc, dec = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 3, 4))
    enc, dec = enc.astype(np.float32), dec.astype(np.float32)
    ref, att = TimeAttention(), fn.Attention(return_weights=True)
    (c, a), cache = att.forward((), (enc, dec))
    np.testing.assert_allclose(c, ref.forward(enc, dec), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a, np.stack(ref.attention_weights, axis=1), rtol=1e-5, atol=1e-6)
    dc = rng.standard_normal(c.shape).astype(np.float32)
    d_enc, d_dec = att.backward(cache, (dc, np.zeros_like(a)))[1]
    r_enc, r_dec = ref.backward(dc)
    np.testing.assert_allclose(d_enc, r_enc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d_dec, r_dec, rtol=1e-4, atol=1e-5)

    y = (rng.standard_normal((3, 4, 6)) * 3).astype(np.float32)
    t = rng.integers(0, 6, (3, 4))
    t[1, 2] = t[0, 0] = -1
    ref = book.TimeSoftmaxWithLoss()
    value, cache = losses.time_softmax_cross_entropy.forward(y, t)
    np.testing.assert_allclose(value, ref.forward(y.copy(), t), rtol=1e-6)
    np.testing.assert_allclose(
        losses.time_softmax_cross_entropy.backward(cache), ref.backward(), atol=1e-7
    )


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("cell", list(CELLS))
def test_truncated_bptt_hands_the_state_on(cell):
    """Two blocks with the first's final state fed to the second = one run over both."""
    rng = np.random.default_rng(5)
    make, _ = CELLS[cell]
    layer = make(4, return_state=True)
    _, p = layer.init(0, (-1, 6, 3))
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    whole, *_ = layer.forward(p, x)[0]
    first, *state = layer.forward(p, x[:, :4])[0]
    second, *_ = layer.forward(p, (x[:, 4:], *state))[0]
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-6, atol=1e-6)


def test_the_jitted_time_loop_is_one_scan_each_way():
    """No Python loop over T under jit: the program's size does not grow with T."""
    layer = fn.LSTM(3)
    _, p = layer.init(0, (-1, 2, 2))

    def size(steps):
        x = np.zeros((2, steps, 2), np.float32)

        def f(p, x):
            out, cache = layer.forward(p, x)
            return layer.backward(cache, out)

        eqns = jax.make_jaxpr(f)(p, x).jaxpr.eqns
        return sum(e.primitive.name == "scan" for e in eqns), len(eqns)

    assert size(3)[0] == 2
    assert size(3)[1] == size(40)[1]


def test_embedding_accumulates_repeated_ids_and_refuses_ids_out_of_range():
    emb = fn.Embedding(4, 2)
    W = np.arange(8, dtype=np.float32).reshape(4, 2)
    ids = np.array([[3, 3, 3]])
    _out, cache = emb.forward({"W": W}, ids)
    dp, dx = emb.backward(cache, np.ones((1, 3, 2), np.float32))
    np.testing.assert_array_equal(dp["W"], [[0, 0], [0, 0], [0, 0], [3, 3]])
    assert dx is None
    for bad in ([[4]], [[-1]]):
        with pytest.raises(ValueError, match=r"Embedding\(4, 2\): ids must be in \[0, 3\]"):
            emb.forward({"W": W}, np.array(bad))
    with pytest.raises(TypeError, match="integer ids"):
        emb.forward({"W": W}, np.zeros((1, 2), np.float32))
    jitted = jax.jit(lambda W, i: emb.forward({"W": W}, i)[0])  # traced: not checked
    assert jitted(W, np.array([[1]])).shape == (1, 1, 2)


def test_the_loss_ignores_masked_positions():
    rng = np.random.default_rng(6)
    y = rng.standard_normal((2, 3, 4))
    t = np.array([[1, -1, 2], [-1, -1, 0]])
    loss = losses.time_softmax_cross_entropy
    value, cache = loss.forward(y, t)
    kept = y[[0, 0, 1], [0, 2, 2]]
    ref = np.mean([np.log(np.exp(r).sum()) - r[k] for r, k in zip(kept, [1, 2, 0], strict=True)])
    np.testing.assert_allclose(value, ref)
    d = loss.backward(cache)
    assert not d[0, 1].any() and not d[1, :2].any()
    value, cache = loss.forward(y, np.full((2, 3), -1))  # all ignored: 0, no gradient
    assert value == 0 and not loss.backward(cache).any()
    with pytest.raises(ValueError, match="labels must be in"):
        loss.forward(y, np.array([[1, 4, 0], [0, 0, 0]]))
    custom = losses.time_softmax_cross_entropy_with(ignore_label=0)
    assert custom.forward(y, np.zeros((2, 3), int))[0] == 0


def test_bad_input_names_the_layer_and_the_shapes():
    lstm = fn.LSTM(4)
    _, p = lstm.init(0, (-1, 3, 2))
    x = np.zeros((2, 3, 2), np.float32)
    with pytest.raises(
        ValueError, match=r"LSTM\(4\): expected input shape \(N, T, 2\), got \(2, 3, 5\)"
    ):
        lstm.forward(p, np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match=r"LSTM\(4\): expected h0 of shape \(2, 4\), got \(2, 3\)"):
        lstm.forward(p, (x, np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32)))
    with pytest.raises(ValueError, match=r"expected x or a tuple \(x, h0, c0\)"):
        lstm.forward(p, (x, np.zeros((2, 4), np.float32)))
    with pytest.raises(TypeError, match="float64 does not match the params dtype float32"):
        lstm.forward(p, x.astype(np.float64))
    with pytest.raises(ValueError, match=r"expected a 3-D input"):
        lstm.forward(p, x[0])
    with pytest.raises(ValueError, match="Attention: hs_enc"):
        fn.Attention().forward((), (np.zeros((2, 3, 4)), np.zeros((2, 3, 5))))


def test_extreme_inputs_stay_finite():
    for make, _ in CELLS.values():
        layer = make(3)
        _, p = layer.init(0, (-1, 2, 2))
        x = np.full((1, 2, 2), 1e4, np.float32)
        out, cache = layer.forward(p, x)
        dp, dx = layer.backward(cache, np.ones_like(out))
        assert np.isfinite(out).all() and np.isfinite(dx).all()
        assert all(np.isfinite(v).all() for v in dp.values())
