"""``funcnet check`` reaches every code path of every built-in layer, loss and graph node.

Each mutation below puts a realistic error (a factor 1.001, a wrong axis, a skipped guard)
into one path; the part of the catalogue that covers that kind must then fail.  Mutations
are made on the syntax tree (``ast_mutation``): a site is its code as it reads today, in
which every name matches any name, so renames, reformatting and edits around a site leave
it working; a site whose code is gone, or matches twice, fails loudly.

A new path gets its mutation here: ``M(module, old, new, catch, arrays)``, ``old`` the
smallest expression or statement that is unique in the module (else write more of the
statement, or add ``inside="function"``), ``catch`` a part of the label of the cases
meant to catch it.
"""

from __future__ import annotations

import pytest
from ast_mutation import Mutation as M
from catalogue import apply, failures

import funcnet as fn
from funcnet.cli import check

NUMPY = "funcnet.layers._conv_numpy"
REF = "funcnet.layers._conv_reference"
XLA = "funcnet.layers._conv_xla"
NORM = "funcnet.layers.normalization"
ACT = "funcnet.layers.activations"

MUTATIONS = [
    # NumPy's conv kernels
    M(NUMPY, "W2 @ g.cols(src[s])", "1.001 * (W2 @ g.cols(src[s]))", "chunks", "numpy"),
    M(
        NUMPY,
        "dW += d @ g.cols(x[s]).T",
        "dW += 1.001 * (d @ g.cols(x[s]).T)",
        "Conv(2, (3, 2)",
        "numpy",
    ),
    M(
        NUMPY,
        "col2im_chunk(W2.T @ d, g, s.stop - s.start, x.shape[1], in_hw, padding)",
        "1.001 * col2im_chunk(W2.T @ d, g, s.stop - s.start, x.shape[1], in_hw, padding)",
        "chunks",
        "numpy",
    ),
    M(
        NUMPY,
        "db = dout.sum(axis=(0, 2, 3)) if bias else None",
        "db = 1.001 * dout.sum(axis=(0, 2, 3)) if bias else None",
        "Conv(2, (3, 2)",
        "numpy",
    ),
    M(NUMPY, "sub @ g.cols(buf=buf)", "1.001 * (sub @ g.cols(buf=buf))", "dx as conv", "numpy"),
    M(
        NUMPY,
        "W[:, :, a :: stride[0], b :: stride[1]][:, :, ::-1, ::-1]",
        "W[:, :, a :: stride[0], b :: stride[1]][:, :, ::-1, :]",
        "Conv(3, (2, 3), stride=2, padding=1)",
        "numpy",
    ),
    M(
        NUMPY,
        "flat[:, :, at : at + run] += parts[:, i, j].reshape(c, m, run).transpose(1, 0, 2)",
        "flat[:, :, at : at + run] += 1.001 * parts[:, i, j].reshape(c, m, run).transpose(1, 0, 2)",
        "Conv(4, 3, padding=1)",
        "numpy",
    ),
    M(
        NUMPY,
        "parts[:, i, j].transpose(1, 0, 2, 3)",
        "1.001 * parts[:, i, j].transpose(1, 0, 2, 3)",
        "Conv(2, (3, 2)",
        "numpy",
    ),
    M(
        NUMPY,
        "window(dx, i, j, stride, out_hw)[...] += p",
        "window(dx, i, j, stride, out_hw)[...] += 1.001 * p",
        "AvgPool(3",
        "numpy",
    ),
    M(
        NUMPY,
        "np.maximum(cum[k - 1], views[k], out=cum[k])",
        "np.maximum(cum[k - 1], 1.001 * views[k], out=cum[k])",
        "MaxPool(2)",
        "numpy",
    ),
    M(NUMPY, "np.less(cum, best)", "np.less_equal(cum, best)", "MaxPool(2)", "numpy"),
    M(
        NUMPY,
        "np.maximum(best, v, out=best)",
        "np.maximum(best, 1.001 * v, out=best)",
        "MaxPool(3, stride=2",
        "numpy",
    ),
    M(NUMPY, "range(n - 2, -1, -1)", "range(n - 1)", "ties", "numpy"),
    M(NUMPY, "arg == i * kernel[1] + j", "arg == i * kernel[0] + j", "MaxPool((2, 3)", "numpy"),
    M(
        NUMPY,
        "np.multiply(dout, hit, out=out)",
        "np.multiply(1.001 * dout, hit, out=out)",
        "MaxPool(2)",
        "numpy",
    ),
    M(
        NUMPY,
        "np.multiply(dout, hit, out=out)",
        "np.multiply(1.001 * dout, hit, out=out)",
        "MaxPool(3, stride=2",
        "numpy",
    ),
    M(
        NUMPY,
        "total /= kernel[0] * kernel[1]",
        "total /= 1.001 * kernel[0] * kernel[1]",
        "AvgPool(2)",
        "numpy",
    ),
    M(NUMPY, "np.copyto(out, share)", "np.copyto(out, 1.001 * share)", "AvgPool(2)", "numpy"),
    M(NUMPY, "bool(np.isfinite(dout).all())", "True", "inf dout", "numpy"),
    M(
        NUMPY,
        "share = dout / (kernel[0] * kernel[1])",
        "share = 1.001 * dout / (kernel[0] * kernel[1])",
        "AvgPool",
        "numpy",
    ),
    # XLA's conv backward
    M(XLA, "return dW, db, dx", "return dW, db, 1.001 * dx", "algorithm='xla'", "jax"),
    M(
        XLA,
        "_conv(x, dout, pads, last, rhs_dilation=stride, dn=dn)",
        "_conv(x, dout, pads, last, rhs_dilation=(1, 1), dn=dn)",
        "stride=2, padding=1, algorithm='xla'",
        "jax",
    ),
    # the reference kernels (JAX arrays)
    M(
        REF,
        "(d @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(W.shape)",
        "1.001 * (d @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(W.shape)",
        "Conv(2, (3, 2)",
        "jax",
    ),
    M(
        REF,
        "W.reshape(f, -1).T @ d",
        "1.001 * (W.reshape(f, -1).T @ d)",
        "Conv(4, 3, padding=1)",
        "jax",
    ),
    M(REF, "total + p", "total + 1.001 * p", "Conv(4, 3, padding=1)", "jax", inside="col2im"),
    M(
        REF,
        "parts.reshape(kh, kw, n, c, oh, ow).transpose(2, 3, 4, 0, 5, 1)",
        "parts.reshape(kh, kw, n, c, oh, ow).transpose(2, 3, 4, 1, 5, 0)",
        "MaxPool(2)",
        "jax",
    ),
    M(
        REF,
        "W.reshape(f, -1) @ cols",
        "1.001 * (W.reshape(f, -1) @ cols)",
        "Conv(4, 3, padding=1)",
        "jax",
    ),
    M(REF, "s > best", "s >= best", "ties", "numpy jax"),
    M(REF, "arg == i * kernel[1] + j", "arg == i * kernel[0] + j", "MaxPool((2, 3)", "jax"),
    M(
        REF,
        "return total / (kernel[0] * kernel[1])",
        "return 1.001 * total / (kernel[0] * kernel[1])",
        "AvgPool((2, 3)",
        "numpy jax",
    ),
    M(
        REF,
        "share = dout / (kernel[0] * kernel[1])",
        "share = 1.001 * dout / (kernel[0] * kernel[1])",
        "AvgPool",
        "jax",
    ),
    # the other layers
    M(
        NORM,
        "return dparams, imul(dx, scale)",
        "return dparams, imul(1.001 * dx, scale)",
        "BatchNorm (train)",
    ),
    M(
        NORM,
        "dout - xp.reshape(dbeta / m, bshape)",
        "dout - xp.reshape(1.001 * dbeta / m, bshape)",
        "BatchNorm (train)",
    ),
    M(
        NORM,
        "return dparams, dout * scale",
        "return dparams, 1.001 * dout * scale",
        "BatchNorm (eval)",
    ),
    M(
        NORM,
        "dgamma, dbeta = (dout * xn).sum(axis=axes), dout.sum(axis=axes)",
        "dgamma, dbeta = (1.001 * dout * xn).sum(axis=axes), dout.sum(axis=axes)",
        "BatchNorm (eval)",
    ),
    M(
        "funcnet.layers.dropout",
        "return (), dout * mask",
        "return (), 1.001 * dout * mask",
        "Dropout(0.4) (train)",
    ),
    M(
        "funcnet.layers.dropout",
        "return (), (dout if eval_scale == 1.0 else dout * scale)",
        "return (), (dout if eval_scale == 1.0 else 1.001 * dout * scale)",
        "scale_at=eval) (eval)",
    ),
    M("funcnet.layers.linear", "dW = x2.T @ d2", "dW = 1.001 * (x2.T @ d2)", "Dense(7)"),
    M(
        "funcnet.layers.linear",
        "(dout if dout.ndim == 2 else dout.reshape(-1, dout.shape[-1])).sum(axis=0)",
        "1.001 * (dout if dout.ndim == 2 else dout.reshape(-1, dout.shape[-1])).sum(0)",
        "Bias",
    ),
    M(
        ACT,
        "imul(dout - namespace(dout).sum(dout * y, axis=-1, keepdims=True), y)",
        "imul(1.001 * dout - namespace(dout).sum(dout * y, axis=-1, keepdims=True), y)",
        "Softmax",
    ),
    M(ACT, "zero_outside(dout, y > 0)", "zero_outside(dout, y >= 0)", "Relu"),
    M(ACT, "imul(imul(1 - y, y), dout)", "imul(imul(1.001 - y, y), dout)", "Sigmoid"),
    M(ACT, "imul(imul(1 - y, 1 + y), dout)", "imul(imul(1.001 - y, 1 + y), dout)", "Tanh"),
    # losses
    M(
        "funcnet.losses",
        "d[np.arange(n), t] -= scale",
        "d[np.arange(n), t] -= 1.001 * scale",
        "softmax_cross_entropy (labels)",
        "numpy",
    ),
    M(
        "funcnet.losses",
        "d.at[xp.arange(n), t].add(-scale)",
        "d.at[xp.arange(n), t].add(-1.001 * scale)",
        "softmax_cross_entropy (labels)",
        "jax",
    ),
    M(
        "funcnet.losses",
        "(p - t.astype(p.dtype)) * scale",
        "(p - (t == t.max(axis=1, keepdims=True)).astype(p.dtype)) * scale",
        "soft targets",
    ),
    M(
        "funcnet.losses",
        "d * (2 * dloss / d.size)",
        "d * (2.002 * dloss / d.size)",
        "mean_squared_error",
    ),
    # combinators and graph nodes
    M(
        "funcnet.core",
        "dout + dx if need_dx else None",
        "dout + 1.001 * dx if need_dx else None",
        "residual",
    ),
    M(
        "funcnet.core",
        "di if dx is None else dx + di",
        "di if dx is None else dx + 1.001 * di",
        "concat",
    ),
    M(
        "funcnet.graph",
        "return unbroadcast(dout * y, np.shape(x)), unbroadcast(dout * x, np.shape(y))",
        "return unbroadcast(dout * y, np.shape(x)), unbroadcast(1.001 * dout * x, np.shape(y))",
        "mul",
    ),
    M(
        "funcnet.graph",
        "return unbroadcast(dout, sx), unbroadcast(dout, sy)",
        "return unbroadcast(dout, sx), unbroadcast(1.001 * dout, sy)",
        "add",
    ),
]


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # a mutant's inf * 0
@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_an_error_in_any_path_makes_the_check_fail(monkeypatch, mutation):
    """The cases named catch it, so the whole catalogue (which includes them) fails."""
    where = apply(monkeypatch, mutation)
    assert failures(mutation.catch, mutation.arrays), (
        f"no case {mutation.catch!r} caught {mutation.new!r} in {where}"
    )


def test_every_public_layer_loss_and_node_is_in_the_catalogue():
    names = {case.make().name.split("(")[0] for case in check.layer_cases()}
    # Layers whose input or output is a tuple or integer ids have cases of their own.
    names |= {label.split("(")[0].split(" ")[0] for _, label, _ in check.sequence_entries(0)}
    args = {"Dense": (3,), "MatMul": (3,), "Conv": (3, 3), "MaxPool": (2,), "AvgPool": (2,)}
    args |= {"Embedding": (5, 3), "RNN": (3,), "LSTM": (3,), "GRU": (3,), "BiLSTM": (3,)}
    args["Bidirectional"] = (fn.LSTM(3),)
    layers = [n for n in fn.layers.__all__ if n[0].isupper()]
    for n in layers:
        assert isinstance(getattr(fn, n)(*args.get(n, ())), fn.Layer), n
    assert set(layers) <= names, set(layers) - names
    checked = {r.name.split(" ")[0] for r in check.builtin_checks(kinds={"loss", "node"})}
    assert checked == {
        "softmax_cross_entropy",
        "mean_squared_error",
        "time_softmax_cross_entropy",
        "mul",
        "add",
    }


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
