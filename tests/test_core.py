"""The pipeline combinator, deterministic init, to_jax (custom_vjp) and jit of a whole step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn


def _net():
    return fn.pipeline(
        fn.Flatten(), fn.pipeline(fn.Dense(8), fn.Sigmoid()), fn.Dense(5), fn.Relu(), fn.Dense(3)
    )


def test_pipeline_threads_shapes_and_is_itself_checkable():
    net = _net()
    out_shape, params = net.init(0, (-1, 2, 3), dtype=np.float64)
    assert out_shape == (-1, 3)
    assert isinstance(params, tuple) and len(params) == 5 and len(params[1]) == 2
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    report = fn.check_layer(net, params, x)
    assert report.ok
    leaves = ["params[1][0].W", "params[1][0].b", "params[2].W", "params[2].b", "params[4].W",
              "params[4].b"]  # fmt: skip
    # The gradients, then the parameter gradients again with need_dx=False (training's mode).
    assert [r.what for r in report.rows if r.versus == "jax"][1:] == [
        *leaves,
        "x",
        *(f"{leaf} (need_dx=False)" for leaf in leaves),
    ]


def test_init_is_deterministic_from_the_seed_and_children_differ():
    net = fn.pipeline(fn.Dense(4), fn.Dense(4))
    _, a = net.init(7, (-1, 4))
    _, b = net.init(7, (-1, 4))
    _, c = net.init(8, (-1, 4))
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(a[0]["W"], c[0]["W"])
    assert not np.array_equal(a[0]["W"], a[1]["W"])
    _, g = net.init(np.random.default_rng(7), (-1, 4))
    assert g[0]["W"].dtype == np.float32


def test_pipeline_errors_say_which_layer():
    net = fn.pipeline(fn.Dense(4), fn.Relu(), fn.Dense(2))
    _, params = net.init(0, (-1, 3))
    with pytest.raises(ValueError, match=r"pipeline\[0\]: Dense\(4\).*\(N, \.\.\., 3\)"):
        net.forward(params, np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"expected a tuple of 3 params.*length 2"):
        net.forward(params[:2], np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match=r"argument 1 is a function, not a Layer"):
        fn.pipeline(fn.Dense(3), fn.Relu)
    with pytest.raises(ValueError, match=r"pipeline\[1\]: Flatten.*\(N,\)"):
        fn.pipeline(fn.Relu(), fn.Flatten()).init(0, (-1,))


def test_need_dx_false_skips_only_the_first_input_gradient():
    net = _net()
    _, params = net.init(1, (-1, 2, 3))
    x = np.random.default_rng(1).standard_normal((4, 2, 3)).astype(np.float32)
    out, cache = net.forward(params, x)
    dout = np.ones_like(out)
    dp, dx = net.backward(cache, dout)
    dp2, none = net.backward(cache, dout, need_dx=False)
    assert none is None and dx.shape == x.shape
    jax.tree_util.tree_map(np.testing.assert_array_equal, dp2, dp)


def test_forward_does_not_mutate_inputs():
    net = _net()
    _, params = net.init(2, (-1, 2, 3))
    x = np.random.default_rng(2).standard_normal((4, 2, 3)).astype(np.float32)
    saved = jax.tree_util.tree_map(np.copy, (params, x))
    out, cache = net.forward(params, x)
    net.backward(cache, np.ones_like(out))
    jax.tree_util.tree_map(np.testing.assert_array_equal, (params, x), saved)


def test_jitted_forward_backward_of_a_pipeline_equals_numpy():
    net = _net()
    _, params = net.init(3, (-1, 2, 3))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    t = rng.integers(0, 3, 6)

    def step(params, x, t):
        out, cache = net.forward(params, x)
        loss, lcache = fn.softmax_cross_entropy.forward(out, t)
        dparams, _ = net.backward(cache, fn.softmax_cross_entropy.backward(lcache), need_dx=False)
        return loss, dparams

    loss_np, dp_np = step(params, x, t)
    to_j = lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)  # noqa: E731
    loss_j, dp_j = jax.jit(step)(to_j(params), jnp.asarray(x), jnp.asarray(t))
    np.testing.assert_allclose(loss_j, loss_np, rtol=1e-5)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), dp_j, dp_np
    )
    # and the hand-written gradient is the true one (jitted: one program, not one per op)
    ref = jax.jit(jax.grad(lambda p: step(p, x, t)[0]))(to_j(params))
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), dp_j, ref
    )


def test_to_jax_uses_the_hand_written_backward():
    layer = fn.Dense(3)
    _, params = layer.init(0, (-1, 4), dtype=np.float64)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 4)))
    apply = fn.to_jax(layer)
    loss = lambda p, x: jnp.sum(jnp.sin(apply(p, x)))  # noqa: E731
    ref = lambda p, x: jnp.sum(jnp.sin(layer.forward(p, x)[0]))  # noqa: E731
    g, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    rg, rgx = jax.grad(ref, argnums=(0, 1))(params, x)
    np.testing.assert_allclose(gx, rgx, rtol=1e-12)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), g, rg)

    # A deliberately doubled backward shows up in jax.grad: custom_vjp really is used.
    doubled = layer._replace(
        backward=lambda c, d, **kw: jax.tree_util.tree_map(lambda a: 2 * a, layer.backward(c, d))
    )
    g2, _ = jax.grad(lambda p, x: jnp.sum(jnp.sin(fn.to_jax(doubled)(p, x))), argnums=(0, 1))(
        params, x
    )
    np.testing.assert_allclose(g2["W"], 2 * rg["W"], rtol=1e-12)


def test_split_rng_accepts_seeds_generators_and_jax_keys():
    from funcnet._arrays import as_rng

    a = [as_rng(r).standard_normal() for r in fn.split_rng(5, 3)]
    b = [as_rng(r).standard_normal() for r in fn.split_rng(5, 3)]
    assert a == b and len(set(a)) == 3
    nested = [as_rng(r).standard_normal() for r in fn.split_rng(fn.split_rng(5, 3)[0], 2)]
    assert len(set(nested + a)) == 5
    spawned = [g.standard_normal() for g in np.random.default_rng(5).spawn(3)]
    assert spawned == a  # the tuple seeds name exactly the streams that spawn() gives
    gens = fn.split_rng(np.random.default_rng(5), 2)
    assert all(isinstance(g, np.random.Generator) for g in gens)
    keys = fn.split_rng(jax.random.key(0), 2)
    assert len(keys) == 2
    assert fn.split_rng(None, 2) == [None, None]


def test_residual_and_concat_route_running_state_and_refuse_bad_shapes():
    bn = fn.pipeline(fn.MatMul(4), fn.BatchNorm())
    net = fn.pipeline(fn.residual(bn), fn.concat(fn.Dense(2), fn.BatchNorm(), axis=-1))
    out_shape, params = net.init(0, (-1, 4))
    assert out_shape == (-1, 6)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    out, cache = net.forward(params, x, train=True)
    assert out.shape == (5, 6)
    new = fn.update_state(params, cache)
    # Both BatchNorms got their batch statistics: the one inside residual, the one in concat.
    for old, fresh in ((params[0][1], new[0][1]), (params[1][1], new[1][1])):
        assert not np.allclose(old["state"]["mean"], fresh["state"]["mean"])
    dparams, dx = net.backward(cache, np.ones_like(out), need_dx=False)
    assert dx is None and jax.tree.structure(dparams) == jax.tree.structure(fn.trainable(params))
    with pytest.raises(ValueError, match=r"residual\(Dense\(3\)\): the layer maps \(N, 4\) to"):
        fn.residual(fn.Dense(3)).init(0, (-1, 4))
    with pytest.raises(ValueError, match="differ off axis 1"):
        fn.concat(fn.Conv(2, 1), fn.Conv(2, 3)).init(0, (-1, 1, 5, 5))
    with pytest.raises(
        ValueError, match=r"dout with 6 entries along axis -1 \(the branches' \[2, 4\]\)"
    ):
        net.backward(cache, np.ones((5, 5), np.float32))
    with pytest.raises(ValueError, match="non-batch axis"):
        fn.concat(fn.Dense(2), axis=0)
    with pytest.raises(TypeError, match="argument 1 is a function"):
        fn.concat(fn.Dense(2), fn.Dense)


def test_concat_runs_under_jit_and_to_jax():
    net = fn.pipeline(fn.concat(fn.Dense(3), fn.pipeline(fn.Dense(2), fn.Tanh())), fn.Dense(1))
    _, params = net.init(1, (-1, 4))
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    want = net.forward(params, x)[0]
    got = jax.jit(lambda p, x: net.forward(p, x)[0])(jax.device_put(params), jnp.asarray(x))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    apply = fn.to_jax(net)
    g = jax.grad(lambda p: apply(p, jnp.asarray(x)).sum())(jax.device_put(params))
    hand, _ = net.backward(net.forward(params, x)[1], np.ones_like(want))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g, hand)
