"""Dropout, BatchNorm (running state threaded explicitly) and L2 weight decay."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet import optim, train
from funcnet.stateful import BatchNorm, Dropout


def test_dropout_train_mask_scale_and_gradient_vs_jax():
    layer = Dropout(0.3)
    x = np.random.default_rng(0).standard_normal((64, 50))
    out, (mask, _) = layer.forward((), x, train=True, rng=7)
    kept = mask != 0
    np.testing.assert_allclose(out[kept], x[kept] / 0.7, rtol=1e-15)
    assert np.all(out[~kept] == 0) and abs(kept.mean() - 0.7) < 0.03
    # The same seed gives the same mask in every forward, so jax.vjp sees the same function.
    fn.check_layer(layer, (), x, forward_kwargs={"train": True, "rng": 7})
    out2, _ = layer.forward((), x, train=True, rng=7)
    np.testing.assert_array_equal(out, out2)


def test_dropout_eval_is_identity_and_train_without_rng_is_an_error():
    layer = Dropout(0.5)
    x = np.ones((2, 3), np.float32)
    out, cache = layer.forward((), x)
    assert out is x and layer.backward(cache, x)[1] is x
    jout, _ = jax.jit(layer.forward)((), jnp.asarray(x))  # the eval cache is JAX-typed
    np.testing.assert_array_equal(jout, x)
    with pytest.raises(ValueError, match=r"Dropout\(0.5\): train mode needs randomness"):
        layer.forward((), x, train=True)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got 1.0"):
        Dropout(1.0)


def test_dropout_scaled_at_eval_like_the_book_matches_jax():
    layer = Dropout(0.2, scale_at="eval")
    x = np.random.default_rng(0).standard_normal((16, 12))
    report = fn.check_layer(layer, (), x, forward_kwargs={"train": True, "rng": 3})
    assert report.ok
    fn.check_layer(layer, (), x, forward_kwargs={"train": False})
    out, _ = layer.forward((), x, train=False)
    np.testing.assert_allclose(out, 0.8 * x)
    out, (mask, _) = layer.forward((), x, train=True, rng=3)
    assert set(np.unique(mask)) == {0.0, 1.0}  # kept units are not rescaled
    with pytest.raises(ValueError, match="scale_at must be 'train' or 'eval'"):
        Dropout(0.2, scale_at="test")


def test_dropout_with_a_jax_key_under_jit_keeps_dtype_and_expectation():
    layer = Dropout(0.5)
    x = jnp.ones((200, 100), jnp.float32)
    f = jax.jit(lambda x, key: layer.forward((), x, train=True, rng=key)[0])
    out = f(x, jax.random.key(0))
    assert out.dtype == jnp.float32 and abs(float(out.mean()) - 1.0) < 0.02
    assert not np.array_equal(out, f(x, jax.random.key(1)))
    np.testing.assert_array_equal(out, f(x, jax.random.key(0)))


def _bn_params(c, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {
        "gamma": rng.standard_normal(c).astype(dtype),
        "beta": rng.standard_normal(c).astype(dtype),
        "mean": rng.standard_normal(c).astype(dtype),
        "var": rng.random(c).astype(dtype) + 0.5,
    }


@pytest.mark.parametrize("shape", [(2, 5), (3, 4), (64, 7), (2, 3, 4, 5), (3, 2, 1, 1)])
def test_batchnorm_train_backward_matches_jax(shape):
    layer = BatchNorm()
    params = _bn_params(shape[1], 0)
    x = np.random.default_rng(1).standard_normal(shape) * 3 + 1
    report = fn.check_layer(layer, params, x, forward_kwargs={"train": True})
    assert report.ok
    # train-mode output does not depend on the running statistics: zero gradient
    out, cache = layer.forward(params, x, train=True)
    dp, _ = layer.backward(cache, np.ones_like(out))
    assert not dp["mean"].any() and not dp["var"].any()


@pytest.mark.parametrize("shape", [(1, 4), (5, 3), (2, 3, 4, 4)])
def test_batchnorm_eval_forward_formula_and_backward(shape):
    layer = BatchNorm(eps=1e-5)
    params = _bn_params(shape[1], 2)
    x = np.random.default_rng(3).standard_normal(shape)
    out, _ = layer.forward(params, x)
    b = (1, -1) if len(shape) == 2 else (1, -1, 1, 1)
    p = {k: v.reshape(b) for k, v in params.items()}
    ref = p["gamma"] * (x - p["mean"]) / np.sqrt(p["var"] + 1e-5) + p["beta"]
    np.testing.assert_allclose(out, ref, rtol=1e-13)
    fn.check_layer(layer, params, x)


def test_batchnorm_train_stats_normalize_and_running_stats_are_returned_not_mutated():
    layer = BatchNorm(momentum=0.9)
    _, params = layer.init(0, (-1, 3, 4, 4))
    saved = jax.tree_util.tree_map(np.copy, params)
    x = np.random.default_rng(0).standard_normal((8, 3, 4, 4)).astype(np.float32) * 2 + 5
    out, cache = layer.forward(params, x, train=True)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, saved)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    new = fn.update_state(params, cache)
    np.testing.assert_allclose(new["mean"], 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * x.var(axis=(0, 2, 3)), rtol=1e-5)
    assert new["mean"].dtype == np.float32 and new["gamma"] is params["gamma"]


def test_batchnorm_errors():
    layer = BatchNorm()
    _, params = layer.init(0, (-1, 3))
    with pytest.raises(
        ValueError, match=r"BatchNorm: train mode needs a batch of at least 2.*\(1, 3\)"
    ):
        layer.forward(params, np.zeros((1, 3), np.float32), train=True)
    layer.forward(params, np.zeros((1, 3), np.float32))  # eval with batch 1 is fine
    with pytest.raises(ValueError, match=r"BatchNorm: expected input shape \(N, 3\).*\(4, 5\)"):
        layer.forward(params, np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm: expected an input shape \(N, D\)"):
        layer.init(0, (-1, 2, 3))


def test_update_state_threads_through_nested_pipelines_in_a_jitted_step():
    net = fn.pipeline(
        fn.Dense(6), fn.pipeline(BatchNorm(), fn.Relu(), Dropout(0.2)), fn.Dense(3), BatchNorm()
    )
    _, params = net.init(0, (-1, 4))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 4)).astype(np.float32)
    t = rng.integers(0, 3, 16)
    opt = optim.sgd(0.1)
    step = train.make_step(net, fn.softmax_cross_entropy, opt)
    p1, _, _ = step(params, opt.init(params), x, t, rng=(0, 1))
    assert p1[1][0]["mean"].any() and p1[3]["mean"].any()  # both running means moved
    jp = jax.tree_util.tree_map(jnp.asarray, params)
    key = jax.random.key(0)
    p2, _, loss2 = jax.jit(step)(jp, opt.init(jp), jnp.asarray(x), jnp.asarray(t), key)
    assert p2[1][0]["mean"].any() and np.isfinite(loss2)
    # Eval mode uses the running statistics: its output differs from the train-mode one.
    out_eval, _ = net.forward(p1, x)
    out_train, _ = net.forward(p1, x, train=True, rng=(0, 1))
    assert not np.allclose(out_eval, out_train)


def test_l2_penalty_and_its_gradient_vs_jax():
    net = fn.pipeline(fn.Dense(5), BatchNorm(), fn.Relu(), fn.Dense(3))
    _, params = net.init(0, (-1, 4), dtype=np.float64)
    value, cache = fn.l2_penalty.forward(params, 0.1)
    grads = fn.l2_penalty.backward(cache, 2.0)
    weights = [params[0]["W"], params[3]["W"]]
    np.testing.assert_allclose(value, 0.05 * sum(np.sum(w**2) for w in weights), rtol=1e-13)

    def ref(p):
        return 0.05 * (jnp.sum(p[0]["W"] ** 2) + jnp.sum(p[3]["W"] ** 2))

    expect = jax.tree_util.tree_map(lambda g: 2.0 * g, jax.grad(ref)(params))
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13, atol=0), grads, expect
    )


def test_weight_decay_in_the_step_adds_the_penalty_and_its_gradient():
    net = fn.pipeline(fn.Dense(5), fn.Relu(), fn.Dense(3))
    _, params = net.init(0, (-1, 4), dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((8, 4))
    t = np.arange(8) % 3
    opt = optim.sgd(1.0)
    plain = train.make_step(net, fn.softmax_cross_entropy, opt)
    decayed = train.make_step(net, fn.softmax_cross_entropy, opt, weight_decay=0.1)
    p0, _, l0 = plain(params, opt.init(params), x, t)
    p1, _, l1 = decayed(params, opt.init(params), x, t)
    penalty, _ = fn.l2_penalty.forward(params, 0.1)
    np.testing.assert_allclose(l1, l0 + penalty, rtol=1e-13)
    np.testing.assert_allclose(p0[0]["W"] - p1[0]["W"], 0.1 * params[0]["W"], atol=1e-14)
    np.testing.assert_array_equal(p0[0]["b"], p1[0]["b"])


@pytest.mark.parametrize(
    ("layer", "shape", "kw"),
    [
        (BatchNorm(), (6, 4), {"train": True}),
        (BatchNorm(), (2, 3, 4, 4), {"train": True}),
        (BatchNorm(), (5, 4), {}),
        (Dropout(0.3), (6, 5), {"train": True, "rng": 1}),
        (Dropout(0.3, scale_at="eval"), (6, 5), {}),
    ],
    ids=["bn-train", "bn-train-4d", "bn-eval", "dropout-train", "dropout-eval-scaled"],
)
def test_check_layer_catches_these_backwards_off_by_1e3(layer, shape, kw):
    _, params = layer.init(0, (-1, *shape[1:]), dtype=np.float64)
    params = _bn_params(shape[1], 4) if params else params
    x = np.random.default_rng(5).standard_normal(shape)
    assert fn.check_layer(layer, params, x, forward_kwargs=kw).ok

    def off(cache, dout, *, need_dx=True):
        dparams, dx = layer.backward(cache, dout, need_dx=need_dx)
        bumped = jax.tree_util.tree_map(lambda g: g * (1 + 1e-3), dparams)
        return bumped, dx * (1 + 1e-3)

    report = fn.check_layer(
        layer._replace(backward=off), params, x, forward_kwargs=kw, raise_on_failure=False
    )
    assert not report.ok
    assert not next(r for r in report.rows if r.what == "x").ok
