"""Graph nodes (chapter 5), numerical_gradient and gradient_descent (chapter 4)."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import funcnet as fn

broadcast_pairs = st.sampled_from(
    [((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 4), (3, 1)), ((2, 3, 4), (1, 4)), ((), (2, 3)),
     ((5, 1), (1, 6)), ((4,), ())]
)  # fmt: skip


@settings(max_examples=20, deadline=None)
@given(shapes=broadcast_pairs, seed=st.integers(0, 2**16), node=st.sampled_from(["mul", "add"]))
def test_nodes_match_jax_under_broadcasting(shapes, seed, node):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    n = getattr(fn, node)
    out, cache = n.forward(x, y)
    g = rng.standard_normal(np.shape(out))
    dx, dy = n.backward(cache, g)
    ref_f = (lambda a, b: a * b) if node == "mul" else (lambda a, b: a + b)
    out_ref, vjp = jax.vjp(ref_f, jnp.asarray(x), jnp.asarray(y))
    rx, ry = vjp(jnp.asarray(g))
    np.testing.assert_allclose(out, out_ref, rtol=1e-14)
    assert np.shape(dx) == np.shape(x) and np.shape(dy) == np.shape(y)
    np.testing.assert_allclose(dx, rx, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dy, ry, rtol=1e-12, atol=1e-14)


def test_nodes_on_python_scalars():
    out, cache = fn.mul.forward(3.0, 4.0)
    assert out == 12.0 and fn.mul.backward(cache, 2.0) == (8.0, 6.0)
    out, cache = fn.add.forward(3.0, 4.0)
    assert out == 7.0 and fn.add.backward(cache, 2.0) == (2.0, 2.0)


def test_numerical_gradient_of_arrays_pytrees_and_ints_without_mutation():
    f = lambda x: np.sum(x**3)  # noqa: E731
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    saved = x.copy()
    np.testing.assert_allclose(fn.numerical_gradient(f, x, h=1e-5), 3 * x**2, rtol=1e-8)
    np.testing.assert_array_equal(x, saved)
    # integers are cast to float (the book's version would step by h=0 on int arrays)
    xi = np.array([3, 4])
    g = fn.numerical_gradient(lambda v: v[0] ** 2 + v[1] ** 2, xi)
    np.testing.assert_allclose(g, [6.0, 8.0], rtol=1e-9)
    assert xi.dtype.kind == "i" and list(xi) == [3, 4]
    tree = {"a": np.array([1.0, 2.0]), "b": (np.array(3.0),)}
    gt = fn.numerical_gradient(lambda t: np.sum(t["a"] ** 2) * t["b"][0], tree)
    np.testing.assert_allclose(gt["a"], [6.0, 12.0], rtol=1e-8)
    np.testing.assert_allclose(gt["b"][0], 5.0, rtol=1e-8)


def test_seed_gradient_descent_numbers():
    f = lambda x: x[0] ** 2 + x[1] ** 2  # noqa: E731
    x0 = np.array([-3.0, 4.0])
    x, hist = fn.gradient_descent(f, x0, lr=0.1, steps=20)
    assert list(x0) == [-3.0, 4.0]
    assert (round(x[0], 4), round(x[1], 4)) == (-0.0346, 0.0461)
    # exact: each step multiplies x by (1 − 2·lr) = 0.8, so f = 25 · 0.8^40 = 0.0033231
    np.testing.assert_allclose(hist.values[-1], 25 * 0.8**40, rtol=1e-9)
    assert len(hist.points) == 21 and hist.values[0] == 25.0
    xj, _ = fn.gradient_descent(f, x0, lr=0.1, steps=20, grad=jax.grad(f))
    np.testing.assert_allclose(xj, x, rtol=1e-9)


def test_gradient_descent_rejects_negative_steps():
    with pytest.raises(ValueError, match="steps must be >= 0"):
        fn.gradient_descent(lambda x: x, np.zeros(1), steps=-1)
