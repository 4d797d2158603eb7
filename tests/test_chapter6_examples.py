"""Chapter 6's examples: optimizer paths and comparisons, init, BatchNorm, Dropout.

Each ``run`` is called with tiny settings and checked for its shape and, where it is cheap
and robust, for the book's qualitative result.  Each script runs once as a subprocess, as
the README writes it, in test_readme_commands.py, which also checks what it prints.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import funcnet as fn
from funcnet import models, train
from funcnet.data import load_mnist

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NAMES = [
    "optimizer_paths",
    "compare_optimizers",
    "compare_init",
    "batchnorm",
    "dropout_overfit",
]


def load(name: str):
    """An example as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"chapter6_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_mnist(mnist_dir, download=False)


@pytest.mark.parametrize("name", NAMES)
def test_docstring_has_usage_and_run_and_main(name):
    text = (EXAMPLES / f"{name}.py").read_text()
    assert text.startswith('"""') and f"python examples/{name}.py" in text
    mod = load(name)
    assert callable(mod.run) and callable(mod.main)


# --------------------------------------------------------------------------- optimizer paths


def book_paths(steps: int = 30) -> dict[str, np.ndarray]:
    """The book's common/optimizer.py update rules, written out, on x²/20 + y²."""

    def grad(p):
        return np.array([p[0] / 10.0, 2.0 * p[1]])

    out = {}
    p = np.array([-7.0, 2.0])
    pts = [p]
    for _ in range(steps):
        p = p - 0.95 * grad(p)
        pts.append(p)
    out["SGD"] = np.stack(pts)
    p, v, pts = np.array([-7.0, 2.0]), np.zeros(2), [np.array([-7.0, 2.0])]
    for _ in range(steps):
        v = 0.9 * v - 0.1 * grad(p)
        p = p + v
        pts.append(p)
    out["Momentum"] = np.stack(pts)
    p, h, pts = np.array([-7.0, 2.0]), np.zeros(2), [np.array([-7.0, 2.0])]
    for _ in range(steps):
        g = grad(p)
        h = h + g * g
        p = p - 1.5 * g / (np.sqrt(h) + 1e-7)
        pts.append(p)
    out["AdaGrad"] = np.stack(pts)
    p, m, v, pts = np.array([-7.0, 2.0]), np.zeros(2), np.zeros(2), [np.array([-7.0, 2.0])]
    for i in range(1, steps + 1):
        g = grad(p)
        lr_t = 0.3 * np.sqrt(1 - 0.999**i) / (1 - 0.9**i)
        m = m + (1 - 0.9) * (g - m)
        v = v + (1 - 0.999) * (g * g - v)
        p = p - lr_t * m / (np.sqrt(v) + 1e-7)
        pts.append(p)
    out["Adam"] = np.stack(pts)
    return out


def test_optimizer_paths_approach_the_minimum_and_match_the_book_rules():
    r = load("optimizer_paths").run()
    assert set(r["paths"]) == {"SGD", "Momentum", "AdaGrad", "Adam"}
    book = book_paths()
    for name, pts in r["paths"].items():
        assert pts.shape == (31, 2)
        np.testing.assert_array_equal(pts[0], [-7.0, 2.0])
        # The book adds its ε to √v before the bias correction (see funcnet.optim.adam):
        # ~1e-6 of the step apart each time, ~1e-5 after 30 steps.  The others are exact.
        atol = 1e-4 if name == "Adam" else 1e-12
        np.testing.assert_allclose(pts, book[name], rtol=0, atol=atol, err_msg=name)
        assert r["f"][name] < r["f_start"] / 50, name
        assert np.hypot(*r["final"][name]) < 1.0, name
    assert min(r["f"], key=r["f"].get) == "AdaGrad"
    assert np.hypot(*r["final"]["AdaGrad"]) < 0.2
    assert r["grad_check"] < 1e-5


# --------------------------------------------------------------------------- optimizers on MNIST


def test_compare_optimizers_adaptive_methods_beat_sgd_early(mnist):
    r = load("compare_optimizers").run(data=mnist, iters=60, every=20, test_size=500)
    assert set(r.losses) == {"SGD", "Momentum", "AdaGrad", "Adam"}
    for name, losses in r.losses.items():
        assert losses.shape == (60,) and np.all(np.isfinite(losses)), name
        xs, ys = r.smoothed[name]
        np.testing.assert_array_equal(xs, [20, 40, 60])
        np.testing.assert_allclose(ys, losses.reshape(3, 20).mean(axis=1))
        assert r.final[name] == pytest.approx(losses[40:].mean())
        assert 0.0 <= r.test_acc[name] <= 1.0
    # Same initial weights and first batch: the first loss cannot depend on the optimizer.
    firsts = [v[0] for v in r.losses.values()]
    np.testing.assert_allclose(firsts, firsts[0], rtol=1e-6)
    assert max(r.final["AdaGrad"], r.final["Adam"]) < r.final["SGD"] - 0.5


def test_compare_optimizers_numpy_and_jax_backends_agree(mnist):
    mod = load("compare_optimizers")
    kw = dict(data=mnist, iters=4, every=2, test_size=100)
    a, b = mod.run(backend="numpy", **kw), mod.run(backend="jax", **kw)
    for name in a.losses:
        np.testing.assert_allclose(a.losses[name], b.losses[name], rtol=1e-4, err_msg=name)


# --------------------------------------------------------------------------- initialization


def test_compare_init_small_std_stalls_and_he_learns(mnist):
    r = load("compare_init").run(data=mnist, iters=300, every=20, test_size=500)
    assert list(r.losses) == ["std=0.01", "Xavier", "He"]
    assert all(v.shape == (300,) for v in r.losses.values())
    final = r.final
    assert final["std=0.01"] > 2.2  # ln 10 ≈ 2.303: the output is still uniform
    assert final["He"] < 2.2 and final["He"] < final["Xavier"] < final["std=0.01"]


# --------------------------------------------------------------------------- BatchNorm


def test_batchnorm_learns_where_the_plain_net_does_not(mnist):
    r = load("batchnorm").run(data=mnist, stds=(0.01,), epochs=5)
    assert r["stds"] == [0.01]
    pair = r["results"][0.01]
    for name in ("plain", "batchnorm"):
        acc = pair[name]["train_acc"]
        assert acc.shape == (5,) and np.all((acc >= 0) & (acc <= 1))
    assert pair["batchnorm"]["train_acc"][-1] > pair["plain"]["train_acc"][-1] + 0.3


def test_batchnorm_nets_of_a_pair_share_their_weights():
    mod = load("batchnorm")
    _, plain = mod.build_net(0.1, False).init(0, (-1, 20))
    _, bn = mod.build_net(0.1, True).init(0, (-1, 20))
    bn = models.with_dense_weights(bn, models.dense_weights(plain))
    for a, b in zip(models.dense_weights(plain), models.dense_weights(bn), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sum(isinstance(p, dict) and "gamma" in p for p in bn) == 5


# --------------------------------------------------------------------------- Dropout


def test_dropout_narrows_the_gap_early_on(mnist):
    r = load("dropout_overfit").run(data=mnist, epochs=50, test_size=1000)
    for name in ("plain", "dropout"):
        x = r[name]
        assert x["train_acc"].shape == x["test_acc"].shape == (50,)
        np.testing.assert_allclose(x["gaps"], x["train_acc"] - x["test_acc"])
        assert x["gap"] == pytest.approx(x["gaps"][-1])
    assert r["plain"]["train_acc"][-1] > 0.8  # 300 images: the plain net is memorising them
    assert r["dropout"]["gaps"].mean() < r["plain"]["gaps"].mean() - 0.03


def test_book_dropout_is_inverted_dropout_with_weights_times_1_minus_p():
    """The docstring's claim: the book's net with W computes what the inverted net computes
    with 0.8·W after each dropout, and its gradient there is 0.8 times as large."""
    mod = load("dropout_overfit")
    hidden = (8, 8, 8)
    book, inv = mod.build_net(0.2, hidden, scaling="book"), mod.build_net(0.2, hidden)
    _, p_book = book.init(0, (-1, 10), dtype=np.float64)
    scaled = [w if i == 0 else 0.8 * w for i, w in enumerate(models.dense_weights(p_book))]
    p_inv = models.with_dense_weights(p_book, scaled)
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((32, 10)), rng.integers(0, 10, 32)
    for kw in ({"train": True, "rng": 5}, {"train": False}):
        np.testing.assert_allclose(
            book.forward(p_book, x, **kw)[0], inv.forward(p_inv, x, **kw)[0], rtol=1e-12
        )
    g_book = models.dense_weights(grads(book, p_book, x, t))
    g_inv = models.dense_weights(grads(inv, p_inv, x, t))
    np.testing.assert_allclose(g_book[0], g_inv[0], rtol=1e-10)
    for gb, gi in zip(g_book[1:], g_inv[1:], strict=True):
        np.testing.assert_allclose(gb, 0.8 * gi, rtol=1e-10)


def grads(net, params, x, t):
    out, cache = net.forward(params, x, train=True, rng=5)
    _, lcache = fn.softmax_cross_entropy.forward(out, t)
    return net.backward(cache, fn.softmax_cross_entropy.backward(lcache))[0]


def test_dropout_numpy_backend_runs_both_scalings(mnist):
    mod = load("dropout_overfit")
    for scaling in ("inverted", "book"):
        r = mod.run(
            data=mnist, epochs=2, test_size=200, hidden=(20, 20), backend="numpy",
            scaling=scaling,
        )  # fmt: skip
        assert r["scaling"] == scaling and r["dropout"]["train_acc"].shape == (2,)


def test_accuracy_helper_still_evaluates_in_eval_mode():
    """The BatchNorm and Dropout examples rely on train.accuracy using the eval mode."""
    net = fn.pipeline(fn.Dense(4), fn.Dropout(0.9))
    _, params = net.init(0, (-1, 3))
    x = np.ones((5, 3), np.float32)
    expected = net.forward(params, x)[0].argmax(-1)
    assert train.accuracy(net, params, x, expected) == 1.0
