"""Check hand-written backwards against ``jax.vjp`` and against central differences.

Everything runs in float64.  The cotangent is a random Gaussian (never all ones, which hides
transposition and summation mistakes).  For each gradient leaf the report gives

* ``jax_abs`` = max_i |a_i − r_i| and ``jax_rel`` = jax_abs / max_i |r_i|, where ``a`` is the
  hand-written gradient and ``r`` the one JAX derives from the layer's own forward;
* ``num_abs`` / ``num_rel``, the same against central differences of ⟨g, forward⟩ on up to
  ``max_numerical`` sampled elements.

A leaf passes when ``jax_rel ≤ rtol`` and (``num_rel ≤ num_rtol`` or ``num_abs ≤ num_atol``:
finite differences carry an absolute noise of about ε·|⟨g, out⟩|/h, which dominates when a
gradient is nearly zero, e.g. BatchNorm's input gradient at batch 2), and when the gradient has
the structure, shape and dtype of what it differentiates.

``arrays="jax"`` runs the hand-written forward and backward on JAX arrays instead of NumPy
ones, so that a layer's JAX code path is the one checked.  The checker knows only the
protocol (``core``): it differentiates ``trainable(params)`` and leaves running state as it
is, and it imports no layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from .core import Layer, Loss, trainable, with_trainable

# XLA options for the checker's programs, each compiled for one call: XLA:CPU's older code
# generator for fused loops builds them in less than half the time.  Dropped for the rest of
# the process when the installed JAX or XLA does not know them.
_ONE_CALL_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def _jit_once(fn: Callable) -> Callable:
    """``jax.jit(fn)`` for a program that runs once, with ``_ONE_CALL_OPTIONS``."""

    def call(*args):
        global _ONE_CALL_OPTIONS
        if _ONE_CALL_OPTIONS:
            try:
                return jax.jit(fn, compiler_options=_ONE_CALL_OPTIONS)(*args)
            except Exception as e:  # a jit without compiler_options, an XLA without the option
                if not any(k in str(e) for k in ("compiler_options", *_ONE_CALL_OPTIONS)):
                    raise
            _ONE_CALL_OPTIONS = {}
        return jax.jit(fn)(*args)

    return call


class GradcheckError(AssertionError):
    """A hand-written gradient disagrees with the reference."""


class Row(NamedTuple):
    what: str
    shape: tuple
    jax_abs: float
    jax_rel: float
    num_abs: float
    num_rel: float
    ok: bool
    problem: str = ""


class Report(NamedTuple):
    name: str
    in_shapes: str
    rows: list[Row]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def max_jax_rel(self) -> float:
        return max((r.jax_rel for r in self.rows), default=0.0)

    @property
    def max_num_rel(self) -> float:
        return max((r.num_rel for r in self.rows), default=0.0)

    def __str__(self) -> str:
        lines = [f"{self.name} {self.in_shapes}: {'ok' if self.ok else 'FAILED'}"]
        for r in self.rows:
            lines.append(
                f"  {r.what:<14} {r.shape!s:<16} vs jax {r.jax_rel:9.2e} (abs {r.jax_abs:8.2e})"
                f"  vs numerical {r.num_rel:9.2e}  {'ok' if r.ok else 'FAIL ' + r.problem}"
            )
        return "\n".join(lines)

    def raise_for_failure(self) -> Report:
        if not self.ok:
            raise GradcheckError(str(self))
        return self


def _f64(a):
    a = np.asarray(a)
    return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a.copy()


def _errors(a, r) -> tuple[float, float]:
    """(max |a − r|, that / max |r|) over the finite part of ``r``; an element where ``a`` and
    ``r`` are equal (infinities of the same sign included) differs by 0, and one where only
    one of them is finite, or either is NaN, makes both errors inf."""
    a, r = np.asarray(a, dtype=np.float64), np.asarray(r, dtype=np.float64)
    if a.size == 0:
        return 0.0, 0.0
    same = a == r
    if not np.all(same | (np.isfinite(a) & np.isfinite(r))):
        return np.inf, np.inf
    with np.errstate(invalid="ignore"):  # inf − inf where equal: masked out by ``same``
        err = float(np.max(np.where(same, 0.0, np.abs(a - r))))
    finite = r[np.isfinite(r)]
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    return err, (err / scale if scale > 0 else (0.0 if err == 0 else np.inf))


def _leaf_name(path) -> str:
    return jax.tree_util.keystr(path).replace("['", ".").replace("']", "").lstrip(".") or "x"


def _check(
    name: str,
    in_shapes: str,
    fwd: Callable[[Any], Any],
    hand_grad: Callable[[Any, Any], Any],
    primal: Any,
    *,
    seed: int = 0,
    rtol: float = 1e-9,
    num_rtol: float = 1e-6,
    num_atol: float = 1e-8,
    h: float = 1e-6,
    numerical: bool = True,
    max_numerical: int = 40,
    arrays: str = "numpy",
    cotangent: Callable[[np.random.Generator, tuple], np.ndarray] | None = None,
) -> Report:
    if arrays not in ("numpy", "jax"):
        raise ValueError(f"gradcheck: arrays must be 'numpy' or 'jax', got {arrays!r}")
    rng = np.random.default_rng(seed)
    draw = cotangent or (lambda rng, shape: rng.standard_normal(shape))
    with jax.enable_x64(True):
        primal = jax.tree_util.tree_map(_f64, primal)
        before = jax.tree_util.tree_map(np.copy, primal)
        # device_put, not jnp.asarray (which compiles a copy for every new shape).  On the
        # CPU it may share memory with primal: every JAX run comes before any NumPy one, so
        # a NumPy path that writes into its input cannot change what JAX was given.
        as_jax = jax.device_put(primal)
        g = draw(rng, jax.eval_shape(fwd, as_jax).shape)
        g_jax = jax.device_put(g)

        def reference(p, g):
            out, pull = jax.vjp(fwd, p)
            return out, pull(g)[0]

        # One compiled program each: op-by-op dispatch would compile every op separately.
        out_ref, ref = _jit_once(reference)(as_jax, g_jax)
        if arrays == "jax":
            hand = jax.tree_util.tree_map(np.asarray, _jit_once(hand_grad)(as_jax, g_jax))
        out = np.asarray(fwd(primal))  # the NumPy forward: the forward row compares the two
        if arrays == "numpy":
            hand = hand_grad(primal, g)

        rows = []
        fwd_err = _errors(out, out_ref)
        rows.append(Row("forward", out.shape, *fwd_err, 0.0, 0.0, fwd_err[1] <= rtol))

        p_leaves, p_def = jax.tree_util.tree_flatten_with_path(primal)
        r_leaves = jax.tree_util.tree_leaves(ref)
        try:
            h_leaves = p_def.flatten_up_to(hand)
        except (ValueError, TypeError) as e:
            rows.append(Row("structure", (), np.inf, np.inf, np.inf, np.inf, False, str(e)))
            return Report(name, in_shapes, rows)

        flat_primal = [leaf for _, leaf in p_leaves]
        for k, ((path, p), a, r) in enumerate(zip(p_leaves, h_leaves, r_leaves, strict=True)):
            what = _leaf_name(path)
            if a is None:
                rows.append(Row(what, p.shape, np.inf, np.inf, np.inf, np.inf, False, "is None"))
                continue
            problem = ""
            if tuple(np.shape(a)) != tuple(p.shape):
                problem = f"shape {tuple(np.shape(a))} != {tuple(p.shape)}"
            elif np.asarray(a).dtype != p.dtype:
                problem = f"dtype {np.asarray(a).dtype} != {p.dtype}"
            if problem:
                rows.append(Row(what, p.shape, np.inf, np.inf, np.inf, np.inf, False, problem))
                continue
            j_abs, j_rel = _errors(a, r)
            n_abs = n_rel = 0.0
            if numerical and p.size:
                idx = np.arange(p.size)
                if p.size > max_numerical:
                    idx = np.sort(rng.choice(p.size, max_numerical, replace=False))
                num = _directional_numerical(fwd, p_def, flat_primal, k, idx, g, h)
                n_abs, n_rel = _errors(np.asarray(a).reshape(-1)[idx], num)
            ok = j_rel <= rtol and (n_rel <= num_rtol or n_abs <= num_atol)
            problem = "" if ok else ("vs jax" if j_rel > rtol else "vs numerical")
            rows.append(Row(what, p.shape, j_abs, j_rel, n_abs, n_rel, ok, problem))

        for (path, p), q in zip(p_leaves, jax.tree_util.tree_leaves(before), strict=True):
            if not np.array_equal(p, q, equal_nan=True):
                rows.append(Row(_leaf_name(path), p.shape, 0, 0, 0, 0, False, "input was mutated"))
    return Report(name, in_shapes, rows)


def _directional_numerical(fwd, treedef, leaves, k, idx, g, h):
    """∂⟨g, fwd⟩/∂leaf_k[i] by central differences, for i in ``idx``."""
    work = [np.array(leaf, copy=True) for leaf in leaves]
    flat = work[k].reshape(-1)
    out = np.empty(len(idx))
    for j, i in enumerate(idx):
        xi = flat[i]
        flat[i] = xi + h
        fp = float(np.sum(g * np.asarray(fwd(treedef.unflatten(work)))))
        flat[i] = xi - h
        fm = float(np.sum(g * np.asarray(fwd(treedef.unflatten(work)))))
        flat[i] = xi
        out[j] = (fp - fm) / (2 * h)
    return out


def check_layer(
    layer: Layer,
    params,
    x,
    *,
    forward_kwargs: dict | None = None,
    raise_on_failure: bool = True,
    **options,
) -> Report:
    """Compare ``layer.backward`` with ``jax.vjp`` of ``layer.forward`` and with central
    differences, in float64, under a random Gaussian cotangent.

    Returns a :class:`Report`; raises :class:`GradcheckError` on a mismatch unless
    ``raise_on_failure=False``.  ``forward_kwargs`` (e.g. ``train=True``) go to the forward.
    ``options``: ``seed=0`` (the cotangent and the sampled elements), ``rtol=1e-9`` (vs
    JAX), ``num_rtol=1e-6`` and ``num_atol=1e-8`` (vs differences), ``h=1e-6`` (the step),
    ``numerical=True``, ``max_numerical=40`` (elements differenced per leaf),
    ``arrays="numpy"`` (or ``"jax"``: run the hand-written code on JAX arrays),
    ``cotangent=None`` (a function ``(rng, shape) -> array`` replacing the Gaussian one,
    e.g. to send an infinite gradient through; turn ``numerical`` off with it).
    """
    kw = dict(forward_kwargs or {})
    # Running state is data here, like x's labels for a loss: held fixed, in float64.
    params = jax.tree_util.tree_map(_f64, params)

    def full(tree):
        return with_trainable(params, tree["params"])

    def fwd(tree):
        return layer.forward(full(tree), tree["x"], **kw)[0]

    def hand(tree, g):
        _, cache = layer.forward(full(tree), tree["x"], **kw)
        dparams, dx = layer.backward(cache, g)
        return {"params": dparams, "x": dx}

    primal = {"params": trainable(params), "x": x}
    report = _check(layer.name, str(tuple(np.shape(x))), fwd, hand, primal, **options)
    return report.raise_for_failure() if raise_on_failure else report


def check_loss(loss: Loss, y, t, *, raise_on_failure: bool = True, **options) -> Report:
    """Like :func:`check_layer` for a loss: the gradient w.r.t. ``y`` (``t`` is data), under a
    random scalar cotangent ``dloss``; the same ``options``."""
    t = _f64(t)

    def fwd(tree):
        return loss.forward(tree["y"], t)[0]

    def hand(tree, g):
        _, cache = loss.forward(tree["y"], t)
        return {"y": loss.backward(cache, g)}

    shapes = f"{tuple(np.shape(y))}, t {tuple(np.shape(t))}"
    report = _check(loss.name, shapes, fwd, hand, {"y": y}, **options)
    return report.raise_for_failure() if raise_on_failure else report


def check_vjp(
    name: str,
    forward: Callable[..., tuple[Any, Any]],
    backward: Callable[[Any, Any], Any],
    primals: dict,
    *,
    raise_on_failure: bool = True,
    **options,
) -> Report:
    """The same check for any pure pair ``forward(**primals) -> (out, cache)`` and
    ``backward(cache, dout) -> grads``, with ``grads`` a tuple in ``primals``' order (a
    computational-graph node's ``(dx, dy)``); the same ``options``."""
    keys = list(primals)

    def fwd(tree):
        return forward(*(tree[k] for k in keys))[0]

    def hand(tree, g):
        _, cache = forward(*(tree[k] for k in keys))
        return dict(zip(keys, backward(cache, g), strict=True))

    shapes = ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in primals.items())
    report = _check(name, shapes, fwd, hand, dict(primals), **options)
    return report.raise_for_failure() if raise_on_failure else report


__all__ = ["GradcheckError", "Report", "Row", "check_layer", "check_loss", "check_vjp"]
