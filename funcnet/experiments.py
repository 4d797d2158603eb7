"""Chapter 6's experiments: several variants trained on the same batches, compared.

``compare`` trains each variant with the same pure step on the same rows of indices and
returns a typed ``Comparison``; ``plot.loss_comparison`` draws one.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np

from ._arrays import tree_namespace
from .core import Layer, trainable
from .train import accuracy, compiled, make_step, step_rngs


def sample_batches(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """(steps, batch_size) indices into a training set of ``n``, drawn with replacement like
    the book's ``np.random.choice(train_size, batch_size)`` each iteration."""
    return np.random.default_rng(seed).integers(0, n, size=(steps, batch_size))


def block_means(values, every: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, the mean of each block of ``every`` values), x = each block's last index (from 1);
    a partial last block is dropped.  Per-batch losses are too noisy to compare by eye."""
    values = np.asarray(values, dtype=np.float64)
    every = max(1, min(every, len(values)))
    blocks = values[: len(values) // every * every].reshape(-1, every).mean(axis=1)
    return (np.arange(len(blocks)) + 1) * every, blocks


def run_steps(step, params, opt_state, x, t, batches, seed: int = 0):
    """Apply ``step`` to the batches ``x[b], t[b]`` for each row ``b`` of ``batches``,
    jitted when ``params`` are JAX arrays.  Returns ``(params, opt_state, losses)``
    (float64 array)."""
    on_jax = tree_namespace(params) is not np
    if on_jax:
        step = compiled(step)
    losses = []
    rngs = step_rngs(seed, 0, len(batches), jax_keys=on_jax)
    for b, r in zip(batches, rngs, strict=True):
        params, opt_state, value = step(params, opt_state, x[b], t[b], rng=r)
        losses.append(value)
    # One conversion at the end: a float() per step would make JAX wait for every step.
    return params, opt_state, np.asarray(losses, dtype=np.float64)


class Comparison(NamedTuple):
    """What ``compare`` measured, each a dict keyed by variant name (in the given order)."""

    losses: dict[str, np.ndarray]  # the loss of every step
    smoothed: dict[str, tuple[np.ndarray, np.ndarray]]  # block_means(losses, every)
    final: dict[str, float]  # mean loss of the last block
    test_acc: dict[str, float]
    seconds: dict[str, float]  # training time
    every: int  # the block size used


def compare(
    variants: dict[str, tuple[Layer, Any, Any]],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    batches: np.ndarray,
    *,
    every: int = 20,
) -> Comparison:
    """Train every variant ``name: (net, params, optimizer)`` on the same ``batches`` (rows
    of indices into ``train``, e.g. from ``sample_batches``) and score it on ``test``: the
    book's chapter-6 comparisons, where the runs differ in one thing only.  JAX params run
    jitted, NumPy params eagerly."""
    (x, t), (x_test, t_test) = train, test
    out = Comparison({}, {}, {}, {}, {}, max(1, min(every, len(batches))))
    for name, (net, params, opt) in variants.items():
        start = time.perf_counter()
        step = make_step(net, optimizer=opt)
        params, _, losses = run_steps(step, params, opt.init(trainable(params)), x, t, batches)
        out.seconds[name] = time.perf_counter() - start
        out.losses[name] = losses
        out.smoothed[name] = block_means(losses, every)
        out.final[name] = float(out.smoothed[name][1][-1])
        out.test_acc[name] = accuracy(net, params, x_test, t_test)
    return out


__all__ = ["Comparison", "block_means", "compare", "run_steps", "sample_batches"]
