"""Losses: gradients vs jax.vjp (float64, random scalar cotangent), forward vs independent
references, extreme logits, and the errors for bad targets."""

import warnings

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings

import funcnet as fn

SETTINGS = settings(max_examples=15, deadline=None)


@st.composite
def logits_and_targets(draw):
    """(seed, logits (n, c) of scale 3, integer labels, the targets: labels or one-hot)."""
    n, c, seed = draw(st.integers(1, 7)), draw(st.integers(2, 6)), draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, c)) * 3
    labels = rng.integers(0, c, n)
    return seed, z, labels, (np.eye(c)[labels] if draw(st.booleans()) else labels)


@SETTINGS
@given(logits_and_targets())
def test_cross_entropy_matches_optax(case):
    _, z, labels, t = case
    loss, _ = fn.softmax_cross_entropy.forward(z, t)
    # One compiled program per shape (op by op, each of optax's operations compiles).
    ref = jax.jit(lambda z, i: optax.softmax_cross_entropy_with_integer_labels(z, i).mean())(
        z, labels
    )
    # Two float64 sums of log-probabilities near 1: they may differ by a few ulps of the
    # per-sample terms even where the mean itself is tiny (a loss of 6e-5 off by 1.5e-16).
    atol = 8 * np.finfo(np.float64).eps * max(1.0, float(np.abs(z).max()))
    np.testing.assert_allclose(loss, ref, rtol=1e-12, atol=atol)


@SETTINGS
@given(logits_and_targets())
def test_cross_entropy_backward_matches_jax_vjp(case):
    seed, z, _, t = case
    assert fn.check_loss(fn.softmax_cross_entropy, z, t, seed=seed).ok


def test_cross_entropy_soft_targets_match_optax():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 4))
    t = jax.nn.softmax(rng.standard_normal((5, 4)))
    loss, _ = fn.softmax_cross_entropy.forward(z, np.asarray(t))
    np.testing.assert_allclose(loss, optax.softmax_cross_entropy(z, t).mean(), rtol=1e-12)
    fn.check_loss(fn.softmax_cross_entropy, z, np.asarray(t))


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_mse_is_the_mean_and_its_gradient_is_the_true_one(shape, seed):
    rng = np.random.default_rng(seed)
    y, t = rng.standard_normal(shape), rng.standard_normal(shape)
    loss, cache = fn.mean_squared_error.forward(y, t)
    ref = jax.jit(lambda y, t: jnp.mean((y - t) ** 2))(y, t)
    np.testing.assert_allclose(loss, ref, rtol=1e-12)
    np.testing.assert_allclose(
        fn.mean_squared_error.backward(cache), 2 * (y - t) / y.size, rtol=1e-12
    )
    assert fn.check_loss(fn.mean_squared_error, y, t, seed=seed).ok


def test_check_loss_catches_a_gradient_off_by_1e3():
    bad = fn.softmax_cross_entropy._replace(
        backward=lambda c, d=1.0: fn.softmax_cross_entropy.backward(c, d) * (1 + 1e-3)
    )
    z = np.random.default_rng(0).standard_normal((4, 3))
    with pytest.raises(fn.GradcheckError):
        fn.check_loss(bad, z, np.array([0, 1, 2, 0]))


def test_dloss_scales_the_gradient():
    z = np.random.default_rng(0).standard_normal((4, 3))
    _, cache = fn.softmax_cross_entropy.forward(z, np.array([0, 1, 2, 0]))
    g1 = fn.softmax_cross_entropy.backward(cache)
    np.testing.assert_allclose(fn.softmax_cross_entropy.backward(cache, 2.5), 2.5 * g1)


def test_extreme_logits_are_finite_and_exact():
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, cache = fn.softmax_cross_entropy.forward(z, np.array([0, 0]))
        grad = fn.softmax_cross_entropy.backward(cache)
    # Row 1 is certain and right (loss 0); row 2 puts class 0 at 2e4 below the winner.
    np.testing.assert_allclose(loss, 1e4, rtol=1e-6)
    assert loss.dtype == np.float32 and np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [[0, 0, 0], [-0.5, 0, 0.5]], atol=1e-7)
    one_hot_loss, _ = fn.softmax_cross_entropy.forward(z, np.eye(3, dtype=np.float32)[[0, 0]])
    assert np.isfinite(one_hot_loss)  # 0 · log p is never evaluated as 0 · log 0


def test_loss_errors_name_the_loss_and_the_values():
    z = np.zeros((2, 3))
    ce = fn.softmax_cross_entropy
    with pytest.raises(ValueError, match=r"softmax_cross_entropy.*\[0, 2\].*\[0, 3\]"):
        ce.forward(z, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy.*\(2,\).*\(3,\)"):
        ce.forward(z, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy.*\(2, 3\).*\(2, 4\)"):
        ce.forward(z, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy.*2-D.*\(6,\)"):
        ce.forward(np.zeros(6), np.array([0]))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy.*logits.*1 non-finite"):
        ce.forward(np.array([[0.0, np.nan, 1.0], [0, 0, 0]]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"mean_squared_error.*\(3, 1\).*\(3,\)"):
        fn.mean_squared_error.forward(np.zeros(3), np.zeros((3, 1)))


def test_losses_trace_under_jit_on_jax_arrays():
    z = jnp.asarray(np.random.default_rng(1).standard_normal((6, 4)), dtype=jnp.float32)
    t = jnp.array([0, 1, 2, 3, 0, 1])

    @jax.jit
    def f(z, t):
        loss, cache = fn.softmax_cross_entropy.forward(z, t)
        return loss, fn.softmax_cross_entropy.backward(cache)

    loss, g = f(z, t)
    ref_loss, ref_g = jax.value_and_grad(
        lambda z: optax.softmax_cross_entropy_with_integer_labels(z, t).mean()
    )(z)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(g, ref_g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["labels", "one-hot", "mse"])
def test_losses_under_jit_with_targets_the_function_captured(kind):
    """Targets held by the jitted function itself (a JAX array it closes over) are concrete,
    but what the trace computes from them is not: the target checks must not ask for the
    values of those results (they raised ConcretizationTypeError)."""
    rng = np.random.default_rng(2)
    z = rng.standard_normal((5, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 1, 0])
    loss, t = {
        "labels": (fn.softmax_cross_entropy, labels),
        "one-hot": (fn.softmax_cross_entropy, np.eye(3, dtype=np.float32)[labels]),
        "mse": (fn.mean_squared_error, rng.standard_normal((5, 3)).astype(np.float32)),
    }[kind]
    captured = jnp.asarray(t)

    @jax.jit
    def value_and_dz(z):
        value, cache = loss.forward(z, captured)
        return value, loss.backward(cache)

    value, dz = value_and_dz(jnp.asarray(z))
    ref_value, ref_cache = loss.forward(z, t)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    np.testing.assert_allclose(dz, loss.backward(ref_cache), rtol=1e-5, atol=1e-7)
    # Outside a trace the checks still see the values of a JAX array.
    bad = jnp.asarray(np.where(labels == 2, 3, labels)) if kind == "labels" else None
    if bad is not None:
        with pytest.raises(ValueError, match=r"labels must be in \[0, 2\].*\[0, 3\]"):
            loss.forward(jnp.asarray(z), bad)
