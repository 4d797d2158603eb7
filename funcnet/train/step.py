"""The pure training step, the epoch as one ``lax.scan``, and the per-step randomness.

    params, opt_state, loss = step(params, opt_state, x, t, rng=None)

is one function of arrays built from a layer's forward/backward, a loss and an optimizer.
The arrays decide how it runs: eagerly on NumPy arrays, traced by ``jax.jit`` on JAX ones
(``runners`` picks how ``fit`` runs it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import optim
from .._arrays import is_numpy_rng
from ..core import Layer, Loss, trainable, update_state, with_trainable
from ..losses import softmax_cross_entropy


def make_step(
    net: Layer, loss: Loss = softmax_cross_entropy, optimizer=None, augment=None
) -> Callable:
    """``step(params, opt_state, x, t, rng=None) -> (params, opt_state, loss)``.

    One optimizer step in train mode, the textbook one: y = net(θ, x), L = loss(y, t),
    g = ∂L/∂θ by the backward, (u, s) = optimizer.update(g, s, θ), θ ← θ + u, then the
    running state (BatchNorm) the forward computed.  The optimizer sees the trainable
    params only (``core.trainable``): running state is not trained, decayed or averaged;
    ``opt_state`` is ``optimizer.init(trainable(params))``.  ``rng`` feeds random layers
    (Dropout) and ``augment`` (``funcnet.augment``), which transforms the batch first from
    a stream of its own.  The first layer's input gradient is never computed
    (``need_dx=False``): nothing uses it.  Nothing passed in is written to.
    """
    opt = optimizer if optimizer is not None else optim.sgd(0.1)

    def step(params, opt_state, x, t, rng=None):
        if augment is not None:
            x = augment(_augment_rng(rng), x)
        out, cache = net.forward(params, x, train=True, rng=rng)
        value, lcache = loss.forward(out, t)
        grads, _ = net.backward(cache, loss.backward(lcache), need_dx=False)
        weights = trainable(params)
        updates, opt_state = opt.update(grads, opt_state, weights)
        params = with_trainable(params, optim.apply_updates(weights, updates))
        return update_state(params, cache), opt_state, value

    return step


_AUGMENT_STREAM = 2**31 - 1  # a child index no pipeline reaches: its own random stream


def _augment_rng(rng):
    if rng is None:
        raise ValueError("make_step: augment needs rng, a seed or a key per step")
    if isinstance(rng, np.random.Generator):
        return rng.spawn(1)[0]
    if is_numpy_rng(rng):
        return (*(rng if isinstance(rng, tuple) else (rng,)), _AUGMENT_STREAM)
    import jax

    return jax.random.fold_in(rng, _AUGMENT_STREAM)


def make_epoch(step: Callable) -> Callable:
    """``epoch(params, opt_state, xs, ts, keys=None) -> (params, opt_state, losses)`` over
    stacked batches ``xs`` (steps, B, ...) with ``jax.lax.scan``; jit it to get one program.
    ``keys`` (steps, 2), if given, are the per-step PRNG keys for random layers."""
    import jax

    def epoch(params, opt_state, xs, ts, keys=None):
        def body(carry, batch):
            p, s, value = step(*carry, *batch)
            return (p, s), value

        batches = (xs, ts) if keys is None else (xs, ts, keys)
        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), batches)
        return params, opt_state, losses

    return epoch


def step_rngs(seed: int, epoch: int, steps: int, jax_keys: bool = False):
    """Per-step randomness for random layers, derived from ``seed``: the seed paths
    ``(seed, epoch, i)`` for NumPy; with ``jax_keys`` raw uint32 JAX keys, split once on the
    host so that no device call is added per step."""
    if jax_keys:
        import jax

        key = jax.random.fold_in(jax.random.PRNGKey(seed), epoch)
        return np.asarray(jax.random.split(key, steps))
    return [(seed, epoch, i) for i in range(steps)]


__all__ = ["make_epoch", "make_step", "step_rngs"]
