"""Chapter 6's experiments: the same batches for every variant, a typed comparison."""

import jax
import numpy as np
import pytest
from nets import blobs, mlp

from funcnet import experiments, optim, plot, train


def test_sample_batches_and_run_steps_match_a_hand_loop():
    idx = experiments.sample_batches(50, 10, 7, seed=3)
    assert idx.shape == (7, 10) and idx.min() >= 0 and idx.max() < 50
    np.testing.assert_array_equal(idx, experiments.sample_batches(50, 10, 7, seed=3))
    net, params = mlp()
    x, t = blobs(50)
    opt = optim.momentum(0.1)
    step = train.make_step(net, optimizer=opt)
    p, _, losses = experiments.run_steps(step, params, opt.init(params), x, t, idx)
    q, st = params, opt.init(params)
    for b in idx:
        q, st, loss = step(q, st, x[b], t[b])
    jax.tree_util.tree_map(np.testing.assert_array_equal, p, q)
    assert losses[-1] == float(loss) and losses.dtype == np.float64
    jp = train.to_backend(params, "jax")
    _, _, lj = experiments.run_steps(step, jp, opt.init(jp), x, t, idx)
    np.testing.assert_allclose(lj, losses, rtol=1e-4)


def test_block_means():
    xs, means = experiments.block_means([1, 3, 5, 7, 9], 2)
    np.testing.assert_array_equal(xs, [2, 4])
    np.testing.assert_array_equal(means, [2, 6])


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_compare_trains_each_variant_on_the_same_batches(backend):
    net, params = mlp(seed=2)
    params = train.to_backend(params, backend)
    x, t = blobs(700, seed=2)
    idx = experiments.sample_batches(600, 20, 50, seed=0)
    variants = {"sgd": (net, params, optim.sgd(0.1)), "frozen": (net, params, optim.sgd(0.0))}
    r = experiments.compare(variants, (x[:600], t[:600]), (x[600:], t[600:]), idx, every=20)
    assert isinstance(r, experiments.Comparison)
    assert list(r.losses) == ["sgd", "frozen"] and r.every == 20
    # Each variant is make_step + run_steps over the same batches, scored on the test set.
    step = train.make_step(net, optimizer=optim.sgd(0.1))
    p, _, expected = experiments.run_steps(step, params, optim.sgd(0.1).init(params), x, t, idx)
    np.testing.assert_allclose(r.losses["sgd"], expected, rtol=1e-6)
    assert r.test_acc["sgd"] == train.accuracy(net, p, x[600:], t[600:])
    xs, means = r.smoothed["frozen"]
    np.testing.assert_array_equal(xs, [20, 40])
    assert r.final["frozen"] == means[-1] == pytest.approx(r.losses["frozen"][20:40].mean())
    assert r.final["sgd"] < r.final["frozen"]
    assert r.losses["sgd"][0] == r.losses["frozen"][0]  # same start, same first batch
    text = plot.loss_comparison(r, mark_every=25)
    assert "training loss (mean of every 20 iterations)" in text
    table = text.splitlines()[-3:]
    assert table[0].split() == ["iteration", "sgd", "frozen"]
    assert [row.split()[0] for row in table[1:]] == ["25", "50"]
    assert float(table[2].split()[2]) == pytest.approx(r.losses["frozen"][30:50].mean(), 1e-4)
