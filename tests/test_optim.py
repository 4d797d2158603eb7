"""Optimizers: step by step against optax, against the book's update rules, NumPy vs jit."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from funcnet import optim

tree_map = jax.tree_util.tree_map
tree_leaves = jax.tree_util.tree_leaves

STEPS = 50


@pytest.fixture(autouse=True)
def _x64():
    # Scoped to each test: a module-level config update would run at collection time and
    # switch every other test module in the session to float64 too.
    with jax.enable_x64(True):
        yield


# Nested dicts, tuples and lists, with matrices, a 4-d kernel, vectors and a 0-d leaf.
SHAPES = {"dense": {"W": (4, 3), "b": (3,)}, "conv": ((2, 3, 2, 2), [(5,), ()])}


def _is_shape(x):
    return isinstance(x, tuple) and all(isinstance(i, int) for i in x)


def random_tree(rng, dtype=np.float64, scale=1.0):
    return tree_map(
        lambda s: np.asarray(scale * rng.standard_normal(s), dtype=dtype), SHAPES, is_leaf=_is_shape
    )


def random_grads(seed, steps=STEPS, dtype=np.float64):
    """Random gradients, their size varying by 100x so that clipping sometimes triggers."""
    rng = np.random.default_rng(seed)
    return [random_tree(rng, dtype, scale=rng.choice([0.05, 0.5, 5.0])) for _ in range(steps)]


def run(opt, params, grads_seq, update=None, apply=optim.apply_updates):
    """The parameter trajectory of ``opt`` (funcnet or optax: same contract)."""
    update = update or opt.update
    state = opt.init(params)
    out = []
    for g in grads_seq:
        u, state = update(g, state, params)
        params = apply(params, u)
        out.append(params)
    return out, state


def to_jax(tree):
    return tree_map(jnp.asarray, tree)


def run_optax(opt, params, grads_seq):
    grads_seq = [to_jax(g) for g in grads_seq]
    return run(opt, to_jax(params), grads_seq, jax.jit(opt.update), optax.apply_updates)[0]


def assert_trees_close(a, b, rtol, atol=0.0):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(tree_leaves(a), tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def optax_f64(schedule):
    """optax.exponential_decay divides the int32 count in float32, even with x64 enabled."""
    return lambda count: schedule(jnp.asarray(count, jnp.float64))


def weights_only(params):
    return tree_map(lambda p: p.ndim > 1, params)


# (funcnet optimizer, the optax optimizer with the same maths)
AGAINST_OPTAX = {
    "sgd": (lambda: optim.sgd(0.1), lambda: optax.sgd(0.1)),
    "momentum": (lambda: optim.momentum(0.05), lambda: optax.sgd(0.05, momentum=0.9)),
    "nesterov": (
        lambda: optim.nesterov(0.05, beta=0.8),
        lambda: optax.sgd(0.05, momentum=0.8, nesterov=True),
    ),
    "adagrad-optax-defaults": (
        lambda: optim.adagrad(0.1, eps=1e-7, initial_accumulator_value=0.1, eps_in_sqrt=True),
        lambda: optax.adagrad(0.1),
    ),
    "adagrad-eps0": (
        lambda: optim.adagrad(0.1, eps=0.0),
        lambda: optax.adagrad(0.1, initial_accumulator_value=0.0, eps=0.0),
    ),
    "rmsprop-book-defaults": (
        lambda: optim.rmsprop(0.01),
        lambda: optax.rmsprop(0.01, decay=0.99, eps=1e-7, eps_in_sqrt=False),
    ),
    "rmsprop-optax-defaults": (
        lambda: optim.rmsprop(0.01, decay=0.9, eps=1e-8, eps_in_sqrt=True),
        lambda: optax.rmsprop(0.01),
    ),
    "adam": (lambda: optim.adam(1e-2), lambda: optax.adam(1e-2)),
    "adam-params": (
        lambda: optim.adam(3e-3, b1=0.8, b2=0.99, eps=1e-6),
        lambda: optax.adam(3e-3, b1=0.8, b2=0.99, eps=1e-6),
    ),
    "adamw": (
        lambda: optim.adamw(1e-2, weight_decay=0.1),
        lambda: optax.adamw(1e-2, weight_decay=0.1),
    ),
    "adamw-masked": (
        lambda: optim.adamw(1e-2, weight_decay=0.1, mask=weights_only),
        lambda: optax.adamw(1e-2, weight_decay=0.1, mask=weights_only),
    ),
    "clip+adam": (
        lambda: optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-2)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)),
    ),
    "l2+momentum": (
        lambda: optim.chain(optim.add_decayed_weights(1e-2), optim.momentum(0.05)),
        lambda: optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.05, momentum=0.9)),
    ),
    "momentum-cosine": (
        lambda: optim.momentum(optim.cosine_decay(0.05, 30, alpha=0.1)),
        lambda: optax.sgd(optax.cosine_decay_schedule(0.05, 30, alpha=0.1), momentum=0.9),
    ),
    "nesterov-step": (
        lambda: optim.nesterov(optim.step_decay(0.05, 10, 0.5)),
        lambda: optax.sgd(
            optax_f64(optax.exponential_decay(0.05, 10, 0.5, staircase=True)),
            momentum=0.9,
            nesterov=True,
        ),
    ),
    "adam-exponential": (
        lambda: optim.adam(optim.exponential_decay(1e-2, 0.9, 7)),
        lambda: optax.adam(optax_f64(optax.exponential_decay(1e-2, 7, 0.9))),
    ),
    "rmsprop-constant": (
        lambda: optim.rmsprop(optim.constant(0.01)),
        lambda: optax.rmsprop(
            optax.constant_schedule(0.01), decay=0.99, eps=1e-7, eps_in_sqrt=False
        ),
    ),
    "adamw-cosine": (
        lambda: optim.adamw(optim.cosine_decay(1e-2, 40), weight_decay=0.05),
        lambda: optax.adamw(optax.cosine_decay_schedule(1e-2, 40), weight_decay=0.05),
    ),
}


@pytest.mark.parametrize("name", AGAINST_OPTAX)
def test_matches_optax_step_by_step(name):
    ours, theirs = (make() for make in AGAINST_OPTAX[name])
    params = random_tree(np.random.default_rng(0))
    grads = random_grads(seed=1)
    expected = run_optax(theirs, params, grads)
    got, _ = run(ours, params, grads)
    for step, (a, b) in enumerate(zip(got, expected, strict=True)):
        try:
            assert_trees_close(a, b, rtol=1e-12, atol=1e-14)
        except AssertionError as e:
            raise AssertionError(f"{name}: step {step + 1}") from e


def test_clipping_triggers_in_the_comparison():
    norms = [np.sqrt(sum(np.sum(g * g) for g in tree_leaves(t))) for t in random_grads(seed=1)]
    assert min(norms) < 1.0 < max(norms)


# ------------------------------------------------------------------------ schedules

SCHEDULES = {
    "constant": (optim.constant(0.3), optax.constant_schedule(0.3)),
    "exponential": (
        optim.exponential_decay(0.1, 0.9, 7),
        optax_f64(optax.exponential_decay(0.1, 7, 0.9)),
    ),
    "exponential-staircase": (
        optim.exponential_decay(0.1, 0.9, 7, staircase=True),
        optax_f64(optax.exponential_decay(0.1, 7, 0.9, staircase=True)),
    ),
    "step": (
        optim.step_decay(0.1, 10, 0.5),
        optax.piecewise_constant_schedule(0.1, {10 * i: 0.5 for i in range(1, 20)}),
    ),
    "cosine": (optim.cosine_decay(0.1, 50), optax.cosine_decay_schedule(0.1, 50)),
    "cosine-alpha": (
        optim.cosine_decay(0.1, 50, alpha=0.2),
        optax.cosine_decay_schedule(0.1, 50, alpha=0.2),
    ),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_match_optax(name):
    ours, theirs = SCHEDULES[name]
    steps = range(0, 120)
    expected = np.array([theirs(jnp.int32(k)) for k in steps], dtype=np.float64)
    for as_step in (int, np.int32, jnp.int32):
        got = np.array([ours(as_step(k)) for k in steps], dtype=np.float64)
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-16)
    jitted = jax.jit(ours)
    got = np.array([jitted(jnp.int32(k)) for k in steps], dtype=np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-16)


def test_schedule_values_by_hand():
    assert optim.step_decay(1.0, 3, 0.5)(5) == 0.5
    assert optim.step_decay(1.0, 3, 0.5)(6) == 0.25
    assert np.isclose(optim.cosine_decay(2.0, 10)(5), 1.0)
    assert np.isclose(optim.cosine_decay(2.0, 10, alpha=0.1)(99), 0.2)


def test_schedules_reject_nonpositive_steps():
    with pytest.raises(ValueError, match="decay_steps"):
        optim.cosine_decay(0.1, 0)
    with pytest.raises(ValueError, match="transition_steps"):
        optim.step_decay(0.1, 0, 0.5)


def test_schedule_is_evaluated_at_0_1_2():
    seen = []

    def lr(step):
        seen.append(int(step))
        return 1.0

    opt = optim.sgd(lr)
    state = opt.init({"w": np.ones(2)})
    for _ in range(3):
        _, state = opt.update({"w": np.ones(2)}, state)
    assert seen == [0, 1, 2]


# ------------------------------------------------------------------------ the book's rules
# The book's optimizers, written as the in-place loops of its code (one array, one rule).


def book_momentum(theta, grads, lr, beta):
    v = np.zeros_like(theta)
    for g in grads:
        v = beta * v - lr * g
        theta = theta + v
    return theta


def book_nesterov(theta, grads, lr, beta):
    v = np.zeros_like(theta)
    for g in grads:
        v = beta * v - lr * g
        theta = theta + beta * beta * v - (1 + beta) * lr * g
    return theta


def nesterov_with_old_velocity(theta, grads, lr, beta):
    """θ_t = θ_{t-1} + β²·v_{t-1} - (1+β)·η·g_t;  v_t = β·v_{t-1} - η·g_t."""
    v = np.zeros_like(theta)
    for g in grads:
        theta = theta + beta * beta * v - (1 + beta) * lr * g
        v = beta * v - lr * g
    return theta


def book_adagrad(theta, grads, lr):
    h = np.zeros_like(theta)
    for g in grads:
        h = h + g * g
        theta = theta - lr * g / (np.sqrt(h) + 1e-7)
    return theta


def book_rmsprop(theta, grads, lr, decay):
    h = np.zeros_like(theta)
    for g in grads:
        h = decay * h + (1 - decay) * g * g
        theta = theta - lr * g / (np.sqrt(h) + 1e-7)
    return theta


def book_adam(theta, grads, lr, b1, b2, eps=1e-7):
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        m = m + (1 - b1) * (g - m)
        v = v + (1 - b2) * (g * g - v)
        theta = theta - lr_t * m / (np.sqrt(v) + eps)
    return theta


def final(opt, theta, grads):
    trajectory, _ = run(opt, theta, grads)
    return trajectory[-1]


@pytest.fixture
def book_problem():
    rng = np.random.default_rng(7)
    return rng.standard_normal(6), [rng.standard_normal(6) for _ in range(STEPS)]


def test_momentum_is_the_books_for_a_constant_lr(book_problem):
    theta, grads = book_problem
    expected = book_momentum(theta, grads, lr=0.05, beta=0.9)
    np.testing.assert_allclose(final(optim.momentum(0.05, 0.9), theta, grads), expected, 1e-12)


def test_adagrad_and_rmsprop_defaults_are_the_books(book_problem):
    theta, grads = book_problem
    np.testing.assert_allclose(
        final(optim.adagrad(0.1), theta, grads), book_adagrad(theta, grads, 0.1), rtol=1e-12
    )
    np.testing.assert_allclose(
        final(optim.rmsprop(0.01), theta, grads), book_rmsprop(theta, grads, 0.01, 0.99), 1e-12
    )


def test_book_adagrad_by_hand_differs_from_optax_defaults():
    # θ0 = 1, g = 2 then 1, η = 0.1: h = 4 then 5.
    theta = np.array(1.0)
    expected = 1.0 - 0.1 * 2 / (2 + 1e-7) - 0.1 * 1 / (np.sqrt(5.0) + 1e-7)
    got = final(optim.adagrad(0.1), theta, [np.array(2.0), np.array(1.0)])
    assert got == pytest.approx(expected, rel=1e-15)
    # optax: h0 = 0.1 and ε under the root.
    optax_default = 1.0 - 0.1 * 2 / np.sqrt(4.1 + 1e-7) - 0.1 * 1 / np.sqrt(5.1 + 1e-7)
    got = run_optax(optax.adagrad(0.1), theta, [np.array(2.0), np.array(1.0)])[-1]
    assert float(got) == pytest.approx(optax_default, rel=1e-12)
    assert abs(optax_default - expected) > 1e-3


def test_book_adam_is_adam_with_eps_moved(book_problem):
    theta, grads = book_problem
    # Same maths once ε is out of the picture ...
    np.testing.assert_allclose(
        final(optim.adam(1e-2, eps=0.0), theta, grads),
        book_adam(theta, grads, 1e-2, 0.9, 0.999, eps=0.0),
        rtol=1e-12,
    )
    # ... and the book's 1e-7 on √v_t is 1e-7/√(1-β2^t) on √v̂_t (checked at t = 1).
    g = [grads[0] * 1e-6]
    ours = final(optim.adam(1e-2, eps=1e-7 / np.sqrt(1 - 0.999)), theta, g)
    np.testing.assert_allclose(ours, book_adam(theta, g, 1e-2, 0.9, 0.999), rtol=1e-12)
    assert not np.allclose(final(optim.adam(1e-2), theta, g), ours, rtol=1e-6, atol=0)


def test_nesterov_uses_the_old_velocity_unlike_the_books_code(book_problem):
    theta, grads = book_problem
    ours = final(optim.nesterov(0.05, 0.9), theta, grads)
    np.testing.assert_allclose(ours, nesterov_with_old_velocity(theta, grads, 0.05, 0.9), 1e-12)
    assert not np.allclose(ours, book_nesterov(theta, grads, 0.05, 0.9))


def test_nesterov_by_hand():
    # g = 1 twice, η = 0.1, β = 0.9.  Here: m = 1, 1.9; u = -0.1·(1 + 0.9·m) = -0.19, -0.271.
    # The book's code: v = -0.1, -0.19; u = 0.81·v - 0.19 = -0.271, -0.3439.
    opt = optim.nesterov(0.1, 0.9)
    state = opt.init(np.array(0.0))
    u1, state = opt.update(np.array(1.0), state)
    u2, state = opt.update(np.array(1.0), state)
    assert (float(u1), float(u2)) == pytest.approx((-0.19, -0.271), rel=1e-14)
    assert book_nesterov(0.0, [1.0], 0.1, 0.9) == pytest.approx(-0.271, rel=1e-14)
    assert book_nesterov(0.0, [1.0, 1.0], 0.1, 0.9) == pytest.approx(-0.271 - 0.3439, rel=1e-14)


# ------------------------------------------------------------------------ NumPy, dtypes, jit

EVERY = {
    "sgd": lambda: optim.sgd(0.1),
    "momentum": lambda: optim.momentum(0.05),
    "nesterov": lambda: optim.nesterov(0.05),
    "adagrad": lambda: optim.adagrad(0.1),
    "rmsprop": lambda: optim.rmsprop(0.01),
    "adam": lambda: optim.adam(1e-2),
    "adamw": lambda: optim.adamw(1e-2, weight_decay=0.1, mask=weights_only),
    "clip+adam-cosine": lambda: optim.chain(
        optim.clip_by_global_norm(1.0), optim.adam(optim.cosine_decay(1e-2, 20))
    ),
    "l2+nesterov-step": lambda: optim.chain(
        optim.add_decayed_weights(1e-3), optim.nesterov(optim.step_decay(0.05, 5, 0.5))
    ),
    "rmsprop-exponential": lambda: optim.rmsprop(optim.exponential_decay(0.01, 0.95)),
    "adam-averaged": lambda: optim.with_average(optim.adam(1e-2), decay=0.9),
}


@pytest.mark.parametrize("name", EVERY)
def test_numpy_float32_stays_numpy_float32(name):
    opt = EVERY[name]()
    params = random_tree(np.random.default_rng(0), np.float32)
    trajectory, state = run(opt, params, random_grads(seed=1, steps=100, dtype=np.float32))
    for leaf in tree_leaves((trajectory[-1], state)):
        assert isinstance(leaf, np.ndarray | np.generic), type(leaf)
        assert leaf.dtype in (np.float32, np.int32), leaf.dtype
    assert all(np.all(np.isfinite(p)) for p in tree_leaves(trajectory[-1]))


def test_apply_updates_keeps_the_parameter_dtype():
    params = {"w": np.ones(3, np.float32), "n": jnp.ones(2, jnp.bfloat16)}
    updates = {"w": np.full(3, 0.5, np.float64), "n": jnp.full(2, 0.5, jnp.float32)}
    new = optim.apply_updates(params, updates)
    assert isinstance(new["w"], np.ndarray) and new["w"].dtype == np.float32
    assert isinstance(new["n"], jax.Array) and new["n"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(new["w"], 1.5)


@pytest.mark.parametrize("name", EVERY)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jit_matches_numpy(name, dtype):
    opt = EVERY[name]()
    params = random_tree(np.random.default_rng(0), dtype)
    grads = random_grads(seed=1, steps=20, dtype=dtype)
    expected, _ = run(opt, params, grads)
    # float32 with JAX's default config, as it runs outside the tests.
    with jax.enable_x64(dtype == np.float64):
        got, state = run(opt, to_jax(params), [to_jax(g) for g in grads], jax.jit(opt.update))
        assert all(isinstance(x, jax.Array) for x in tree_leaves((got[-1], state)))
        assert all(x.dtype == dtype for x in tree_leaves(got[-1]))
    rtol = 1e-4 if dtype == np.float32 else 1e-12
    for a, b in zip(got, expected, strict=True):
        assert_trees_close(a, b, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("name", EVERY)
def test_inputs_are_not_mutated(name):
    opt = EVERY[name]()
    rng = np.random.default_rng(0)
    params, grads = random_tree(rng), random_tree(rng)
    _, state = opt.update(grads, opt.init(params), params)  # nonzero moments and count
    frozen = (params, grads, state)
    for leaf in tree_leaves(frozen):
        if isinstance(leaf, np.ndarray):
            leaf.setflags(write=False)  # an in-place op would raise
    before = copy.deepcopy(frozen)
    updates, _ = opt.update(grads, state, params)
    optim.apply_updates(params, updates)
    assert_trees_close(frozen, before, rtol=0)


BLOCKS = {  # every building block, each as a user would make it
    "identity": optim.identity,
    "chain-empty": optim.chain,
    "scale": lambda: optim.scale(0.5),
    "scale-array": lambda: optim.scale(np.float32(0.5)),
    "scale_by_learning_rate": lambda: optim.scale_by_learning_rate(optim.constant(0.1)),
    "trace": lambda: optim.trace(0.9),
    "scale_by_rss": optim.scale_by_rss,
    "scale_by_rms": optim.scale_by_rms,
    "scale_by_adam": optim.scale_by_adam,
    "add_decayed_weights": lambda: optim.add_decayed_weights(0.1),
    "clip_by_global_norm": lambda: optim.clip_by_global_norm(1.0),
    "with_average": lambda: optim.with_average(optim.sgd(0.1)),
}


@pytest.mark.parametrize("name", [*EVERY, *BLOCKS])
def test_every_transformation_is_exactly_optaxs_pair_of_functions(name):
    """``GradientTransformation`` is ``(init, update)`` and nothing else, as optax's: a
    funcnet optimizer runs where an optax one does, and an optax one where funcnet's does."""
    opt = (EVERY.get(name) or BLOCKS[name])()
    assert optim.GradientTransformation._fields == ("init", "update")
    assert type(opt) is optim.GradientTransformation and len(opt) == 2
    assert optax.GradientTransformation(*opt).update is opt.update


@pytest.mark.parametrize("name", EVERY)
@pytest.mark.parametrize("tree", [(), {}, {"a": [], "b": ()}], ids=["tuple", "dict", "nested"])
def test_trees_without_leaves(name, tree):
    opt = EVERY[name]()
    state = opt.init(tree)
    updates, state = opt.update(tree, state, tree)
    assert updates == tree
    assert optim.apply_updates(tree, updates) == tree
    jax.jit(opt.update)(tree, state, tree)


# ------------------------------------------------------------------------ pieces


def test_clip_by_global_norm_by_hand():
    clip = optim.clip_by_global_norm(1.0)
    grads = {"a": np.array([3.0]), "b": (np.array([[4.0]]),)}
    clipped, _ = clip.update(grads, clip.init(grads))
    np.testing.assert_allclose(clipped["a"], [0.6])
    np.testing.assert_allclose(clipped["b"][0], [[0.8]])
    small = tree_map(lambda g: g / 10, grads)
    unchanged, _ = clip.update(small, clip.init(small))
    assert_trees_close(unchanged, small, rtol=0)  # exactly, below the threshold
    zero = tree_map(np.zeros_like, grads)
    assert_trees_close(clip.update(zero, clip.init(zero))[0], zero, rtol=0)


def test_add_decayed_weights_mask_prefix():
    params = {"W": np.ones((2, 2)), "b": np.ones(2)}
    grads = tree_map(np.zeros_like, params)
    wd = optim.add_decayed_weights(0.5, mask={"W": True, "b": False})
    updates, _ = wd.update(grads, wd.init(params), params)
    np.testing.assert_array_equal(updates["W"], 0.5)
    np.testing.assert_array_equal(updates["b"], 0.0)


@pytest.mark.parametrize(
    "opt", [optim.adamw(1e-3), optim.add_decayed_weights(1e-4)], ids=["adamw", "decay"]
)
def test_weight_decay_without_params_is_a_clear_error(opt):
    params = {"w": np.ones(3)}
    with pytest.raises(ValueError, match="needs the parameters"):
        opt.update(params, opt.init(params))


def test_states_are_readable_namedtuples():
    params = {"w": np.ones(3)}
    (adam_state, sched_state) = optim.adam(optim.constant(0.1)).init(params)
    assert isinstance(adam_state, optim.AdamState)
    assert adam_state.count.dtype == np.int32 and adam_state.count.shape == ()
    assert isinstance(sched_state, optim.ScheduleState)
    (m_state, _) = optim.momentum(0.1).init(params)
    assert isinstance(m_state, optim.MomentumState)
    np.testing.assert_array_equal(m_state.velocity["w"], 0.0)
    assert isinstance(optim.adagrad(0.1).init(params)[0], optim.AdaGradState)
    assert isinstance(optim.rmsprop(0.1).init(params)[0], optim.RMSPropState)


def test_by_name_builds_each_optimizer_with_its_defaults():
    tree = {"w": np.ones(3)}
    g = {"w": np.array([0.5, -1.0, 2.0])}
    cases = [
        ("SGD", optim.sgd), ("Momentum", optim.momentum), ("AdaGrad", optim.adagrad),
        ("rmsprop", optim.rmsprop), ("Adam", optim.adam), ("nesterov", optim.nesterov),
    ]  # fmt: skip
    for name, make in cases:
        a, b = optim.by_name(name, 0.1), make(0.1)
        ua, _ = a.update(g, a.init(tree), tree)
        ub, _ = b.update(g, b.init(tree), tree)
        np.testing.assert_array_equal(ua["w"], ub["w"])
    with pytest.raises(ValueError, match=r"unknown optimizer 'lbfgs'"):
        optim.by_name("lbfgs", 0.1)


# ------------------------------------------------------------------------ averaging


def test_with_average_leaves_the_updates_alone_and_averages_by_hand():
    beta = 0.8
    params = random_tree(np.random.default_rng(0))
    grads = random_grads(seed=1, steps=12)
    plain, _ = run(optim.adam(1e-2), params, grads)
    trajectory, state = run(optim.with_average(optim.adam(1e-2), beta), params, grads)
    for a, b in zip(trajectory, plain, strict=True):
        assert_trees_close(a, b, rtol=0)  # exactly the same path
    t = len(trajectory)
    weights = [beta ** (t - s) * (1 - beta) for s in range(1, t + 1)]
    assert sum(weights) == pytest.approx(1 - beta**t)
    expected = tree_map(
        lambda *leaves: sum(w * x for w, x in zip(weights, leaves, strict=True)) / (1 - beta**t),
        *trajectory,
    )
    assert_trees_close(optim.averaged(state), expected, rtol=1e-12)


def test_with_average_decay_zero_is_the_last_iterate_and_constants_stay_put():
    params = random_tree(np.random.default_rng(0))
    trajectory, state = run(optim.with_average(optim.sgd(0.1), 0.0), params, random_grads(1, 5))
    assert_trees_close(optim.averaged(state), trajectory[-1], rtol=1e-15)
    # With zero gradients θ never moves, and the bias correction makes the average θ exactly.
    zeros = [tree_map(np.zeros_like, params)] * 3
    _, state = run(optim.with_average(optim.sgd(0.1), 0.999), params, zeros)
    assert_trees_close(optim.averaged(state), params, rtol=1e-12)


def test_averaged_of_other_states_and_before_any_update():
    params = random_tree(np.random.default_rng(0))
    plain = optim.adam(1e-2)
    assert optim.averaged(plain.init(params), params) is params
    opt = optim.with_average(plain)
    assert optim.averaged(opt.init(params), params) is params
    with pytest.raises(ValueError, match="no update has been averaged yet"):
        optim.averaged(opt.init(params))
    with pytest.raises(ValueError, match="update needs params"):
        opt.update(params, opt.init(params))
    for bad in (1.0, -0.1, 2):
        with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
            optim.with_average(plain, bad)


def test_averaged_under_jit_matches_numpy_in_float32():
    opt = optim.with_average(optim.adam(1e-2), 0.9)
    params = random_tree(np.random.default_rng(0), np.float32)
    grads = random_grads(seed=1, steps=20, dtype=np.float32)
    _, state = run(opt, params, grads)
    with jax.enable_x64(False):
        _, jstate = run(opt, to_jax(params), [to_jax(g) for g in grads], jax.jit(opt.update))
        got = jax.jit(optim.averaged)(jstate)
        assert all(x.dtype == np.float32 for x in tree_leaves(got))
    assert_trees_close(got, optim.averaged(state), rtol=1e-4, atol=1e-6)
