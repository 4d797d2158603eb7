"""Dropout, BatchNorm (running state threaded explicitly) and L2 weight decay."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet import optim, train
from funcnet.layers import BatchNorm, Dropout


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
        "state": {
            "mean": rng.standard_normal(c).astype(dtype),
            "var": rng.random(c).astype(dtype) + 0.5,
        },
    }


@pytest.mark.parametrize("shape", [(2, 5), (3, 4), (64, 7), (2, 3, 4, 5), (3, 2, 1, 1)])
def test_batchnorm_train_backward_matches_jax(shape):
    layer = BatchNorm()
    params = _bn_params(shape[1], 0)
    x = np.random.default_rng(1).standard_normal(shape) * 3 + 1
    report = fn.check_layer(layer, params, x, forward_kwargs={"train": True})
    assert report.ok
    # The running statistics are state, not trained: the gradient has only gamma and beta.
    out, cache = layer.forward(params, x, train=True)
    dp, _ = layer.backward(cache, np.ones_like(out))
    assert set(dp) == {"gamma", "beta"}


@pytest.mark.parametrize("shape", [(1, 4), (5, 3), (2, 3, 4, 4)])
def test_batchnorm_eval_forward_formula_and_backward(shape):
    layer = BatchNorm(eps=1e-5)
    params = _bn_params(shape[1], 2)
    x = np.random.default_rng(3).standard_normal(shape)
    out, _ = layer.forward(params, x)
    b = (1, -1) if len(shape) == 2 else (1, -1, 1, 1)
    p = {k: v.reshape(b) for k, v in {**params, **params["state"]}.items() if k != "state"}
    ref = p["gamma"] * (x - p["mean"]) / np.sqrt(p["var"] + 1e-5) + p["beta"]
    np.testing.assert_allclose(out, ref, rtol=1e-13)
    fn.check_layer(layer, params, x)
    # Eval mode: no gradient for the running statistics either (nothing would use it).
    assert set(layer.backward(layer.forward(params, x)[1], out)[0]) == {"gamma", "beta"}


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
    np.testing.assert_allclose(new["state"]["mean"], 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(new["state"]["var"], 0.9 + 0.1 * x.var(axis=(0, 2, 3)), rtol=1e-5)
    assert new["state"]["mean"].dtype == np.float32 and new["gamma"] is params["gamma"]


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
    p1, _, _ = step(params, opt.init(fn.trainable(params)), x, t, rng=(0, 1))
    # both running means moved
    assert p1[1][0]["state"]["mean"].any() and p1[3]["state"]["mean"].any()
    jp = jax.tree_util.tree_map(jnp.asarray, params)
    key = jax.random.key(0)
    p2, _, loss2 = jax.jit(step)(
        jp, opt.init(fn.trainable(jp)), jnp.asarray(x), jnp.asarray(t), key
    )
    assert p2[1][0]["state"]["mean"].any() and np.isfinite(loss2)
    # Eval mode uses the running statistics: its output differs from the train-mode one.
    out_eval, _ = net.forward(p1, x)
    out_train, _ = net.forward(p1, x, train=True, rng=(0, 1))
    assert not np.allclose(out_eval, out_train)


def test_an_unroutable_state_update_raises_instead_of_being_lost():
    bn = BatchNorm()

    def residual(layer):  # a hand-made combinator: dict params, cache shaped differently
        def init(rng, in_shape, dtype=np.float32):
            return layer.init(rng, in_shape, dtype)[0], {
                "inner": layer.init(rng, in_shape, dtype)[1]
            }

        def forward(params, x, *, train=False, rng=None):
            out, cache = layer.forward(params["inner"], x, train=train, rng=rng)
            return x + out, [cache]

        return fn.Layer("residual", init, forward, None)

    net = residual(bn)
    _, params = net.init(0, (-1, 3))
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    _, cache = net.forward(params, x, train=True)
    with pytest.raises(ValueError, match=r"update_state: the cache at params holds a StateUpdate"):
        fn.update_state(params, cache)
    # A StateUpdate aimed at params without a state entry is refused too.
    _, bn_cache = bn.forward(bn.init(0, (-1, 3))[1], x, train=True)
    with pytest.raises(ValueError, match=r"no 'state' entry"):
        fn.update_state({"gamma": 1}, bn_cache)
    # Eval caches carry no update: params come back as they were.
    _, eval_cache = net.forward(params, x)
    assert fn.update_state(params, eval_cache) is params


def test_make_step_routes_state_by_what_each_cache_holds():
    """The step decides per tree structure whether to route running state; a cache that
    carries a StateUpdate its params cannot hold must still raise, and a cache JAX cannot
    flatten must still train."""
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    t = np.arange(4) % 3

    def odd_cache(layer, extra):  # wraps a layer's cache with something of its own
        def forward(params, x, *, train=False, rng=None):
            out, cache = layer.forward(params, x, train=train, rng=rng)
            return out, (cache, extra)

        def backward(cache, dout, *, need_dx=True):
            return layer.backward(cache[0], dout, need_dx=need_dx)

        return fn.Layer("odd", layer.init, forward, backward)

    _, bn_cache = BatchNorm().forward(BatchNorm().init(0, (-1, 3))[1], x, train=True)
    stray = fn.pipeline(fn.Dense(3), odd_cache(fn.Relu(), bn_cache))  # params (), no state
    params = stray.init(0, (-1, 3))[1]
    step = train.make_step(stray, fn.softmax_cross_entropy, optim.sgd(0.1))
    for _ in range(2):  # the second call takes the remembered answer
        with pytest.raises(ValueError, match=r"update_state: the cache at params\[1\]"):
            step(params, optim.sgd(0.1).init(params), x, t)

    unsortable = {1: np.zeros(1), "a": np.zeros(1)}
    net = fn.pipeline(fn.Dense(3), BatchNorm(), odd_cache(fn.Relu(), unsortable))
    params = net.init(0, (-1, 3))[1]
    step = train.make_step(net, fn.softmax_cross_entropy, optim.sgd(0.1))
    new, _, _ = step(params, (optim.EmptyState(),), x, t)
    assert not np.array_equal(new[1]["state"]["mean"], params[1]["state"]["mean"])
    assert not np.array_equal(new[0]["W"], params[0]["W"])


def test_no_optimizer_decay_or_average_touches_running_statistics():
    net = fn.pipeline(fn.Dense(5), BatchNorm(), fn.Relu(), fn.Dense(3))
    _, params = net.init(0, (-1, 4), dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((8, 4))
    t = np.arange(8) % 3
    opt = optim.with_average(
        optim.chain(optim.add_decayed_weights(0.5), optim.adam(0.1)), decay=0.9
    )
    state = opt.init(fn.trainable(params))
    assert "state" not in str(jax.tree_util.tree_structure(state))
    step = train.make_step(net, fn.softmax_cross_entropy, opt)
    new, state, _ = step(params, state, x, t)
    # The running statistics are exactly the momentum update of the batch's, nothing else.
    h = x @ params[0]["W"] + params[0]["b"]
    np.testing.assert_allclose(new[1]["state"]["mean"], 0.1 * h.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(new[1]["state"]["var"], 0.9 + 0.1 * h.var(axis=0), rtol=1e-12)
    averaged = optim.averaged(state, fn.trainable(new))
    assert "state" not in averaged[1]


def test_weight_decay_is_one_transform_with_a_key_mask():
    net = fn.pipeline(fn.Dense(5), BatchNorm(), fn.Relu(), fn.Dense(3))
    _, params = net.init(0, (-1, 4), dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((8, 4))
    t = np.arange(8) % 3
    plain = optim.sgd(1.0)
    decayed = optim.chain(optim.add_decayed_weights(0.1, optim.key_mask("W")), optim.sgd(1.0))
    p0, _, l0 = train.make_step(net, optimizer=plain)(
        params, plain.init(fn.trainable(params)), x, t
    )
    p1, _, l1 = train.make_step(net, optimizer=decayed)(
        params, decayed.init(fn.trainable(params)), x, t
    )
    assert l0 == l1  # the decay changes the update, not the loss
    for i in (0, 3):
        np.testing.assert_allclose(p0[i]["W"] - p1[i]["W"], 0.1 * params[i]["W"], atol=1e-14)
        np.testing.assert_array_equal(p0[i]["b"], p1[i]["b"])
    np.testing.assert_array_equal(p0[1]["gamma"], p1[1]["gamma"])


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
        return bumped, (None if dx is None else dx * (1 + 1e-3))

    report = fn.check_layer(
        layer._replace(backward=off), params, x, forward_kwargs=kw, raise_on_failure=False
    )
    assert not report.ok
    assert not next(r for r in report.rows if r.what == "x").ok
