"""Optimizers as pure gradient transformations, with the same contract as optax.

An optimizer is a pair of pure functions plus one helper::

    opt = adam(1e-3)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = apply_updates(params, updates)

Parameters, gradients and states are pytrees (nested dicts, lists and tuples of arrays),
walked with ``jax.tree_util``; nothing is mutated.  The same code runs eagerly on NumPy
arrays (leaves stay NumPy, in their own dtype) and under ``jax.jit`` on JAX arrays: array
ops come from the leaf's namespace and no Python branch looks at an array value.

Notation: g the gradient, θ the parameters, u the update (θ ← θ + u), η the learning
rate, η_t = schedule(t − 1) when it is a schedule, t = 1, 2, ... the step.
``docs/chapter6.md`` lists where the book's code, optax and this module differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from ._arrays import is_concrete, namespace

Params = Any  # a pytree of arrays
Updates = Any  # a pytree shaped like Params
OptState = Any
Schedule = Callable[[Any], Any]  # step (int or 0-d int array) -> learning rate
ScalarOrSchedule = float | Schedule

_tree_map = jax.tree_util.tree_map
_leaves = jax.tree_util.tree_leaves
_flatten = jax.tree_util.tree_flatten


class GradientTransformation(NamedTuple):
    """``init(params) -> state`` and ``update(grads, state, params=None) -> (updates, state)``:
    two pure functions, optax's contract.  Neither writes into what it is given."""

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Updates, OptState]]


class EmptyState(NamedTuple):
    """State of a stateless transformation."""


class ScheduleState(NamedTuple):
    count: Any  # 0-d int32: updates done so far, the argument of the schedule


class MomentumState(NamedTuple):
    velocity: Updates  # m_t, in gradient units; the book's velocity is v_t = -η·m_t


class AdaGradState(NamedTuple):
    sum_sq: Updates  # h_t = Σ g²


class RMSPropState(NamedTuple):
    nu: Updates  # h_t, moving average of g²


class AdamState(NamedTuple):
    count: Any  # 0-d int32 step t, for the bias corrections
    mu: Updates  # m_t, moving average of g
    nu: Updates  # v_t, moving average of g²


# --------------------------------------------------------------------------- helpers


def _cast(scalar, like):
    """``scalar`` as a 0-d array of ``like``'s dtype.

    Step-dependent scalars (schedules, bias corrections) come out as float64 in NumPy;
    multiplying a float32 leaf by them would silently upcast it.
    """
    return namespace(like).asarray(scalar, dtype=like.dtype)


def _zero_count(params):
    xp = namespace(*_leaves(params))
    return xp.zeros((), dtype=xp.int32)


def _zeros_like(x):
    return namespace(x).zeros_like(x)


def _stateless(fn: Callable[[Updates, Params], Updates]) -> GradientTransformation:
    """A transformation without state from ``fn(grads, params) -> updates``."""

    def update(grads, state, params=None):
        return fn(grads, params), state

    return GradientTransformation(_no_state, update)


def _no_state(params) -> EmptyState:
    del params
    return EmptyState()


def apply_updates(params: Params, updates: Updates) -> Params:
    """θ ← θ + u, leaf by leaf, each result in its parameter's dtype."""
    return _tree_map(_add, params, updates)


def _add(p, u):
    new = p + u
    return new if new.dtype == p.dtype else namespace(p).asarray(new, dtype=p.dtype)


# --------------------------------------------------------------------------- building blocks


def identity() -> GradientTransformation:
    """u = g."""
    return _stateless(lambda grads, params: grads)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply ``transforms`` in order, each to the previous one's output; the state is a tuple."""

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, state, params=None):
        new_state = []
        for t, s in zip(transforms, state, strict=True):
            grads, s = t.update(grads, s, params)
            new_state.append(s)
        return grads, tuple(new_state)

    return GradientTransformation(init, update)


def scale(factor: float) -> GradientTransformation:
    """u = c·g for a fixed scalar c."""
    if isinstance(factor, int | float | np.integer | np.floating):
        # A Python float is a weak scalar: float32 leaves stay float32 with no cast per step.
        c = float(factor)

        # Every step of SGD runs this: one flatten and a list, not tree_map's call per leaf.
        def update(grads, state, params=None):
            leaves, treedef = _flatten(grads)
            return treedef.unflatten([g * c for g in leaves]), state

        return GradientTransformation(_no_state, update)
    return _stateless(lambda grads, params: _tree_map(lambda g: _cast(factor, g) * g, grads))


def scale_by_learning_rate(lr: ScalarOrSchedule) -> GradientTransformation:
    """u = -η_t·g, where η_t = lr(count) for a schedule (count = 0, 1, ...), else η_t = lr."""
    if not callable(lr):
        return scale(-lr)

    def init(params):
        return ScheduleState(count=_zero_count(params))

    def update(grads, state, params=None):
        step = -lr(state.count)
        updates = _tree_map(lambda g: g * _cast(step, g), grads)
        return updates, ScheduleState(count=state.count + 1)

    return GradientTransformation(init, update)


def trace(beta: float, nesterov: bool = False) -> GradientTransformation:
    """Momentum in gradient units (optax's ``trace``).

    m_t = g_t + β·m_{t-1};  u_t = m_t, or u_t = g_t + β·m_t with ``nesterov``.
    """

    def init(params):
        return MomentumState(velocity=_tree_map(_zeros_like, params))

    def update(grads, state, params=None):
        m = _tree_map(lambda g, m: g + beta * m, grads, state.velocity)
        updates = _tree_map(lambda g, m: g + beta * m, grads, m) if nesterov else m
        return updates, MomentumState(velocity=m)

    return GradientTransformation(init, update)


def _denominator(h, eps, eps_in_sqrt):
    xp = namespace(h)
    return xp.sqrt(h + eps) if eps_in_sqrt else xp.sqrt(h) + eps


def scale_by_rss(
    eps: float = 1e-7, initial_accumulator_value: float = 0.0, eps_in_sqrt: bool = False
) -> GradientTransformation:
    """AdaGrad's scaling by the root of the sum of squares.

    h_t = h_{t-1} + g_t²  (h_0 = ``initial_accumulator_value``);
    u_t = g_t / (√h_t + ε), or g_t / √(h_t + ε) with ``eps_in_sqrt``.
    """

    def full(p):
        return namespace(p).full_like(p, initial_accumulator_value)

    def init(params):
        return AdaGradState(sum_sq=_tree_map(full, params))

    def update(grads, state, params=None):
        h = _tree_map(lambda g, h: h + g * g, grads, state.sum_sq)
        updates = _tree_map(lambda g, h: g / _denominator(h, eps, eps_in_sqrt), grads, h)
        return updates, AdaGradState(sum_sq=h)

    return GradientTransformation(init, update)


def scale_by_rms(
    decay: float = 0.99, eps: float = 1e-7, eps_in_sqrt: bool = False
) -> GradientTransformation:
    """RMSProp's scaling by the root of a moving average of squares.

    h_t = ρ·h_{t-1} + (1-ρ)·g_t²  (h_0 = 0);
    u_t = g_t / (√h_t + ε), or g_t / √(h_t + ε) with ``eps_in_sqrt``.
    """

    def init(params):
        return RMSPropState(nu=_tree_map(_zeros_like, params))

    def update(grads, state, params=None):
        h = _tree_map(lambda g, h: (1 - decay) * (g * g) + decay * h, grads, state.nu)
        updates = _tree_map(lambda g, h: g / _denominator(h, eps, eps_in_sqrt), grads, h)
        return updates, RMSPropState(nu=h)

    return GradientTransformation(init, update)


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam's scaling (Kingma & Ba, Algorithm 1).

    m_t = β1·m_{t-1} + (1-β1)·g_t;  v_t = β2·v_{t-1} + (1-β2)·g_t²;
    u_t = m̂_t / (√v̂_t + ε),  m̂_t = m_t/(1-β1^t),  v̂_t = v_t/(1-β2^t).
    """

    def init(params):
        return AdamState(
            count=_zero_count(params),
            mu=_tree_map(_zeros_like, params),
            nu=_tree_map(_zeros_like, params),
        )

    def update(grads, state, params=None):
        t = state.count + 1
        mu = _tree_map(lambda g, m: (1 - b1) * g + b1 * m, grads, state.mu)
        nu = _tree_map(lambda g, v: (1 - b2) * (g * g) + b2 * v, grads, state.nu)
        c1, c2 = 1 - b1**t, 1 - b2**t

        def step(m, v):
            return (m / _cast(c1, m)) / (namespace(v).sqrt(v / _cast(c2, v)) + eps)

        return _tree_map(step, mu, nu), AdamState(count=t, mu=mu, nu=nu)

    return GradientTransformation(init, update)


def add_decayed_weights(weight_decay: float, mask: Any = None) -> GradientTransformation:
    """Weight decay as a transform: u = g + λ·θ.

    Placed before ``scale_by_learning_rate`` this is L2 regularisation, the gradient of
    ½λ‖θ‖² added to g (the book's weight decay).  ``mask`` (a pytree of Python bools shaped
    like a prefix of params, or a function params -> such a tree) limits it to the leaves
    marked True, e.g. weights but not biases.  Needs ``params`` in ``update``.
    """

    def decay(g, p):
        return _tree_map(lambda g, p: g + weight_decay * p, g, p)

    def fn(grads, params):
        if params is None:
            raise ValueError(
                "add_decayed_weights (used by adamw) needs the parameters: "
                "call update(grads, state, params)"
            )
        decayed = mask(params) if callable(mask) else mask
        if decayed is None:
            return decay(grads, params)
        # ``decayed`` leads so that it may be a prefix; its leaves are static Python bools.
        return _tree_map(lambda k, g, p: decay(g, p) if k else g, decayed, grads, params)

    return _stateless(fn)


def key_mask(*keys: str) -> Callable[[Params], Any]:
    """A ``mask`` for ``add_decayed_weights``: True for the leaves whose own dict key is one
    of ``keys``.  ``key_mask("W")`` decays the weights of Dense and Conv layers and leaves
    biases and BatchNorm's γ, β alone, as the book's weight decay does."""

    def mask(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: bool(path) and getattr(path[-1], "key", None) in keys, params
        )

    return mask


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """u = g·min(1, c/‖g‖), with ‖g‖ = √(Σ over all leaves of Σ g²) and c = ``max_norm``."""

    def fn(grads, params):
        leaves = _leaves(grads)
        if not leaves:
            return grads
        xp = namespace(*leaves)
        norm = xp.sqrt(sum(xp.sum(g * g) for g in leaves))
        # max(‖g‖, c) instead of a branch: jit-safe, and exactly 1 below the threshold.
        factor = max_norm / xp.maximum(norm, max_norm)
        return _tree_map(lambda g: _cast(factor, g) * g, grads)

    return _stateless(fn)


# --------------------------------------------------------------------------- optimizers


def sgd(lr: ScalarOrSchedule) -> GradientTransformation:
    """SGD: u_t = -η_t·g_t."""
    return chain(scale_by_learning_rate(lr))


def momentum(lr: ScalarOrSchedule, beta: float = 0.9) -> GradientTransformation:
    """Momentum SGD: m_t = g_t + β·m_{t-1};  u_t = -η_t·m_t.

    For a constant η this is the book's v_t = β·v_{t-1} - η·g_t; u_t = v_t (v = -η·m).
    With a schedule they differ: here u_t = -η_t·Σ β^(t-s)·g_s (as optax), while the
    book's form would give -Σ β^(t-s)·η_s·g_s.
    """
    return chain(trace(beta), scale_by_learning_rate(lr))


def nesterov(lr: ScalarOrSchedule, beta: float = 0.9) -> GradientTransformation:
    """Nesterov momentum: m_t = g_t + β·m_{t-1};  u_t = -η_t·(g_t + β·m_t).

    With v = -η·m: u_t = β²·v_{t-1} - (1+β)·η·g_t, as in optax.  The book's code uses the
    already updated v_t in place of v_{t-1}, which gives a different step.
    """
    return chain(trace(beta, nesterov=True), scale_by_learning_rate(lr))


def adagrad(
    lr: ScalarOrSchedule,
    eps: float = 1e-7,
    initial_accumulator_value: float = 0.0,
    eps_in_sqrt: bool = False,
) -> GradientTransformation:
    """AdaGrad: h_t = h_{t-1} + g_t²;  u_t = -η_t·g_t / (√h_t + ε).

    The defaults are the book's (h_0 = 0, ε = 1e-7 outside the root).  optax.adagrad is
    ``initial_accumulator_value=0.1, eps_in_sqrt=True``.
    """
    return chain(
        scale_by_rss(eps, initial_accumulator_value, eps_in_sqrt), scale_by_learning_rate(lr)
    )


def rmsprop(
    lr: ScalarOrSchedule, decay: float = 0.99, eps: float = 1e-7, eps_in_sqrt: bool = False
) -> GradientTransformation:
    """RMSProp: h_t = ρ·h_{t-1} + (1-ρ)·g_t²;  u_t = -η_t·g_t / (√h_t + ε).

    The defaults are the book's; optax.rmsprop defaults to ρ = 0.9, ε = 1e-8 inside the root.
    """
    return chain(scale_by_rms(decay, eps, eps_in_sqrt), scale_by_learning_rate(lr))


def adam(
    lr: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> GradientTransformation:
    """Adam: u_t = -η_t·m̂_t / (√v̂_t + ε), see ``scale_by_adam``; equals optax.adam.

    The book's code folds the bias corrections into η and adds 1e-7 to √v_t, i.e. it uses
    ε_t = 1e-7/√(1-β2^t) here; with ε = 0 the two agree.
    """
    return chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(lr))


def adamw(
    lr: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    mask: Any = None,
) -> GradientTransformation:
    """AdamW, decoupled weight decay: u_t = -η_t·(m̂_t / (√v̂_t + ε) + λ·θ_{t-1}).

    The decay bypasses Adam's scaling, unlike L2 (``add_decayed_weights`` before
    ``scale_by_adam``).  As in optax and PyTorch, λ is multiplied by η_t.  Needs ``params``
    in ``update``; ``mask`` as in ``add_decayed_weights``.
    """
    return chain(
        scale_by_adam(b1, b2, eps),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(lr),
    )


def by_name(name: str, lr: ScalarOrSchedule) -> GradientTransformation:
    """The optimizer called ``name`` (case-insensitive: "SGD", "Momentum", "Nesterov",
    "AdaGrad", "RMSProp", "Adam", "AdamW"), with its defaults and learning rate ``lr``."""
    table = {
        "sgd": sgd, "momentum": momentum, "nesterov": nesterov, "adagrad": adagrad,
        "rmsprop": rmsprop, "adam": adam, "adamw": adamw,
    }  # fmt: skip
    if name.lower() not in table:
        raise ValueError(f"unknown optimizer {name!r}: use one of {sorted(table)}")
    return table[name.lower()](lr)


# --------------------------------------------------------------------------- averaging


class AveragedState(NamedTuple):
    inner: OptState  # the wrapped optimizer's state
    average: Params  # a_t, the moving average of the parameters, before normalising
    weight: Any  # 0-d w_t = 1 - β^t, the same recursion run on the constant 1


def with_average(opt: GradientTransformation, decay: float = 0.999) -> GradientTransformation:
    """``opt`` unchanged, plus an exponential moving average of the parameters it produces
    (Polyak averaging), kept in the state and read with ``averaged(state)``.

    a_t = β·a_{t-1} + (1-β)·θ_t and w_t = β·w_{t-1} + (1-β), from a_0 = w_0 = 0, with
    θ_t = θ_{t-1} + u_t;  averaged = a_t / w_t = Σ_s β^(t-s)·(1-β)·θ_s / (1-β^t), a weighted
    mean of θ_1..θ_t.  The updates are ``opt``'s own, so training follows exactly the same
    path; the average only smooths the step-to-step noise of the end point (β = 0.999 weighs
    about the last 1000 steps).  Needs ``params`` in ``update``.  Wrap the whole optimizer:
    inside a ``chain`` it would average θ + u with a u that later transformations still
    change, and ``averaged`` (like ``train.fit``) looks only at the outermost state.
    Running state (BatchNorm's statistics) is never averaged: ``train`` hands optimizers
    ``core.trainable(params)`` only, and scores the average with the current state.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"with_average: decay must be in [0, 1), got {decay!r}")

    def init(params):
        leaves = _leaves(params)
        xp = namespace(*leaves)
        return AveragedState(
            inner=opt.init(params),
            average=_tree_map(_zeros_like, params),
            # In the params' dtype like every other state leaf: float32 runs stay float32.
            weight=xp.zeros((), dtype=leaves[0].dtype if leaves else xp.float32),
        )

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("with_average: update needs params, to average θ + u")
        updates, inner = opt.update(grads, state.inner, params)
        average = _tree_map(
            lambda a, p: decay * a + (1 - decay) * p, state.average, apply_updates(params, updates)
        )
        weight = decay * state.weight + (1 - decay)
        return updates, AveragedState(inner=inner, average=average, weight=weight)

    return GradientTransformation(init, update)


def averaged(state: OptState, params: Params = None) -> Params:
    """The averaged parameters a_t / w_t of a ``with_average`` state (each leaf in its own
    dtype); ``params`` when ``state`` is another optimizer's.  Before the first update there
    is no average yet: ``params`` again, or a ValueError without them."""
    if not isinstance(state, AveragedState):
        return params
    if is_concrete(state.weight) and float(state.weight) == 0.0:
        if params is None:
            raise ValueError("averaged: no update has been averaged yet")
        return params
    return _tree_map(lambda a: a / _cast(state.weight, a), state.average)


# --------------------------------------------------------------------------- schedules


def _float_step(step):
    """The namespace of ``step`` and ``step`` in its widest float.

    An int32 count divided by an int gives float32 in JAX even with x64 enabled.
    """
    xp = namespace(step)
    return xp, xp.asarray(step, dtype=float)


def constant(lr: float) -> Schedule:
    """η_t = lr."""

    def schedule(step):
        del step
        return lr

    return schedule


def exponential_decay(
    lr: float, rate: float, transition_steps: int = 1, staircase: bool = False
) -> Schedule:
    """η(k) = lr·rate^(k/T), or lr·rate^⌊k/T⌋ with ``staircase``; T = ``transition_steps``."""
    if transition_steps <= 0:
        raise ValueError(f"transition_steps must be positive, got {transition_steps}")

    def schedule(step):
        xp, k = _float_step(step)
        p = k / transition_steps
        return lr * rate ** (xp.floor(p) if staircase else p)

    return schedule


def step_decay(lr: float, step_size: int, gamma: float) -> Schedule:
    """η(k) = lr·γ^⌊k/s⌋: multiply by γ every s = ``step_size`` steps."""
    return exponential_decay(lr, gamma, step_size, staircase=True)


def cosine_decay(lr: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    """η(k) = lr·((1-α)·½(1 + cos(π·min(k, T)/T)) + α); T = ``decay_steps``, floor α·lr."""
    if decay_steps <= 0:
        raise ValueError(f"decay_steps must be positive, got {decay_steps}")

    def schedule(step):
        xp, k = _float_step(step)
        k = xp.minimum(k, decay_steps)
        cosine = 0.5 * (1 + xp.cos(xp.pi * k / decay_steps))
        return lr * ((1 - alpha) * cosine + alpha)

    return schedule


def warmup_cosine(lr: float, warmup_steps: int, decay_steps: int, min_lr: float = 0.0) -> Schedule:
    """nanoGPT's schedule: a linear warm-up, then a cosine from ``lr`` down to ``min_lr``.

    η(k) = lr·(k + 1)/(W + 1) for k < W; min_lr + ½(1 + cos(π(k − W)/(D − W)))·(lr − min_lr)
    for W ≤ k ≤ D; min_lr after; W = ``warmup_steps``, D = ``decay_steps``.
    """
    if not 0 <= warmup_steps < decay_steps:
        raise ValueError(
            f"warmup_cosine: need 0 <= warmup_steps < decay_steps, got {warmup_steps}, "
            f"{decay_steps}"
        )

    def schedule(step):
        xp, k = _float_step(step)
        warm = lr * (k + 1) / (warmup_steps + 1)
        ratio = xp.clip((k - warmup_steps) / (decay_steps - warmup_steps), 0.0, 1.0)
        cosine = min_lr + 0.5 * (1 + xp.cos(xp.pi * ratio)) * (lr - min_lr)
        return xp.where(k < warmup_steps, warm, cosine)

    return schedule


__all__ = [
    "AdaGradState",
    "AdamState",
    "AveragedState",
    "EmptyState",
    "GradientTransformation",
    "MomentumState",
    "RMSPropState",
    "ScheduleState",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "averaged",
    "by_name",
    "chain",
    "clip_by_global_norm",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "identity",
    "key_mask",
    "momentum",
    "nesterov",
    "rmsprop",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_rss",
    "sgd",
    "step_decay",
    "trace",
    "warmup_cosine",
    "with_average",
]
