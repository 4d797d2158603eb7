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
    """One comparison: ``jax_abs``/``jax_rel`` against what ``versus`` names ("jax": the
    gradient JAX derives, "reference": an independent forward, "protocol": a rule of the
    protocol, with no number), ``num_abs``/``num_rel`` against central differences; ``None``
    where that comparison did not run."""

    what: str
    shape: tuple
    jax_abs: float | None
    jax_rel: float | None
    num_abs: float | None
    num_rel: float | None
    ok: bool
    problem: str = ""
    versus: str = "jax"


def _fmt(v: float | None, width: int = 9) -> str:
    """A measured error, or "-" where nothing was measured."""
    return f"{'-':>{width}}" if v is None else f"{v:{width}.2e}"


def _largest(values) -> float | None:
    values = [v for v in values if v is not None]
    return max(values) if values else None


class Report(NamedTuple):
    name: str
    in_shapes: str
    rows: list[Row]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def max_jax_rel(self) -> float | None:
        """The largest relative error against JAX's gradients; ``None`` if none ran."""
        return _largest(r.jax_rel for r in self.rows if r.versus == "jax")

    @property
    def max_ref_rel(self) -> float | None:
        """The forward's relative error against its independent reference, if one ran."""
        return _largest(r.jax_rel for r in self.rows if r.versus == "reference")

    @property
    def max_num_rel(self) -> float | None:
        """The largest relative error against central differences; ``None`` if none ran."""
        return _largest(r.num_rel for r in self.rows)

    def __str__(self) -> str:
        lines = [f"{self.name} {self.in_shapes}: {'ok' if self.ok else 'FAILED'}"]
        for r in self.rows:
            result = "ok" if r.ok else "FAIL " + r.problem
            if r.versus == "protocol":  # a rule, not a measured error
                lines.append(f"  {r.what:<22} {r.shape!s:<16} {result}")
                continue
            lines.append(
                f"  {r.what:<22} {r.shape!s:<16} vs {r.versus:<9} {_fmt(r.jax_rel)} "
                f"(abs {_fmt(r.jax_abs, 8)})  vs numerical {_fmt(r.num_rel)}  {result}"
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
    if a.shape != r.shape:
        return np.inf, np.inf
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


def _protocol_row(what: str, problem: str) -> Row:
    return Row(what, (), None, None, None, None, not problem, problem, "protocol")


def _same_trees(a, b) -> bool:
    """Whether two pytrees hold the same structure and bit-for-bit the same values."""
    la, da = jax.tree_util.tree_flatten(a)
    lb, db = jax.tree_util.tree_flatten(b)
    if da != db:
        return False
    for x, y in zip(la, lb, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        nan = x.dtype.kind in "fc" and y.dtype.kind in "fc"
        if x.shape != y.shape or not np.array_equal(x, y, equal_nan=nan):
            return False
    return True


def _run_backward(backward: Callable, cache, g, *, dparams_only: Callable | None = None):
    """``backward(cache, g)`` as the checker runs it: ``(grads, aux)``.

    On NumPy arrays it runs it a second time from the same cache and copies the cache and
    ``g`` first: ``aux`` says whether the cache or ``g`` changed and whether the second run
    gave the same gradients (a backward that writes into its cache passes a single run).
    ``dparams_only(cache, g)``, when given, is the parameter gradients of the mode training
    uses (``need_dx=False``), kept in ``aux["nodx"]`` on either array type."""
    aux = {}
    on_numpy = isinstance(g, np.ndarray)
    if on_numpy:
        cache_before, g_before = jax.tree_util.tree_map(np.copy, cache), g.copy()
    grads = backward(cache, g)
    if on_numpy:
        aux["cache"] = not _same_trees(cache, cache_before)
        aux["again"] = not _same_trees(backward(cache, g), grads)
        aux["dout"] = not _same_trees(g, g_before)
    if dparams_only is not None:
        aux["nodx"] = dparams_only(cache, g)
    return grads, aux


def _protocol_rows(aux) -> list[Row]:
    checks = [
        ("cache", "backward wrote into its cache"),
        ("again", "a second backward from the same cache gave other gradients"),
        ("dout", "backward wrote into dout"),
    ]
    return [
        _protocol_row(f"backward ({key})", problem if aux[key] else "")
        for key, problem in checks
        if key in aux
    ]


def _nodx_rows(nodx: dict, ref: dict, rtol: float) -> list[Row]:
    """The gradients of the ``need_dx=False`` run against JAX's, leaf by leaf."""
    rows = []
    for key, tree in nodx.items():
        leaves, treedef = jax.tree_util.tree_flatten_with_path({key: ref[key]})
        try:
            got = treedef.flatten_up_to({key: tree})
        except (ValueError, TypeError) as e:
            rows.append(Row("need_dx=False", (), np.inf, np.inf, None, None, False, str(e)))
            continue
        for (path, r), a in zip(leaves, got, strict=True):
            what = f"{_leaf_name(path)} (need_dx=False)"
            if a is None or tuple(np.shape(a)) != tuple(np.shape(r)):
                problem = "is None" if a is None else f"shape {tuple(np.shape(a))}"
                rows.append(Row(what, np.shape(r), np.inf, np.inf, None, None, False, problem))
                continue
            j_abs, j_rel = _errors(a, r)
            ok = j_rel <= rtol
            problem = "" if ok else "vs jax"
            rows.append(Row(what, np.shape(r), j_abs, j_rel, None, None, ok, problem))
    return rows


def _reference_row(reference: Callable, primal, outs, rtol: float) -> Row:
    """The forward (NumPy's and JAX's) against an independent reference; a reference may
    raise ``AssertionError`` for a law it checks instead of a value (Dropout's keep rate)."""
    shape = np.shape(outs[0])
    try:
        want = np.asarray(reference(primal, outs[0]), dtype=np.float64)
    except AssertionError as e:
        return Row("forward", shape, None, None, None, None, False, str(e), "reference")
    errs = [_errors(out, want) for out in outs]
    j_abs, j_rel = max(e[0] for e in errs), max(e[1] for e in errs)
    ok = j_rel <= rtol
    return Row("forward", shape, j_abs, j_rel, None, None, ok, "" if ok else "vs reference",
               "reference")  # fmt: skip


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
    reference: Callable | None = None,
    jax_fwd: Callable | None = None,
) -> Report:
    """``hand_grad(primal, g) -> (grads, aux)``, with ``aux`` from :func:`_run_backward`;
    ``jax_fwd`` (default ``fwd``) is the forward whose ``jax.vjp`` is the reference."""
    jax_fwd = jax_fwd or fwd
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
        g = draw(rng, jax.eval_shape(jax_fwd, as_jax).shape)
        g_jax = jax.device_put(g)

        # One compiled program each: op-by-op dispatch would compile every op separately.
        out_ref, ref = _jit_once(_vjp_of(jax_fwd))(as_jax, g_jax)
        if arrays == "jax":
            hand, aux = jax.tree_util.tree_map(np.asarray, _jit_once(hand_grad)(as_jax, g_jax))
        out = np.asarray(fwd(primal))  # the NumPy forward: the forward row compares the two
        if arrays == "numpy":  # a copy of g: a backward that writes into it is reported
            hand, aux = hand_grad(primal, g.copy())

        fwd_err = _errors(out, out_ref)
        rows = [Row("forward", out.shape, *fwd_err, None, None, fwd_err[1] <= rtol)]
        if reference is not None:
            rows.append(_reference_row(reference, before, (out, np.asarray(out_ref)), rtol))
        grad_rows = _gradient_rows(
            fwd, primal, hand, ref, g, rng, rtol=rtol, num_rtol=num_rtol, num_atol=num_atol,
            h=h, numerical=numerical, max_numerical=max_numerical,
        )  # fmt: skip
        rows += grad_rows
        if grad_rows and grad_rows[0].what != "structure":
            rows += _nodx_rows(aux.get("nodx", {}), ref, rtol) + _protocol_rows(aux)
        rows += _mutated_input_rows(primal, before)
    return Report(name, in_shapes, rows)


def _mutated_input_rows(primal, before) -> list[Row]:
    """A protocol row for every leaf of ``primal`` that differs from its copy ``before``."""
    p_leaves = jax.tree_util.tree_flatten_with_path(primal)[0]
    return [
        _protocol_row(_leaf_name(path), "input was mutated")
        for (path, p), q in zip(p_leaves, jax.tree_util.tree_leaves(before), strict=True)
        if not np.array_equal(p, q, equal_nan=True)
    ]


def _vjp_of(fwd: Callable) -> Callable:
    """``(p, g) -> (fwd(p), the vjp of fwd at p applied to g)``: JAX's side of a check."""

    def vjp(p, g):
        out, pull = jax.vjp(fwd, p)
        return out, pull(g)[0]

    return vjp


def _gradient_rows(fwd, primal, hand, ref, g, rng, *, rtol, num_rtol, num_atol, h, numerical,
                   max_numerical) -> list[Row]:  # fmt: skip
    """One row per leaf of ``primal``: the hand-written gradient against JAX's and against
    central differences on up to ``max_numerical`` sampled elements."""
    p_leaves, p_def = jax.tree_util.tree_flatten_with_path(primal)
    r_leaves = jax.tree_util.tree_leaves(ref)
    try:
        h_leaves = p_def.flatten_up_to(hand)
    except (ValueError, TypeError) as e:
        return [Row("structure", (), np.inf, np.inf, None, None, False, str(e))]
    rows = []
    flat_primal = [leaf for _, leaf in p_leaves]
    for k, ((path, p), a, r) in enumerate(zip(p_leaves, h_leaves, r_leaves, strict=True)):
        what = _leaf_name(path)
        problem = ""
        if a is None:
            problem = "is None"
        elif tuple(np.shape(a)) != tuple(p.shape):
            problem = f"shape {tuple(np.shape(a))} != {tuple(p.shape)}"
        elif np.asarray(a).dtype != p.dtype:
            problem = f"dtype {np.asarray(a).dtype} != {p.dtype}"
        if problem:
            rows.append(Row(what, p.shape, np.inf, np.inf, np.inf, np.inf, False, problem))
            continue
        j_abs, j_rel = _errors(a, r)
        n_abs = n_rel = None
        if numerical and p.size:
            idx = np.arange(p.size)
            if p.size > max_numerical:
                idx = np.sort(rng.choice(p.size, max_numerical, replace=False))
            num = _directional_numerical(fwd, p_def, flat_primal, k, idx, g, h)
            n_abs, n_rel = _errors(np.asarray(a).reshape(-1)[idx], num)
        ok = j_rel <= rtol and (n_rel is None or n_rel <= num_rtol or n_abs <= num_atol)
        problem = "" if ok else ("vs jax" if j_rel > rtol else "vs numerical")
        rows.append(Row(what, p.shape, j_abs, j_rel, n_abs, n_rel, ok, problem))
    return rows


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
    reference: Callable | None = None,
    jax_forward: Callable | None = None,
    **options,
) -> Report:
    """Compare ``layer.backward`` with ``jax.vjp`` of ``layer.forward`` and with central
    differences, in float64, under a random Gaussian cotangent.

    Returns a :class:`Report`; raises :class:`GradcheckError` on a mismatch unless
    ``raise_on_failure=False``.  ``forward_kwargs`` (e.g. ``train=True``) go to the forward.
    Besides the gradients it checks the rest of the protocol: ``backward(...,
    need_dx=False)`` (the mode training runs) gives JAX's parameter gradients too, and on
    NumPy a second backward from the same cache gives the same gradients, with the cache,
    the cotangent and the inputs unchanged.  ``reference(params, x, out) -> expected``, an
    independent forward (a closed form, ``lax``), is compared with the layer's NumPy and JAX
    forwards at ``rtol``: ``jax.vjp`` of a consistently wrong forward agrees with its own
    backward.  ``out`` is the NumPy forward's output, for a random layer's reference.
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

    def backward(cache, g):
        dparams, dx = layer.backward(cache, g)
        return {"params": dparams, "x": dx}

    def dparams_only(cache, g):
        return {"params": layer.backward(cache, g, need_dx=False)[0]}

    def hand(tree, g):
        _, cache = layer.forward(full(tree), tree["x"], **kw)
        return _run_backward(backward, cache, g, dparams_only=dparams_only)

    ref = None
    if reference is not None:

        def ref(tree, out):
            return reference(full(tree), tree["x"], out)

    jax_fwd = None
    if jax_forward is not None:

        def jax_fwd(tree):
            return jax_forward(full(tree), tree["x"])

    primal = {"params": trainable(params), "x": x}
    report = _check(
        layer.name, str(tuple(np.shape(x))), fwd, hand, primal, reference=ref, jax_fwd=jax_fwd,
        **options,
    )  # fmt: skip
    return report.raise_for_failure() if raise_on_failure else report


def check_loss(
    loss: Loss,
    y,
    t,
    *,
    raise_on_failure: bool = True,
    reference: Callable | None = None,
    **options,
) -> Report:
    """Like :func:`check_layer` for a loss: the gradient w.r.t. ``y`` (``t`` is data), under a
    random scalar cotangent ``dloss``; ``reference(y, t) -> expected loss``; the same
    ``options``."""
    t = _f64(t)

    def fwd(tree):
        return loss.forward(tree["y"], t)[0]

    def hand(tree, g):
        _, cache = loss.forward(tree["y"], t)
        return _run_backward(lambda c, g: {"y": loss.backward(c, g)}, cache, g)

    ref = None if reference is None else (lambda tree, out: reference(tree["y"], t))
    shapes = f"{tuple(np.shape(y))}, t {tuple(np.shape(t))}"
    report = _check(loss.name, shapes, fwd, hand, {"y": y}, reference=ref, **options)
    return report.raise_for_failure() if raise_on_failure else report


def check_vjp(
    name: str,
    forward: Callable[..., tuple[Any, Any]],
    backward: Callable[[Any, Any], Any],
    primals: dict,
    *,
    raise_on_failure: bool = True,
    reference: Callable | None = None,
    **options,
) -> Report:
    """The same check for any pure pair ``forward(**primals) -> (out, cache)`` and
    ``backward(cache, dout) -> grads``, with ``grads`` a tuple in ``primals``' order (a
    computational-graph node's ``(dx, dy)``); ``reference(**primals) -> expected out``; the
    same ``options``."""
    keys = list(primals)

    def fwd(tree):
        return forward(*(tree[k] for k in keys))[0]

    def hand(tree, g):
        _, cache = forward(*(tree[k] for k in keys))
        return _run_backward(lambda c, g: dict(zip(keys, backward(c, g), strict=True)), cache, g)

    ref = None if reference is None else (lambda tree, out: reference(**tree))
    shapes = ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in primals.items())
    report = _check(name, shapes, fwd, hand, dict(primals), reference=ref, **options)
    return report.raise_for_failure() if raise_on_failure else report


def check_refuses(
    name: str,
    in_shapes: str,
    call: Callable[[], Any],
    *,
    errors: tuple[type[BaseException], ...] = (ValueError,),
    raise_on_failure: bool = True,
) -> Report:
    """That ``call()`` refuses its input with one of ``errors`` (a loss given a logit of −inf
    at the label must raise, not return inf): a :class:`Report` of one row."""
    try:
        value = call()
    except errors:
        problem = ""
    except Exception as e:  # the wrong refusal: reported with its type
        problem = f"raised {type(e).__name__}: {e}"
    else:
        shown = np.asarray(value[0] if isinstance(value, tuple) else value)
        problem = f"returned {shown if shown.size < 5 else shown.shape} instead of raising"
    report = Report(name, in_shapes, [_protocol_row("refuses", problem)])
    return report.raise_for_failure() if raise_on_failure else report


__all__ = [
    "GradcheckError",
    "Report",
    "Row",
    "check_layer",
    "check_loss",
    "check_refuses",
    "check_vjp",
]
