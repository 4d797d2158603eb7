"""What the checker catches beyond a gradient that disagrees with ``jax.vjp`` of the same
forward: a backward that writes into its cache or its cotangent, parameter gradients wrong
only in the ``need_dx=False`` mode training runs, a forward that is wrong consistently on
both sides (caught by an independent reference), a loss that returns a non-finite value
instead of refusing it, and the kernels' edges (unequal padding, pools of 144 offsets).

Each feature is shown catching a planted bug: a wrapped layer here, or a mutation of the
library (``ast_mutation``) that the catalogue's new cases must catch.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from ast_mutation import Mutation as M
from ast_mutation import mutant
from catalogue import failures

import funcnet as fn
from funcnet import gradcheck
from funcnet.cli import _reference, check


def square(mutates: str = "", factor: float = 1.0) -> fn.Layer:
    """y = factor·x², ∂L/∂x = 2·factor·x·∂L/∂y; ``mutates`` names what its backward writes
    into after computing a correct gradient ("cache" or "dout")."""

    def init(rng, in_shape, dtype=np.float32):
        return tuple(in_shape), ()

    def forward(params, x, *, train=False, rng=None):
        return factor * x * x, (x * 1.0,)

    def backward(cache, dout, *, need_dx=True):
        (x,) = cache
        dx = 2 * factor * x * dout
        if mutates == "cache" and isinstance(x, np.ndarray):
            x *= 2
        if mutates == "dout" and isinstance(dout, np.ndarray):
            dout[...] = 0
        return (), (dx if need_dx else None)

    return fn.Layer("square", init, forward, backward)


X = np.random.default_rng(0).standard_normal((3, 4))


def problems(report) -> dict[str, str]:
    return {r.what: r.problem for r in report.rows if not r.ok}


def test_the_clean_layers_pass_every_new_row():
    report = fn.check_layer(square(), (), X, reference=lambda p, x, out: x * x)
    whats = [r.what for r in report.rows]
    assert report.ok and whats[:2] == ["forward", "forward"]
    assert {"backward (cache)", "backward (again)", "backward (dout)"} <= set(whats)
    dense = fn.Dense(3)
    _, params = dense.init(0, (-1, 4), dtype=np.float64)
    report = fn.check_layer(dense, params, X)
    nodx = {"params.W (need_dx=False)", "params.b (need_dx=False)"}
    assert report.ok and nodx <= {r.what for r in report.rows}


def test_a_backward_that_writes_into_its_cache_fails():
    # Its first gradient is right: one backward per check would pass it.
    report = fn.check_layer(square("cache"), (), X, raise_on_failure=False)
    assert problems(report) == {
        "backward (cache)": "backward wrote into its cache",
        "backward (again)": "a second backward from the same cache gave other gradients",
    }


def test_a_backward_that_writes_into_dout_fails():
    report = fn.check_layer(square("dout"), (), X, raise_on_failure=False)
    assert problems(report) == {
        "backward (dout)": "backward wrote into dout",
        "backward (again)": "a second backward from the same cache gave other gradients",
    }


@pytest.mark.parametrize("arrays", ["numpy", "jax"])
def test_dparams_wrong_only_with_need_dx_false_fail(arrays):
    dense = fn.Dense(3)
    _, params = dense.init(0, (-1, 4), dtype=np.float64)

    def backward(cache, dout, *, need_dx=True):
        dparams, dx = dense.backward(cache, dout, need_dx=need_dx)
        return (dparams if need_dx else {**dparams, "W": 1.001 * dparams["W"]}), dx

    broken = dense._replace(backward=backward)
    report = fn.check_layer(broken, params, X, arrays=arrays, raise_on_failure=False)
    assert problems(report) == {"params.W (need_dx=False)": "vs jax"}
    row = next(r for r in report.rows if r.what == "params.W (need_dx=False)")
    assert row.jax_rel == pytest.approx(1e-3, rel=1e-6)


def test_a_consistently_wrong_forward_fails_only_against_a_reference():
    wrong = square(factor=1.001)  # forward and backward agree with each other
    assert fn.check_layer(wrong, (), X).ok
    report = fn.check_layer(wrong, (), X, reference=lambda p, x, out: x * x, raise_on_failure=False)
    assert problems(report) == {"forward": "vs reference"}
    assert report.max_ref_rel == pytest.approx(1e-3, rel=1e-6)


def test_a_reference_may_state_a_law_instead_of_a_value():
    def law(p, x, out):
        raise AssertionError("kept 0.4 of the units")

    report = fn.check_layer(square(), (), X, reference=law, raise_on_failure=False)
    assert problems(report) == {"forward": "kept 0.4 of the units"}


def test_check_refuses():
    def returns_inf():
        return fn.softmax_cross_entropy.forward(np.array([[0.0, 1.0]]), np.array([0]))[0] + np.inf

    assert gradcheck.check_refuses("ce", "", returns_inf, raise_on_failure=False).rows[0].problem
    z = np.array([[0.0, -np.inf]])
    report = gradcheck.check_refuses("ce", "", lambda: fn.softmax_cross_entropy.forward(z, [1]))
    assert report.ok
    with pytest.raises(fn.GradcheckError, match="returned inf instead of raising"):
        gradcheck.check_refuses("ce", "(1, 2)", returns_inf)


def test_no_zero_is_printed_where_no_numerical_check_ran():
    reports = check.builtin_checks(kinds={"activation"}, match="Relu")
    jax_row = next(r for r in reports if r.name.endswith("[jax]"))
    assert jax_row.max_num_rel is None and "vs numerical         -" in str(jax_row)
    table = check._table(reports).splitlines()
    assert table[0].split()[-4:] == ["reference", "vs", "numerical", "result"]
    line = next(line for line in table if line.startswith("Relu [jax]"))
    assert line.split()[-2:] == ["-", "pass"] and "0.00e+00  pass" not in line


def test_every_catalogue_layer_has_an_independent_reference():
    for case in check.layer_cases() + check.edge_cases():
        name, kw = case.spelled or case.make().name, case.forward_kwargs or {}
        assert _reference.reference(name, bool(kw.get("train"))) is not None, name


def test_a_crashing_case_is_a_failed_report_not_a_crash(monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("kernel broke")

    monkeypatch.setattr(check.gradcheck, "check_layer", crash)
    reports = check.builtin_checks(kinds={"activation"}, match="Relu", arrays={"numpy"})
    (report,) = reports
    assert not report.ok and "raised RuntimeError: kernel broke" in str(report)


NUMPY = "funcnet.layers._conv_numpy"
# Each is caught by a case the clean code passes: ``funcnet check`` passing whole, the new
# cases included, is test_examples.py's test_cli_check_passes_and_fails_when_a_gradient_is_wrong.
PLANTED = [
    # An int8 arg for a window of 129-255 offsets: it wraps, the gradient goes astray.
    M(NUMPY, "np.int8 if n <= 127 else np.int32", "np.int8 if n <= 255 else np.int32",
      "MaxPool(12) (", "numpy"),
    M(NUMPY, "np.int8 if n <= 127 else np.int32", "np.int8 if n <= 255 else np.int32",
      "MaxPool(12, stride=1)", "numpy"),
    # Unequal height and width padding, each read as the other's.
    M(NUMPY, "x0 + padding[1] - stride[1] * v0", "x0 + padding[0] - stride[1] * v0",
      "Conv(3, 3, padding=(0, 1), bias=False)", "numpy"),
    M(NUMPY, "padded_shape((n, c, *in_hw), padding)", "padded_shape((n, c, *in_hw), padding[::-1])",
      "AvgPool(3, stride=1, padding=(0, 1))", "numpy", inside="avgpool_backward"),
    M(NUMPY, "crop(dx, in_hw, padding)", "crop(dx, in_hw, padding[::-1])",
      "AvgPool(3, stride=1, padding=(0, 1))", "numpy", inside="avgpool_backward"),
    M(NUMPY, "crop(dx, in_hw, padding)", "crop(dx, in_hw, padding[::-1])",
      "MaxPool(3, stride=1, padding=(0, 1))", "numpy", inside="maxpool_backward"),
    # Consistently wrong forwards: jax.vjp of the same forward agrees with the backward.
    M("funcnet.layers.normalization", 'xp.sqrt(running["var"] + eps)',
      'xp.sqrt(running["var"]) + eps', "BatchNorm (eval)"),
    M("funcnet.layers.dropout", "keep = uniform01(rng, x.shape, x.dtype, xp) >= p",
      "keep = uniform01(rng, x.shape, x.dtype, xp) >= 1 - p", "keep rate"),
    M("funcnet.layers.dropout", "1 / (1 - p)", "1 / p", "Dropout(0.4) (train)"),
    # A loss of inf returned instead of refused.
    M("funcnet.losses", "is_concrete(loss) and not math.isfinite(loss)",
      "is_concrete(loss) and math.isnan(loss)", "refuses: -inf logit at the label",
      inside="_cross_entropy_forward"),
    # A backward that writes into its cache: right the first time.
    M("funcnet.layers.activations", "imul(imul(1 - y, y), dout)", "imul(imul(y, 1 - y), dout)",
      "Sigmoid", "numpy"),
    # Parameter gradients wrong only where training asks for no input gradient.
    M("funcnet.layers.normalization", "return dparams, None",
      'return {**dparams, "gamma": 1.001 * dparams["gamma"]}, None', "BatchNorm (train)",
      inside="BatchNorm"),
    M("funcnet.layers._conv_reference", "return dW, db, None", "return 1.001 * dW, db, None",
      "Conv(4, 3, padding=1)", "jax"),
]  # fmt: skip


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("mutation", PLANTED, ids=[m.id for m in PLANTED])
def test_the_catalogue_catches_what_a_single_vjp_comparison_let_through(monkeypatch, mutation):
    function, code, where = mutant(mutation)
    monkeypatch.setattr(function, "__code__", code)
    jax.clear_caches()  # jitted kernels traced with the original
    assert failures(mutation.catch, mutation.arrays), (
        f"no case {mutation.catch!r} caught {mutation.new!r} in {where}"
    )
