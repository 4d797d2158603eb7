"""Augmentation: random shifts as pure functions of a seed or key, on NumPy and under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet import optim, train
from funcnet._arrays import as_rng
from funcnet.augment import random_shift


def _shifted(x, shifts):
    """The definition, one pixel at a time: out[r, c] = x[r - dy, c - dx], else 0."""
    out = np.zeros_like(x)
    h, w = x.shape[-2:]
    for n, (dy, dx) in enumerate(np.asarray(shifts)):
        for r in range(h):
            for c in range(w):
                if 0 <= r - dy < h and 0 <= c - dx < w:
                    out[n, ..., r, c] = x[n, ..., r - dy, c - dx]
    return out


def test_random_shift_moves_each_image_by_its_own_offset_with_zero_fill():
    x = np.random.default_rng(0).random((6, 2, 5, 7)).astype(np.float32)
    aug = random_shift(2)
    want = _shifted(x, as_rng((4, 1)).integers(-2, 3, (6, 2)))
    np.testing.assert_array_equal(aug((4, 1), x), want)
    np.testing.assert_array_equal(aug((4, 1), x), aug((4, 1), x))  # same seed, same images
    assert not np.array_equal(aug((4, 2), x), want)
    np.testing.assert_array_equal(aug((4, 1), x[:, 0]), want[:, 0])  # (N, H, W) too
    np.testing.assert_array_equal(random_shift(0)(1, x), x)
    key = jax.random.PRNGKey(3)
    got = jax.jit(aug)(key, jnp.asarray(x))
    np.testing.assert_array_equal(got, _shifted(x, jax.random.randint(key, (6, 2), -2, 3)))
    with pytest.raises(ValueError, match=r"expected images .* got shape \(6, 70\)"):
        aug(1, x.reshape(6, 70))
    with pytest.raises(ValueError, match="max_shift must be an int >= 0"):
        random_shift(-1)


def test_make_step_augments_from_a_stream_of_its_own():
    net = fn.pipeline(fn.Flatten(), fn.Dense(3))
    _, params = net.init(0, (-1, 1, 4, 4))
    x = np.random.default_rng(1).random((5, 1, 4, 4)).astype(np.float32)
    t = np.array([0, 1, 2, 0, 1])
    seen = []

    def spy(rng, xb):
        seen.append(rng)
        return random_shift(1)(rng, xb)

    step = train.make_step(net, optimizer=optim.sgd(0.1), augment=spy)
    a = step(params, optim.sgd(0.1).init(params), x, t, rng=(7, 1, 0))
    b = step(params, optim.sgd(0.1).init(params), x, t, rng=(7, 1, 0))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert seen[0] == (7, 1, 0, 2**31 - 1)  # not (7, 1, 0, k), a pipeline child's stream
    plain = train.make_step(net, optimizer=optim.sgd(0.1))(
        params, optim.sgd(0.1).init(params), random_shift(1)(seen[0], x), t, rng=(7, 1, 0)
    )
    jax.tree.map(np.testing.assert_array_equal, a, plain)
    with pytest.raises(ValueError, match="augment needs rng"):
        step(params, optim.sgd(0.1).init(params), x, t)
