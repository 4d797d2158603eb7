"""``funcnet check`` reaches every code path of every built-in layer, loss and graph node.

Each mutation below puts a realistic error (a factor 1.001, a wrong axis, a skipped guard)
into one path, in a fresh copy of the function that holds it; the part of the catalogue
that covers that kind must then fail.  The mutations are textual: a mutation whose text is
no longer in the source fails loudly, so a rewrite of a kernel must update its mutation.
"""

from __future__ import annotations

import importlib
import inspect
import textwrap

import jax
import pytest

import funcnet as fn
from funcnet.cli import check

FAST = "funcnet.layers._conv_numpy"
REF = "funcnet.layers._conv_reference"
XLA = "funcnet.layers._conv_xla"

# (module, function, old text, new text, the cases that must catch it (a part of their
# label), the array types to run them on)
MUTATIONS = [
    (
        FAST,
        "correlate",
        "g.collect(W2 @ g.cols(src[s]), s.stop - s.start, out[s], bias)",
        "g.collect(1.001 * (W2 @ g.cols(src[s])), s.stop - s.start, out[s], bias)",
        "chunks",
        "numpy",
    ),
    (
        FAST,
        "conv_backward",
        "dW += d @ g.cols(x[s]).T",
        "dW += 1.001 * (d @ g.cols(x[s]).T)",
        "Conv(2, (3, 2)",
        "numpy",
    ),
    (
        FAST,
        "conv_backward",
        "dx[s] = col2im_chunk(",
        "dx[s] = 1.001 * col2im_chunk(",
        "chunks",
        "numpy",
    ),
    (
        FAST,
        "conv_backward",
        "db = dout.sum(axis=(0, 2, 3))",
        "db = 1.001 * dout.sum(axis=(0, 2, 3))",
        "Conv(2, (3, 2)",
        "numpy",
    ),
    (
        FAST,
        "conv_dx",
        "g.collect(sub @ g.cols(buf=buf), s.stop - s.start, target[s])",
        "g.collect(1.001 * (sub @ g.cols(buf=buf)), s.stop - s.start, target[s])",
        "dx as conv",
        "numpy",
    ),
    (
        FAST,
        "conv_dx",
        "[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)",
        "[:, :, ::-1, :].transpose(1, 0, 2, 3)",
        "Conv(3, (2, 3), stride=2, padding=1)",
        "numpy",
    ),
    (
        FAST,
        "col2im_chunk",
        "+= parts[:, i, j].reshape(c, m, run)",
        "+= 1.001 * parts[:, i, j].reshape(c, m, run)",
        "Conv(4, 3, padding=1)",
        "numpy",
    ),
    (
        FAST,
        "col2im_chunk",
        "[...] += parts[:, i, j].transpose(1, 0, 2, 3)",
        "[...] += 1.001 * parts[:, i, j].transpose(1, 0, 2, 3)",
        "Conv(2, (3, 2)",
        "numpy",
    ),
    (
        XLA,
        "_backward",
        "return dW, db, dx",
        "return dW, db, 1.001 * dx",
        "algorithm='xla'",
        "jax",
    ),
    (
        XLA,
        "_backward",
        "rhs_dilation=stride,",
        "rhs_dilation=(1, 1),",
        "stride=2, padding=1, algorithm='xla'",
        "jax",
    ),
    (FAST, "col2im", "[...] += p", "[...] += 1.001 * p", "AvgPool(3", "numpy"),
    (
        FAST,
        "maxpool_forward",
        "np.maximum(cum[k - 1], views[k], out=cum[k])",
        "np.maximum(cum[k - 1], 1.001 * views[k], out=cum[k])",
        "MaxPool(2)",
        "numpy",
    ),
    (
        FAST,
        "maxpool_forward",
        "below = np.less(cum, best)",
        "below = np.less_equal(cum, best)",
        "MaxPool(2)",
        "numpy",
    ),
    (
        FAST,
        "maxpool_forward",
        "np.maximum(best, v, out=best)",
        "np.maximum(best, 1.001 * v, out=best)",
        "MaxPool(3, stride=2",
        "numpy",
    ),
    (
        FAST,
        "maxpool_forward",
        "for k in range(n - 2, -1, -1):",
        "for k in range(n - 1):",
        "ties",
        "numpy",
    ),
    (
        FAST,
        "maxpool_backward",
        "hit = arg == i * kernel[1] + j",
        "hit = arg == i * kernel[0] + j",
        "MaxPool((2, 3)",
        "numpy",
    ),
    (
        FAST,
        "maxpool_backward",
        "return np.multiply(dout, hit, out=out)",
        "return np.multiply(1.001 * dout, hit, out=out)",
        "MaxPool(2)",
        "numpy",
    ),
    (
        FAST,
        "maxpool_backward",
        "return np.multiply(dout, hit, out=out)",
        "return np.multiply(1.001 * dout, hit, out=out)",
        "MaxPool(3, stride=2",
        "numpy",
    ),
    (
        FAST,
        "avgpool_forward",
        "total /= kernel[0] * kernel[1]",
        "total /= 1.001 * kernel[0] * kernel[1]",
        "AvgPool(2)",
        "numpy",
    ),
    (
        FAST,
        "avgpool_backward",
        "np.copyto(out, share)",
        "np.copyto(out, 1.001 * share)",
        "AvgPool(2)",
        "numpy",
    ),
    (
        FAST,
        "maxpool_backward",
        "dout_finite = bool(np.isfinite(dout).all())",
        "dout_finite = True",
        "inf dout",
        "numpy",
    ),
    (
        FAST,
        "avgpool_backward",
        "share = dout / (kernel[0] * kernel[1])",
        "share = 1.001 * dout / (kernel[0] * kernel[1])",
        "AvgPool",
        "numpy",
    ),
    (
        REF,
        "conv_backward",
        "dW = (d @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(W.shape)",
        "dW = 1.001 * (d @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(W.shape)",
        "Conv(2, (3, 2)",
        "jax",
    ),
    (
        REF,
        "conv_backward",
        "dcols = (W.reshape(f, -1).T @ d)",
        "dcols = 1.001 * (W.reshape(f, -1).T @ d)",
        "Conv(4, 3, padding=1)",
        "jax",
    ),
    (REF, "col2im", "total + p", "total + 1.001 * p", "Conv(4, 3, padding=1)", "jax"),
    (
        REF,
        "col2im",
        "transpose(2, 3, 4, 0, 5, 1)",
        "transpose(2, 3, 4, 1, 5, 0)",
        "MaxPool(2)",
        "jax",
    ),
    (
        REF,
        "conv_forward",
        "out = (W.reshape(f, -1) @ cols)",
        "out = 1.001 * (W.reshape(f, -1) @ cols)",
        "Conv(4, 3, padding=1)",
        "jax",
    ),
    (REF, "maxpool_forward", "better = s > best", "better = s >= best", "ties", "numpy jax"),
    (
        REF,
        "maxpool_backward",
        "arg == i * kernel[1] + j",
        "arg == i * kernel[0] + j",
        "MaxPool((2, 3)",
        "jax",
    ),
    (
        REF,
        "avgpool_forward",
        "return total / (kernel[0] * kernel[1])",
        "return 1.001 * total / (kernel[0] * kernel[1])",
        "AvgPool((2, 3)",
        "numpy jax",
    ),
    (
        REF,
        "avgpool_backward",
        "share = dout / (kernel[0] * kernel[1])",
        "share = 1.001 * dout / (kernel[0] * kernel[1])",
        "AvgPool",
        "jax",
    ),
    (
        "funcnet.layers.normalization",
        "BatchNorm",
        "return dparams, imul(dx, scale)",
        "return dparams, imul(1.001 * dx, scale)",
        "BatchNorm (train)",
        "numpy jax",
    ),
    (
        "funcnet.layers.normalization",
        "BatchNorm",
        "xp.reshape(dbeta / m, bshape)",
        "xp.reshape(1.001 * dbeta / m, bshape)",
        "BatchNorm (train)",
        "numpy jax",
    ),
    (
        "funcnet.layers.normalization",
        "BatchNorm",
        "return dparams, dout * scale",
        "return dparams, 1.001 * dout * scale",
        "BatchNorm (eval)",
        "numpy jax",
    ),
    (
        "funcnet.layers.normalization",
        "BatchNorm",
        "dgamma, dbeta = (dout * xn).sum(axis=axes)",
        "dgamma, dbeta = (1.001 * dout * xn).sum(axis=axes)",
        "BatchNorm (eval)",
        "numpy jax",
    ),
    (
        "funcnet.layers.dropout",
        "Dropout",
        "return (), dout * mask",
        "return (), 1.001 * dout * mask",
        "Dropout(0.4) (train)",
        "numpy jax",
    ),
    (
        "funcnet.layers.dropout",
        "Dropout",
        "else dout * scale)",
        "else 1.001 * dout * scale)",
        "scale_at=eval) (eval)",
        "numpy jax",
    ),
    (
        "funcnet.layers.linear",
        "_matmul_backward",
        "dW = x2.T @ d2",
        "dW = 1.001 * (x2.T @ d2)",
        "Dense(7)",
        "numpy jax",
    ),
    (
        "funcnet.layers.linear",
        "_bias_backward",
        "return (dout if dout.ndim == 2 else dout.reshape(-1, dout.shape[-1])).sum(axis=0)",
        "return 1.001 * (dout if dout.ndim == 2 else dout.reshape(-1, dout.shape[-1])).sum(0)",
        "Bias",
        "numpy jax",
    ),
    (
        "funcnet.layers.activations",
        "Softmax",
        "return imul(dout -",
        "return imul(1.001 * dout -",
        "Softmax",
        "numpy jax",
    ),
    (
        "funcnet.layers.activations",
        "Relu",
        "return zero_outside(dout, y > 0)",
        "return zero_outside(dout, y >= 0)",
        "Relu",
        "numpy jax",
    ),
    (
        "funcnet.layers.activations",
        "Sigmoid",
        "return imul(imul(1 - y, y), dout)",
        "return imul(imul(1.001 - y, y), dout)",
        "Sigmoid",
        "numpy jax",
    ),
    (
        "funcnet.layers.activations",
        "Tanh",
        "return imul(imul(1 - y, 1 + y), dout)",
        "return imul(imul(1.001 - y, 1 + y), dout)",
        "Tanh",
        "numpy jax",
    ),
    (
        "funcnet.losses",
        "_cross_entropy_backward",
        "d[np.arange(n), t] -= scale",
        "d[np.arange(n), t] -= 1.001 * scale",
        "softmax_cross_entropy (labels)",
        "numpy",
    ),
    (
        "funcnet.losses",
        "_cross_entropy_backward",
        "return d.at[xp.arange(n), t].add(-scale)",
        "return d.at[xp.arange(n), t].add(-1.001 * scale)",
        "softmax_cross_entropy (labels)",
        "jax",
    ),
    (
        "funcnet.losses",
        "_cross_entropy_backward",
        "return (p - t.astype(p.dtype)) * scale",
        "return (p - (t == t.max(axis=1, keepdims=True)).astype(p.dtype)) * scale",
        "soft targets",
        "numpy jax",
    ),
    (
        "funcnet.losses",
        "_mse_backward",
        "return d * (2 * dloss / d.size)",
        "return d * (2.002 * dloss / d.size)",
        "mean_squared_error",
        "numpy jax",
    ),
    (
        "funcnet.core",
        "residual",
        "return dparams, (dout + dx if need_dx else None)",
        "return dparams, (dout + 1.001 * dx if need_dx else None)",
        "residual",
        "numpy jax",
    ),
    (
        "funcnet.core",
        "concat",
        "dx = di if dx is None else dx + di",
        "dx = di if dx is None else dx + 1.001 * di",
        "concat",
        "numpy jax",
    ),
    (
        "funcnet.graph",
        "_mul_backward",
        "unbroadcast(dout * x, np.shape(y))",
        "unbroadcast(1.001 * dout * x, np.shape(y))",
        "mul",
        "numpy jax",
    ),
    (
        "funcnet.graph",
        "_add_backward",
        "unbroadcast(dout, sy)",
        "unbroadcast(1.001 * dout, sy)",
        "add",
        "numpy jax",
    ),
]


def mutate(monkeypatch, module_name, func, old, new):
    """Replace ``module.func`` by a copy whose source has ``old`` replaced by ``new``, and
    every ``Loss``/``Node`` value of the module that held the original by one holding it."""
    module = importlib.import_module(module_name)
    original = getattr(module, func)
    source = textwrap.dedent(inspect.getsource(inspect.unwrap(original)))
    if "@jit_static" not in source and hasattr(original, "__wrapped__"):
        source = "@jit_static\n" + source
    assert source.count(old) == 1, f"{func}: {old!r} is not (once) in its source any more"
    namespace = dict(vars(module))
    exec(compile(source.replace(old, new), f"<mutant of {func}>", "exec"), namespace)
    mutant = namespace[func]
    monkeypatch.setattr(module, func, mutant)
    for name, value in vars(module).items():
        if isinstance(value, fn.Loss | fn.Node) and original in value:
            fields = {k: mutant for k, v in value._asdict().items() if v is original}
            monkeypatch.setattr(module, name, value._replace(**fields))
    # Jitted kernels that call the original were traced already: trace them afresh.
    jax.clear_caches()


@pytest.fixture(autouse=True)
def _fresh_traces():
    # XLA's optimizations only cost compile time here: every case is a tiny float64 program.
    saved = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", saved)
    jax.clear_caches()  # no mutant stays in a compiled kernel for the next test


def failures(match, arrays):
    reports = check.builtin_checks(match=match, arrays=set(arrays.split()))
    assert reports, f"no case's label contains {match!r}"
    return [r.name for r in reports if not r.ok]


@pytest.mark.parametrize(
    ("module", "func", "old", "new", "match", "arrays"),
    MUTATIONS,
    ids=[f"{m[1]}:{m[3][:40]}" for m in MUTATIONS],
)
def test_an_error_in_any_path_makes_the_check_fail(
    monkeypatch, module, func, old, new, match, arrays
):
    """The cases named catch it, so the whole catalogue (which includes them) fails."""
    mutate(monkeypatch, module, func, old, new)
    assert failures(match, arrays), f"no case {match!r} caught {new!r} in {func}"


def test_every_public_layer_loss_and_node_is_in_the_catalogue():
    names = {case.make().name.split("(")[0] for case in check.layer_cases()}
    args = {"Dense": (3,), "MatMul": (3,), "Conv": (3, 3), "MaxPool": (2,), "AvgPool": (2,)}
    layers = [n for n in fn.layers.__all__ if n[0].isupper()]
    for n in layers:
        assert isinstance(getattr(fn, n)(*args.get(n, ())), fn.Layer), n
    assert set(layers) <= names, set(layers) - names
    checked = {r.name.split(" ")[0] for r in check.builtin_checks(kinds={"loss", "node"})}
    assert checked == {"softmax_cross_entropy", "mean_squared_error", "mul", "add"}


def test_the_catalogue_runs_every_conv_path(monkeypatch):
    """NumPy: chunks, dx as a convolution and dx by col2im; JAX: im2col and XLA's conv."""
    from funcnet.layers import _conv_numpy, _conv_reference, _conv_xla

    seen = {"chunks": 0, "as conv": 0, "col2im": 0, "xla": 0, "im2col": 0}
    real_chunks = _conv_numpy.chunks

    def chunks(*args):
        out = real_chunks(*args)
        seen["chunks"] += len(out) > 1
        return out

    def count(key, real):
        return lambda *a, **k: seen.__setitem__(key, seen[key] + 1) or real(*a, **k)

    monkeypatch.setattr(_conv_numpy, "chunks", chunks)
    monkeypatch.setattr(_conv_numpy, "conv_dx", count("as conv", _conv_numpy.conv_dx))
    monkeypatch.setattr(_conv_numpy, "col2im_chunk", count("col2im", _conv_numpy.col2im_chunk))
    monkeypatch.setattr(_conv_xla, "conv_backward", count("xla", _conv_xla.conv_backward))
    monkeypatch.setattr(
        _conv_reference, "conv_backward", count("im2col", _conv_reference.conv_backward)
    )
    reports = check.builtin_checks(kinds={"conv"})
    assert reports and all(r.ok for r in reports)
    assert all(seen.values()), seen
