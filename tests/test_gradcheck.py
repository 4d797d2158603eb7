"""The checker itself: its tolerances bite, it compares against an independent reference on
both sides, and it reports the error it measured."""

from __future__ import annotations

import numpy as np
import pytest

import funcnet as fn


def scaled(layer, factor):
    """``layer`` with its input gradient multiplied by ``factor``."""

    def backward(cache, dout, *, need_dx=True):
        dparams, dx = layer.backward(cache, dout, need_dx=need_dx)
        return dparams, (None if dx is None else dx * factor)

    return layer._replace(backward=backward)


@pytest.fixture
def case():
    layer = fn.pipeline(fn.Dense(4), fn.Tanh())
    _, params = layer.init(0, (-1, 3), dtype=np.float64)
    return layer, params, np.random.default_rng(1).standard_normal((5, 3))


def test_a_1e7_error_fails_against_jax_alone(case):
    layer, params, x = case
    assert fn.check_layer(layer, params, x, numerical=False).ok
    report = fn.check_layer(
        scaled(layer, 1 + 1e-7), params, x, numerical=False, raise_on_failure=False
    )
    row = next(r for r in report.rows if r.what == "x")
    assert not report.ok and row.problem == "vs jax"


def test_the_reported_relative_error_is_the_one_put_in(case):
    layer, params, x = case
    report = fn.check_layer(scaled(layer, 1.001), params, x, raise_on_failure=False)
    row = next(r for r in report.rows if r.what == "x")
    assert row.jax_rel == pytest.approx(1e-3, rel=1e-6)
    assert row.num_rel == pytest.approx(1e-3, rel=1e-3)
    assert all(r.ok for r in report.rows if r.what != "x")  # W, b and forward untouched


def test_the_numerical_side_fails_on_its_own(case):
    layer, params, x = case
    report = fn.check_layer(scaled(layer, 1 + 1e-5), params, x, rtol=np.inf, raise_on_failure=False)
    row = next(r for r in report.rows if r.what == "x")
    assert not report.ok and row.problem == "vs numerical"


def test_raise_on_failure_and_the_report_text(case):
    layer, params, x = case
    with pytest.raises(fn.GradcheckError, match=r"x .* FAIL vs jax"):
        fn.check_layer(scaled(layer, 1.001), params, x)


def test_a_gradient_of_the_wrong_structure_or_dtype_fails(case):
    layer, params, x = case

    def no_dx(cache, dout, *, need_dx=True):
        return layer.backward(cache, dout)[0], None

    def float32(cache, dout, *, need_dx=True):
        dparams, dx = layer.backward(cache, dout, need_dx=need_dx)
        return dparams, (None if dx is None else dx.astype(np.float32))

    for broken, problem in ((no_dx, "is None"), (float32, "dtype float32 != float64")):
        report = fn.check_layer(layer._replace(backward=broken), params, x, raise_on_failure=False)
        assert not report.ok and any(r.problem == problem for r in report.rows)


def test_check_vjp_for_a_graph_node():
    rng = np.random.default_rng(0)
    primals = {"x": rng.standard_normal((3, 4)), "y": rng.standard_normal(4)}
    assert fn.check_vjp("mul", fn.mul.forward, fn.mul.backward, primals).ok

    def wrong(cache, dout):
        dx, dy = fn.mul.backward(cache, dout)
        return dx, dy * 1.001

    report = fn.check_vjp("mul", fn.mul.forward, wrong, primals, raise_on_failure=False)
    assert [r.what for r in report.rows if not r.ok] == ["y"]


def test_compiler_options_an_xla_does_not_know_are_dropped_and_the_check_still_runs(
    case, monkeypatch
):
    from funcnet import gradcheck

    monkeypatch.setattr(gradcheck, "_ONE_CALL_OPTIONS", {"xla_no_such_option_here": False})
    layer, params, x = case
    assert fn.check_layer(layer, params, x, numerical=False, arrays="jax").ok
    assert gradcheck._ONE_CALL_OPTIONS == {}  # and later checks compile without them


def test_an_error_while_compiling_the_check_is_raised_not_taken_for_an_option(case):
    import jax

    from funcnet import gradcheck

    layer, params, x = case
    options = dict(gradcheck._ONE_CALL_OPTIONS)

    def backward(cache, dout, *, need_dx=True):
        float(dout.sum())  # a Python branch on a value: fails under jit
        return layer.backward(cache, dout, need_dx=need_dx)

    with pytest.raises(jax.errors.ConcretizationTypeError):
        fn.check_layer(layer._replace(backward=backward), params, x, arrays="jax")
    assert gradcheck._ONE_CALL_OPTIONS == options
