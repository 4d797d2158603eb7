"""Every built-in layer: backward vs jax.vjp (float64, random cotangents), forward vs an
independent reference, structure/dtype of dparams, errors, NumPy vs JAX."""

import warnings

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import funcnet as fn

SETTINGS = settings(max_examples=12, deadline=None)

# layer factory, independent reference forward(params, x) in jnp
LAYERS = {
    "Dense": (lambda n: fn.Dense(n), lambda p, x: jnp.einsum("...i,io->...o", x, p["W"]) + p["b"]),
    "MatMul": (lambda n: fn.MatMul(n), lambda p, x: jnp.einsum("...i,io->...o", x, p["W"])),
    "Bias": (lambda n: fn.Bias(), lambda p, x: x + p["b"]),
    "Relu": (lambda n: fn.Relu(), lambda p, x: jax.nn.relu(x)),
    "Sigmoid": (lambda n: fn.Sigmoid(), lambda p, x: jax.nn.sigmoid(x)),
    "Tanh": (lambda n: fn.Tanh(), lambda p, x: jnp.tanh(x)),
    "Softmax": (lambda n: fn.Softmax(), lambda p, x: jax.nn.softmax(x, axis=-1)),
    "Flatten": (lambda n: fn.Flatten(), lambda p, x: jnp.reshape(x, (x.shape[0], -1))),
}

shapes = st.lists(st.integers(1, 6), min_size=2, max_size=4).map(tuple)


def _init(layer, shape, seed, dtype=np.float64):
    in_shape = (-1, *shape[1:])
    out_shape, params = layer.init(seed, in_shape, dtype=dtype)
    x = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    if params:  # random non-zero params everywhere (a zero bias hides a missing gradient)
        params = jax.tree_util.tree_map(
            lambda a: np.random.default_rng(seed + 2).standard_normal(a.shape).astype(dtype),
            params,
        )
    return out_shape, params, x


@pytest.mark.parametrize("kind", sorted(LAYERS))
@SETTINGS
@given(shape=shapes, n_out=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_backward_matches_jax_and_forward_matches_reference(kind, shape, n_out, seed):
    make, reference = LAYERS[kind]
    layer = make(n_out)
    out_shape, params, x = _init(layer, shape, seed)
    out, _ = layer.forward(params, x)
    assert out.shape == tuple(x.shape[0] if d == -1 else d for d in out_shape)
    # Jitted: one compiled program per shape, where op-by-op JAX compiles every operation.
    np.testing.assert_allclose(out, jax.jit(reference)(params, x), rtol=1e-12, atol=1e-14)
    report = fn.check_layer(layer, params, x, seed=seed)
    assert report.ok and report.max_jax_rel <= 1e-9


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_dparams_match_params_structure_shapes_dtypes_float32(kind):
    layer = LAYERS[kind][0](3)
    _, params, x = _init(layer, (4, 5), 0, dtype=np.float32)
    out, cache = layer.forward(params, x)
    assert out.dtype == np.float32
    dout = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
    dparams, dx = layer.backward(cache, dout)
    assert jax.tree_util.tree_structure(dparams) == jax.tree_util.tree_structure(params)
    for g, p in zip(
        jax.tree_util.tree_leaves(dparams), jax.tree_util.tree_leaves(params), strict=True
    ):
        assert g.shape == p.shape and g.dtype == p.dtype
    assert dx.shape == x.shape and dx.dtype == np.float32
    dparams2, none = layer.backward(cache, dout, need_dx=False)
    assert none is None
    jax.tree_util.tree_map(np.testing.assert_array_equal, dparams2, dparams)


def _perturbed(layer, which):
    def backward(cache, dout, *, need_dx=True):
        dparams, dx = layer.backward(cache, dout, need_dx=need_dx)
        if which == "dx":
            return dparams, (None if dx is None else dx * (1 + 1e-3))
        return jax.tree_util.tree_map(lambda g: g * (1 + 1e-3), dparams), dx

    return layer._replace(backward=backward)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_check_layer_catches_a_backward_off_by_1e3(kind):
    layer = LAYERS[kind][0](3)
    _, params, x = _init(layer, (4, 5), 1)
    with pytest.raises(fn.GradcheckError, match="FAIL"):
        fn.check_layer(_perturbed(layer, "dx"), params, x)
    if params:
        report = fn.check_layer(_perturbed(layer, "dparams"), params, x, raise_on_failure=False)
        assert not report.ok
        # Wrong in both modes: the gradient rows and those of need_dx=False fail.
        wrong = [f"params.{k}" for k in sorted(params)]
        assert [r.what for r in report.rows if not r.ok] == wrong + [
            f"{w} (need_dx=False)" for w in wrong
        ]


def test_check_layer_flags_wrong_structure_shape_and_mutation():
    layer = fn.Dense(3)
    _, params, x = _init(layer, (4, 5), 2)

    def no_b(cache, dout, *, need_dx=True):
        dp, dx = layer.backward(cache, dout)
        return {"W": dp["W"]}, dx

    assert not fn.check_layer(layer._replace(backward=no_b), params, x, raise_on_failure=False).ok

    def mutating_forward(params, x, **kw):
        if isinstance(x, np.ndarray):  # JAX arrays cannot be mutated; NumPy ones can
            x[...] = 0.0
        return layer.forward(params, x, **kw)

    bad = layer._replace(forward=mutating_forward)
    report = fn.check_layer(bad, params, x, raise_on_failure=False)
    assert any(r.problem == "input was mutated" for r in report.rows)


def test_relu_gradient_at_zero_is_zero_like_the_book():
    _, cache = fn.Relu().forward((), np.array([[-1.0, 0.0, 2.0]]))
    _, dx = fn.Relu().backward(cache, np.ones((1, 3)))
    np.testing.assert_array_equal(dx, [[0.0, 0.0, 1.0]])


def test_extreme_inputs_stay_finite_without_warnings():
    big = np.array([[1e4, -1e4, 0.0], [-1e3, 1e3, 5.0]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for layer in (fn.Sigmoid(), fn.Softmax(), fn.Tanh(), fn.Relu()):
            out, cache = layer.forward((), big)
            _, dx = layer.backward(cache, np.ones_like(big))
            assert np.all(np.isfinite(out)) and np.all(np.isfinite(dx)), layer
        s, _ = fn.Sigmoid().forward((), np.array([[-1e3, 1e3]]))
        np.testing.assert_array_equal(s, [[0.0, 1.0]])
        np.testing.assert_allclose(fn.softmax(big)[0], [1.0, 0.0, 0.0])


def test_dense_errors_name_layer_and_shapes():
    layer = fn.Dense(4)
    _, params = layer.init(0, (-1, 3))
    with pytest.raises(ValueError, match=r"Dense\(4\).*\(N, \.\.\., 3\).*\(2, 5\)"):
        layer.forward(params, np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"Dense\(4\).*batch axis.*\(3,\)"):
        layer.forward(params, np.zeros(3, np.float32))
    with pytest.raises(TypeError, match=r"Dense\(4\).*float64.*float32"):
        layer.forward(params, np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"Dense\(4\).*floating-point.*int64"):
        layer.forward(params, np.zeros((2, 3), np.int64))
    # Each thing the forward's one quick test looks at, wrong on its own, gets the full check.
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"Dense\(4\): b shape \(5,\) does not match W's"):
        layer.forward({**params, "b": np.zeros(5, np.float32)}, x)
    with pytest.raises(TypeError, match=r"Dense\(4\): b dtype float64 does not match"):
        layer.forward({**params, "b": np.zeros(4)}, x)
    ints = {k: v.astype(np.int32) for k, v in params.items()}
    with pytest.raises(TypeError, match=r"Dense\(4\): expected a floating-point input .* int32"):
        layer.forward(ints, x.astype(np.int32))
    with pytest.raises(ValueError, match=r"Dense\(4\): expected params with keys \['W', 'b'\]"):
        layer.forward({"W": params["W"], "c": params["b"]}, x)
    _, cache = layer.forward(params, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"Dense\(4\).*dout of shape \(2, 4\), got \(2, 1\)"):
        layer.backward(cache, np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match=r"Dense\(0\)"):
        fn.Dense(0)


def test_activation_backward_rejects_broadcastable_dout():
    _, cache = fn.Relu().forward((), np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"Relu.*\(3, 4\).*\(1, 4\)"):
        fn.Relu().backward(cache, np.ones((1, 4)))


def test_dtype_is_kept_float32_end_to_end():
    net = fn.pipeline(fn.Flatten(), fn.Dense(7), fn.Sigmoid(), fn.Dense(3), fn.Softmax())
    _, params = net.init(0, (-1, 2, 5))
    assert all(p.dtype == np.float32 for p in jax.tree_util.tree_leaves(params))
    x = np.random.default_rng(0).standard_normal((4, 2, 5)).astype(np.float32)
    out, cache = net.forward(params, x)
    dparams, dx = net.backward(cache, np.ones_like(out))
    assert out.dtype == dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in jax.tree_util.tree_leaves(dparams))


def test_same_code_runs_on_jax_arrays_and_matches_numpy():
    net = fn.pipeline(fn.Dense(6), fn.Tanh(), fn.Dense(4), fn.Relu(), fn.Dense(3))
    _, params = net.init(3, (-1, 5))
    x = np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32)
    dout = np.random.default_rng(2).standard_normal((7, 3)).astype(np.float32)
    out_np, c = net.forward(params, x)
    dp_np, dx_np = net.backward(c, dout)
    jparams = jax.tree_util.tree_map(jnp.asarray, params)
    out_j, cj = net.forward(jparams, jnp.asarray(x))
    assert isinstance(out_j, jax.Array) and out_j.dtype == jnp.float32
    dp_j, dx_j = net.backward(cj, jnp.asarray(dout))
    np.testing.assert_allclose(out_j, out_np, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx_j, dx_np, rtol=1e-5, atol=1e-6)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), dp_j, dp_np
    )


@pytest.mark.parametrize(
    ("layer", "params", "says"),
    [
        (
            fn.Dense(3),
            {"W": np.zeros((2, 3), np.float32)},
            r"Dense\(3\): expected params with keys \['W', 'b'\], got \['W'\]",
        ),
        (
            fn.Dense(3),
            {"W": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32), "c": 1},
            r"got \['W', 'b', 'c'\]",
        ),
        (fn.MatMul(3), (), r"MatMul\(3\): expected params with keys \['W'\], got tuple"),
        (fn.Bias(), {"W": np.zeros(2, np.float32)}, r"Bias: expected params with keys \['b'\]"),
    ],
)
def test_params_with_missing_or_extra_keys_name_the_layer(layer, params, says):
    with pytest.raises(ValueError, match=says):
        layer.forward(params, np.zeros((1, 2), np.float32))


def test_zero_outside_is_where_bit_for_bit_with_inf_and_nan():
    """Relu's backward masks the bits of dout on NumPy; it must equal np.where exactly,
    an infinite or NaN dout where the mask is off included (inf * 0 would give NaN)."""
    from funcnet._arrays import zero_outside

    rng = np.random.default_rng(0)
    for dtype in (np.float16, np.float32, np.float64):
        x = rng.standard_normal((7, 9)).astype(dtype)
        x.reshape(-1)[::5] = np.inf
        x.reshape(-1)[1::7] = -np.inf
        x.reshape(-1)[2::11] = np.nan
        mask = rng.random((7, 9)) < 0.5
        for a, m in ((x, mask), (x[:, ::2], mask[:, ::2]), (x.T, mask.T)):  # strided too
            got, want = zero_outside(a, m), np.where(m, a, 0).astype(dtype)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got.view(f"u{a.itemsize}"), want.view(f"u{a.itemsize}"))
        assert np.array_equal(
            zero_outside(jnp.asarray(x), mask), jnp.where(mask, x, 0), equal_nan=True
        )


@pytest.mark.parametrize("shape", [(1000, 10), (64, 16), (63, 10), (64, 17), (5, 3), (0, 4)])
def test_row_reduce_is_the_plain_reduction_on_both_sides_of_its_rule(shape):
    """The loss reduces narrow rows through a transposed copy; the max must be the same
    bits (NaN and inf included), the sum the same within rounding, and JAX untouched."""
    from funcnet._arrays import row_reduce

    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    if x.size:
        x.reshape(-1)[::97] = np.inf
        x.reshape(-1)[5::101] = np.nan
    np.testing.assert_array_equal(row_reduce(x, "max"), x.max(axis=1, keepdims=True))
    finite = np.nan_to_num(x, nan=0.5, posinf=2.0)
    np.testing.assert_allclose(
        row_reduce(finite, "sum"), finite.sum(axis=1, keepdims=True), rtol=1e-6, atol=1e-6
    )
    assert row_reduce(x, "sum").shape == (shape[0], 1)
    assert isinstance(row_reduce(jnp.asarray(finite), "sum"), jax.Array)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (fn.Dense(5), (6, 4)), (fn.MatMul(5), (6, 4)), (fn.Bias(), (6, 4)),
        (fn.Flatten(), (2, 3, 4)), (fn.Relu(), (6, 4)), (fn.Sigmoid(), (6, 4)),
        (fn.Tanh(), (6, 4)), (fn.Softmax(), (6, 4)), (fn.BatchNorm(), (6, 4)),
        (fn.BatchNorm(), (2, 3, 4, 4)), (fn.Dropout(0.3), (6, 4)),
        (fn.Conv(3, 3, padding=1), (2, 2, 5, 5)), (fn.MaxPool(2), (2, 2, 4, 4)),
        (fn.AvgPool(2), (2, 2, 4, 4)),
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)  # fmt: skip
def test_backward_twice_from_one_cache_is_the_same_and_mutates_nothing(layer, shape):
    """The NumPy kernels write into their own temporaries: the cache, dout, params and x
    must come out untouched, so a second backward from the same cache agrees exactly."""
    _, params = layer.init(0, (-1, *shape[1:]))
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    for train in (True, False):
        out, cache = layer.forward(params, x, train=train, rng=2)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        saved = jax.tree_util.tree_map(np.copy, (params, x, cache, dout))
        first = layer.backward(cache, dout)
        second = layer.backward(cache, dout)
        jax.tree_util.tree_map(np.testing.assert_array_equal, first, second)
        jax.tree_util.tree_map(np.testing.assert_array_equal, (params, x, cache, dout), saved)


def test_loss_backward_twice_is_the_same_and_mutates_nothing():
    rng = np.random.default_rng(1)
    for t in (np.array([0, 2, 1, 1, 0, 2, 2, 1]), np.eye(3, dtype=np.float32)[[0, 1] * 4]):
        z = rng.standard_normal((8, 3)).astype(np.float32)
        _, lcache = fn.softmax_cross_entropy.forward(z, t)
        saved = jax.tree_util.tree_map(np.copy, (z, t, lcache))
        d1 = fn.softmax_cross_entropy.backward(lcache, 0.5)
        np.testing.assert_array_equal(d1, fn.softmax_cross_entropy.backward(lcache, 0.5))
        jax.tree_util.tree_map(np.testing.assert_array_equal, (z, t, lcache), saved)
