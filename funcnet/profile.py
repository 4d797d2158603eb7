"""Where the time goes: the forward and backward time of every layer of a network.

The timings come from the network's own code: :func:`timed` wraps a layer so that its
``forward`` and ``backward`` record how long they took, and a model built with
``wrap=timer.wrap`` (``models.deep_convnet(wrap=...)``) is an ordinary pipeline of wrapped
layers.  On NumPy that is the eager step as ``fit`` runs it.  On JAX each layer's forward
and backward are jitted on their own and waited for: a whole-step program fuses across
layers, so per-layer figures can only come from per-layer programs (their sum is an upper
bound of the fused step).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .core import Layer
from .losses import softmax_cross_entropy


class LayerTime(NamedTuple):
    """Median seconds of one layer's forward (train mode) and backward."""

    name: str
    forward: float
    backward: float


class Timer:
    """Collects the times of the layers it wraps, in the order they were wrapped."""

    def __init__(self, jit: bool = False):
        self.jit = jit
        self.names: list[str] = []
        self.times: list[dict[str, list[float]]] = []

    def wrap(self, layer: Layer) -> Layer:
        """``layer`` with timed forward and backward (the protocol and results unchanged)."""
        record = {"forward": [], "backward": []}
        self.names.append(layer.name)
        self.times.append(record)
        forward, backward = layer.forward, layer.backward
        if self.jit:
            import jax

            forward = jax.jit(forward, static_argnames=("train",))
            backward = jax.jit(backward, static_argnames=("need_dx",))

        def ready(tree):
            if self.jit:
                import jax

                jax.block_until_ready(tree)
            return tree

        def timed_forward(params, x, *, train=False, rng=None):
            start = time.perf_counter()
            out = ready(forward(params, x, train=train, rng=rng))
            record["forward"].append(time.perf_counter() - start)
            return out

        def timed_backward(cache, dout, *, need_dx=True):
            start = time.perf_counter()
            out = ready(backward(cache, dout, need_dx=need_dx))
            record["backward"].append(time.perf_counter() - start)
            return out

        return layer._replace(forward=timed_forward, backward=timed_backward)

    def medians(self, skip: int = 0) -> list[LayerTime]:
        """Median times per layer over the calls after the first ``skip`` (warm-up)."""
        return [
            LayerTime(
                name,
                statistics.median(rec["forward"][skip:]),
                statistics.median(rec["backward"][skip:]),
            )
            for name, rec in zip(self.names, self.times, strict=True)
        ]


def profile(
    build: Callable[..., Layer],
    in_shape: tuple[int, ...],
    *,
    batch: int = 100,
    backend: str = "numpy",
    repeats: int = 5,
    seed: int = 0,
) -> list[LayerTime]:
    """Median forward/backward seconds of every layer of ``build(wrap=...)`` on a random
    float32 batch of ``(batch, *in_shape)`` with random labels, over ``repeats`` train-mode
    steps (forward, cross-entropy, backward without the first layer's dx) after one warm-up
    step that also compiles the JAX programs.  ``backend``: ``"numpy"`` or ``"jax"``."""
    if backend not in ("numpy", "jax"):
        raise ValueError(f"profile: backend must be 'numpy' or 'jax', got {backend!r}")
    if repeats < 1 or batch < 1:
        raise ValueError(f"profile: repeats and batch must be >= 1, got {repeats}, {batch}")
    timer = Timer(jit=backend == "jax")
    net = build(wrap=timer.wrap)
    out_shape, params = net.init(seed, (-1, *in_shape))
    rng = np.random.default_rng(seed)
    x = rng.random((batch, *in_shape), dtype=np.float32)
    t = rng.integers(0, out_shape[-1], batch)
    if backend == "jax":
        import jax

        params, x, t = jax.device_put((params, x, t))
        keys = jax.random.split(jax.random.PRNGKey(seed), repeats + 1)
    for i in range(repeats + 1):
        step_rng = keys[i] if backend == "jax" else (seed, i)
        out, cache = net.forward(params, x, train=True, rng=step_rng)
        _, lcache = softmax_cross_entropy.forward(out, t)
        net.backward(cache, softmax_cross_entropy.backward(lcache), need_dx=False)
    return timer.medians(skip=1)


__all__ = ["LayerTime", "Timer", "profile"]
