"""Initializers: the variance each one promises, determinism from the seed, dtypes, errors."""

import numpy as np
import pytest

import funcnet as fn
from funcnet import initializers as init

FAN_IN, FAN_OUT = 400, 300
CASES = {
    "normal(0.01)": (init.normal(0.01), 0.01**2),
    "lecun_normal": (init.lecun_normal(), 1 / FAN_IN),
    "glorot_normal": (init.glorot_normal(), 2 / (FAN_IN + FAN_OUT)),
    "glorot_uniform": (init.glorot_uniform(), 2 / (FAN_IN + FAN_OUT)),
    "he_normal": (init.he_normal(), 2 / FAN_IN),
    "he_uniform": (init.he_uniform(), 2 / FAN_IN),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_variance_mean_dtype_and_determinism(name):
    f, var = CASES[name]
    w = f(0, (FAN_IN, FAN_OUT), np.float32)
    assert w.dtype == np.float32 and w.shape == (FAN_IN, FAN_OUT)
    # 120,000 samples: the sample variance is within ~1 % of the true one (4σ ≈ 1.6 %).
    assert abs(w.var() / var - 1) < 0.02, (w.var(), var)
    assert abs(w.mean()) < 4 * np.sqrt(var / w.size)
    np.testing.assert_array_equal(w, f(0, (FAN_IN, FAN_OUT), np.float32))
    assert not np.array_equal(w, f(1, (FAN_IN, FAN_OUT), np.float32))
    assert f(np.random.default_rng(0), (3, 2), np.float64).dtype == np.float64


def test_uniform_bounds_and_explicit_fans_for_a_conv_weight():
    w = init.he_uniform()(0, (30, 1, 5, 5), fan_in=25, fan_out=750)
    assert np.abs(w).max() <= np.sqrt(6 / 25)
    assert abs(w.var() / (2 / 25) - 1) < 0.15
    with pytest.raises(ValueError, match=r"cannot infer fan_in/fan_out of a 4-D shape"):
        init.he_normal()(0, (30, 1, 5, 5))


def test_get_accepts_names_floats_and_callables():
    assert init.get("he").__name__ == "he_normal"
    assert init.get("xavier").__name__ == "lecun_normal"  # the book's "Xavier" is 1/√n
    assert init.get(0.01).__name__ == "normal(0.01)"
    assert init.get(init.zeros) is init.zeros
    with pytest.raises(ValueError, match=r"unknown initializer 'bogus'"):
        init.get("bogus")
    with pytest.raises(ValueError, match=r"std must be > 0"):
        init.normal(0.0)


def test_layers_pick_their_initializer():
    _, p = fn.Dense(300, W_init="he").init(0, (-1, 400))
    assert abs(p["W"].var() / (2 / 400) - 1) < 0.03
    _, p = fn.Conv(64, 3, W_init="glorot_uniform").init(0, (-1, 32, 8, 8))
    assert abs(p["W"].var() / (2 / (32 * 9 + 64 * 9)) - 1) < 0.05
