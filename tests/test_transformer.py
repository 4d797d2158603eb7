"""The transformer's layers: every backward against jax.vjp (float64, random shapes and
cotangents, one head and one position included), their ``funcnet check`` cases passing,
forwards against independent references, bad input and extreme values.  That those cases
catch a slightly wrong backward is tests/meta/test_transformer_mutations.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet.cli import check
from funcnet.layers import transformer as tf

TF = "funcnet.layers.transformer"


def _random(layer, shape, seed):
    rng = np.random.default_rng(seed)
    _, params = layer.init(seed, (-1, *shape[1:]), dtype=np.float64)
    params = jax.tree_util.tree_map(lambda a: rng.standard_normal(a.shape), params)
    return params, rng.standard_normal(shape)


LAYERS = [
    (lambda: tf.LayerNorm(), 3),
    (lambda: tf.LayerNorm(bias=False), 3),
    (lambda: tf.Gelu(), 3),
    (lambda: tf.Gelu(approximate=False), 3),
    (lambda: tf.PositionalEmbedding(9), 3),
    (lambda: tf.CausalSelfAttention(1), 3),
    (lambda: tf.CausalSelfAttention(2), 3),
    (lambda: tf.CausalSelfAttention(3), 3),
    (lambda: tf.CausalSelfAttention(2, bias=False), 3),
]


@pytest.mark.parametrize("arrays", ["numpy", "jax"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("make", "ndim"), LAYERS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_backward_matches_jax_vjp_on_random_shapes(make, ndim, seed, arrays):
    layer = make()
    rng = np.random.default_rng(seed)
    heads = (
        int(layer.name.split("(")[1].split(",")[0].rstrip(")")) if "Attention" in layer.name else 1
    )
    n, t = int(rng.integers(1, 4)), int(rng.integers(1, 8))  # t = 1: one position
    c = heads * int(rng.integers(1, 4))
    params, x = _random(layer, (n, t, c), seed)
    fn.check_layer(layer, params, x, seed=seed, arrays=arrays, numerical=arrays == "numpy")


def test_the_catalogue_holds_the_layers_and_passes():
    names = {c.make().name.split("(")[0] for c in check.layer_cases()}
    assert {"LayerNorm", "Gelu", "PositionalEmbedding", "CausalSelfAttention"} <= names
    reports = check.builtin_checks(kinds={"transformer"})
    # 15 cases (with and without biases), each on NumPy and on JAX arrays
    assert len(reports) == 30 and all(r.ok for r in reports), [str(r) for r in reports]


# --------------------------------------------------------------------------- forwards


def test_forwards_match_independent_references():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6))
    ln = tf.LayerNorm()
    _, p = ln.init(0, (-1, 5, 6), dtype=np.float64)
    p = {"gamma": rng.standard_normal(6), "beta": rng.standard_normal(6)}
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    want = (x - mu) / np.sqrt(var + 1e-5) * p["gamma"] + p["beta"]
    np.testing.assert_allclose(ln.forward(p, x)[0], want, rtol=1e-12, atol=1e-12)
    no_beta = tf.LayerNorm(bias=False)
    assert set(no_beta.init(0, (-1, 5, 6))[1]) == {"gamma"}
    got = no_beta.forward({"gamma": p["gamma"]}, x)[0]
    np.testing.assert_allclose(got, want - p["beta"], rtol=1e-12, atol=1e-12)
    for approximate in (True, False):
        got = tf.Gelu(approximate=approximate).forward((), x)[0]
        ref = jax.nn.gelu(jnp.asarray(x), approximate=approximate)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
    pe = tf.PositionalEmbedding(8)
    _, pp = pe.init(0, (-1, 5, 6), dtype=np.float64)
    np.testing.assert_array_equal(pe.forward(pp, x)[0], x + pp["W"][:5])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("heads", [1, 2, 3])
def test_attention_matches_jax_dot_product_attention(heads, bias):
    """jax.nn.dot_product_attention with is_causal, and nanoGPT's q, k, v and head layout;
    without biases, params W_qkv and W_o only."""
    rng = np.random.default_rng(heads)
    n, t, c = 2, 7, 6
    att = tf.CausalSelfAttention(heads, bias=bias)
    _, p = att.init(0, (-1, t, c), dtype=np.float64)
    assert set(p) == ({"W_qkv", "b_qkv", "W_o", "b_o"} if bias else {"W_qkv", "W_o"})
    p = {k: rng.standard_normal(v.shape) for k, v in p.items()}
    x = rng.standard_normal((n, t, c))
    qkv = x @ p["W_qkv"] + p.get("b_qkv", 0)
    q, k, v = (a.reshape(n, t, heads, c // heads) for a in np.split(qkv, 3, axis=-1))
    y = jax.nn.dot_product_attention(q, k, v, is_causal=True).reshape(n, t, c)
    want = np.asarray(y) @ p["W_o"] + p.get("b_o", 0)
    # dot_product_attention takes its softmax in float32, whatever the input's dtype.
    np.testing.assert_allclose(att.forward(p, x)[0], want, rtol=1e-4, atol=1e-5)
    # Causality: changing the last position changes no earlier output.
    x2 = x.copy()
    x2[:, -1] += 1.0
    np.testing.assert_array_equal(att.forward(p, x2)[0][:, :-1], att.forward(p, x)[0][:, :-1])


def test_float32_stays_float32_and_jit_runs():
    layer = fn.pipeline(
        tf.LayerNorm(), tf.CausalSelfAttention(2), tf.Gelu(), tf.PositionalEmbedding()
    )
    _, p = layer.init(0, (-1, 4, 8))
    x = np.random.default_rng(0).standard_normal((3, 4, 8)).astype(np.float32)
    y, cache = layer.forward(p, x)
    assert y.dtype == np.float32
    dp, dx = layer.backward(cache, np.ones_like(y))
    assert dx.dtype == np.float32
    assert all(a.dtype == np.float32 for a in jax.tree_util.tree_leaves(dp))
    yj = jax.jit(lambda p, x: layer.forward(p, x)[0])(jax.device_put(p), x)
    np.testing.assert_allclose(np.asarray(yj), y, rtol=2e-5, atol=2e-5)


# --------------------------------------------------------------------------- edges


def test_extreme_inputs_stay_finite():
    big = np.array([[[-1e30, -50.0, -20.0, 0.0, 20.0, 50.0, 1e30, 3e38]]], dtype=np.float32)
    for approximate in (True, False):
        g = tf.Gelu(approximate=approximate)
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            y, cache = g.forward((), big)
            _, dx = g.backward(cache, np.ones_like(big))
        assert np.isfinite(y).all() and np.isfinite(dx).all()
        np.testing.assert_array_equal(y[0, 0, [0, 1, 5, 6, 7]], np.float32([0, 0, 50, 1e30, 3e38]))
        np.testing.assert_array_equal(dx[0, 0, [0, 1, 5, 6, 7]], [0, 0, 1, 1, 1])
    att = tf.CausalSelfAttention(2)
    _, p = att.init(0, (-1, 5, 4))
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32) * 1e4
    y, cache = att.forward(p, x)
    dp, dx = att.backward(cache, np.ones_like(y))
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    assert all(np.isfinite(a).all() for a in dp.values())
    ln = tf.LayerNorm()
    _, p = ln.init(0, (-1, 4))
    x = np.array([[1e4, 1e4, 1e4, 1e4], [1e-30, 0, 0, 0]], dtype=np.float32)
    y, cache = ln.forward(p, x)
    assert np.isfinite(y).all() and np.isfinite(ln.backward(cache, np.ones_like(y))[1]).all()


def test_bad_input_names_the_layer_and_the_shapes():
    with pytest.raises(ValueError, match=r"CausalSelfAttention\(3\): .*multiple of 3 heads"):
        tf.CausalSelfAttention(3).init(0, (-1, 4, 8))
    att = tf.CausalSelfAttention(2)
    _, p = att.init(0, (-1, 4, 8))
    with pytest.raises(ValueError, match=r"expected input shape \(N, T, 8\), got \(2, 4, 6\)"):
        att.forward(p, np.zeros((2, 4, 6), np.float32))
    with pytest.raises(TypeError, match=r"CausalSelfAttention.*float64"):
        att.forward(p, np.zeros((2, 4, 8)))
    pe = tf.PositionalEmbedding(4)
    _, pp = pe.init(0, (-1, 4, 8))
    with pytest.raises(ValueError, match=r"PositionalEmbedding\(4\): .*T ≤ 4.*got \(1, 5, 8\)"):
        pe.forward(pp, np.zeros((1, 5, 8), np.float32))
    with pytest.raises(ValueError, match="exceeds the context 4"):
        pe.init(0, (-1, 5, 8))
    ln = tf.LayerNorm()
    _, lp = ln.init(0, (-1, 8))
    with pytest.raises(ValueError, match=r"LayerNorm: expected input shape \(N, ..., 8\)"):
        ln.forward(lp, np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="heads must be a positive int"):
        tf.CausalSelfAttention(0)
    with pytest.raises(ValueError, match=r"LayerNorm: backward expected dout of shape"):
        ln.backward(ln.forward(lp, np.zeros((2, 8), np.float32))[1], np.zeros((2, 7), np.float32))


def test_params_of_the_other_layout_are_refused_naming_the_keys():
    """A bias-free layer given biased params (or the reverse), and a wrong shape."""
    _, biased = tf.CausalSelfAttention(2).init(0, (-1, 4, 8))
    bare = tf.CausalSelfAttention(2, bias=False)
    with pytest.raises(
        ValueError, match=r"bias=False\): expected params with keys \['W_o', 'W_qkv'\]"
    ):
        bare.forward(biased, np.zeros((1, 4, 8), np.float32))
    _, p = bare.init(0, (-1, 4, 8))
    with pytest.raises(
        ValueError,
        match=r"expected params W_qkv \(8, 24\), W_o \(8, 8\), got W_qkv \(8, 24\), W_o \(8, 4\)",
    ):
        bare.forward({**p, "W_o": p["W_o"][:, :4]}, np.zeros((1, 4, 8), np.float32))
    with pytest.raises(
        ValueError,
        match=r"LayerNorm: expected params with keys \['beta', 'gamma'\], got \['gamma'\]",
    ):
        tf.LayerNorm().forward({"gamma": np.ones(8, np.float32)}, np.zeros((2, 8), np.float32))
