"""One MNIST epoch of the book's two-layer net: funcnet against plain NumPy, JAX and PyTorch.

    .venv/bin/python benchmarks/mlp_epoch.py [--repeats 7] [--only funcnet-np,book-f32]
        [--no-torch] [--data-dir DIR]

784-100-10 (Dense, Relu, Dense, softmax cross-entropy), weights N(0, 0.01²), SGD lr 0.1, 600
steps of batch 100 over a fixed permutation; every timed epoch starts from the same weights
and gathers its batches (``x[idx]``) inside the timed region.  Rows (``--only`` names):

funcnet-np        ``train.make_step`` eagerly on NumPy arrays.  Target: <= 1.6x the matmul
                  floor (``vs floor``, ok/MISS).
minimal-np        the same net written inline in NumPy, as ``benchmarks/dense.py``'s row of
                  that name: in-place updates, temporaries reused, no checks, no dx for
                  the first layer; the same FLOPs as funcnet-np.
funcnet-jax-step  the same step under ``jax.jit`` (params donated), one call per batch.
funcnet-jax-scan  the epoch as one jitted lax.scan (``train.make_epoch``), the batches
                  gathered on the device first, as ``train.fit(scan=True)``.
book-f32, -f64    the book's Affine/Relu/SoftmaxWithLoss code with in-place SGD; float32
                  weights, or the book's own float64 ones (every matmul then runs in f64).
jnp-step, -scan   the net written directly in jax.numpy, value_and_grad + jit per step / scan.
torch             PyTorch eager, nn.Sequential + optim.SGD, as many threads as NumPy's BLAS.
matmul floor      the step's five sgemms (x·W1, h·W2, hᵀ·dz, dz·W2ᵀ, xᵀ·dh) by np.matmul
                  into preallocated outputs, 600 times each: a lower bound on this BLAS.

Columns: median s over ``--repeats`` round-robin runs after one untimed warm-up epoch;
``vs funcnet`` = median / the funcnet row of the same dispatch (NumPy and torch rows against
funcnet-np, jnp-X against funcnet-jax-X); ``vs floor`` = median / matmul floor; ``loss``: the
warm-up epoch's last loss (equal digits: the rows compute the same thing).  Then the floor
per matmul and the CPU load during the timed rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _harness, also under -m
import _harness as H
import jax
import jax.numpy as jnp
from dense import minimal_step, spec

import funcnet as fn  # the checkout's: _harness put the repository root first on sys.path
from funcnet import optim, train

LR, BATCH, HIDDEN, CLASSES, SEED = 0.1, 100, 100, 10, 0
FLOOR = "matmul floor"
FLOOR_TARGETS = {"funcnet-np": 1.6}  # row: its target median / the floor's


def flat(p0):
    return {"W1": p0[0]["W"], "b1": p0[0]["b"], "W2": p0[2]["W"], "b2": p0[2]["b"]}


def funcnet_row(kind):  # "np", "step", "scan"
    def build(c):
        opt = optim.sgd(LR)
        step = train.make_step(c.net, fn.softmax_cross_entropy, opt)
        fresh = H.fresh_state(c.params0, lambda p: opt.init(fn.trainable(p)), kind != "np")
        return fresh, H.epoch_fn(kind, step, c, 2, train.make_epoch)

    return build


def _jnp_step(p, x, t):
    def loss(p):
        h = jnp.maximum(x @ p["W1"] + p["b1"], 0)
        logp = jax.nn.log_softmax(h @ p["W2"] + p["b2"])
        return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=1))

    value, g = jax.value_and_grad(loss)(p)
    return jax.tree.map(lambda a, d: a - LR * d, p, g), value


def minimal_row(c):
    kinds = [(kind, "relu" if kind == "act" else None) for kind, _ in spec(c.params0)]
    arrays0 = [arrays for _, arrays in spec(c.params0)]
    return H.fresh_state(arrays0, None, False), H.epoch_fn("np", minimal_step(kinds), c, 1)


def jnp_row(kind):
    return lambda c: (H.fresh_state(flat(c.params0)), H.epoch_fn(kind, _jnp_step, c, 1))


# The book's code (common/layers.py, common/functions.py, ch05/two_layer_net.py), reduced to
# what this network uses; the loop is ch05/train_neuralnet.py without its extra loss per step.


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


class Relu:
    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout[self.mask] = 0
        return dout


class Affine:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return np.dot(self.x, self.W) + self.b

    def backward(self, dout):
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class TwoLayerNet:
    def __init__(self, params):
        self.params = params
        self.layers = [Affine(params["W1"], params["b1"]), Relu()]
        self.layers.append(Affine(params["W2"], params["b2"]))

    def gradient(self, x, t):
        for layer in self.layers:  # predict, then SoftmaxWithLoss.forward and .backward
            x = layer.forward(x)
        y, batch_size = softmax(x), t.shape[0]
        self.loss = -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size
        dout = y.copy()
        dout[np.arange(batch_size), t] -= 1
        dout = dout / batch_size
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        a1, a2 = self.layers[0], self.layers[2]
        return {"W1": a1.dW, "b1": a1.db, "W2": a2.dW, "b2": a2.db}


def book(dtype):
    def step(network, x, t):
        grad = network.gradient(x, t)
        for key in ("W1", "b1", "W2", "b2"):
            network.params[key] -= LR * grad[key]
        return network, network.loss

    def build(c):
        fresh = H.fresh_state({k: v.astype(dtype) for k, v in flat(c.params0).items()}, None, False)
        return lambda: [TwoLayerNet(fresh()[0])], H.epoch_fn("np", step, c, 1)

    return build


def torch_eager(c):
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.set_num_threads(c.threads)
    p = flat(c.params0)

    def fresh():
        model = nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))
        with torch.no_grad():
            for layer, w, b in ((model[0], "W1", "b1"), (model[2], "W2", "b2")):
                layer.weight.copy_(torch.from_numpy(p[w].T.copy()))
                layer.bias.copy_(torch.from_numpy(p[b]))
        return [model, torch.optim.SGD(model.parameters(), lr=LR)]

    def step(model, opt, x, t):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(t))
        loss.backward()
        opt.step()
        return model, opt, loss.detach()

    return fresh, H.epoch_fn("np", step, c, 2)


ROWS = {  # name: build(c) -> (fresh() -> state [untimed], epoch(state) -> losses [timed])
    "funcnet-np": funcnet_row("np"),
    "minimal-np": minimal_row,
    "book-f32": book(np.float32),
    "book-f64": book(np.float64),
    "torch": torch_eager,
    "funcnet-jax-step": funcnet_row("step"),
    "jnp-step": jnp_row("step"),
    "funcnet-jax-scan": funcnet_row("scan"),
    "jnp-scan": jnp_row("scan"),
}


def vs_floor(n: str, med: dict) -> str:
    """A column: the row's median over the matmul floor's, with ok/MISS where it has a target."""
    r, target = med[n] / med[FLOOR], FLOOR_TARGETS.get(n)
    if target is None:
        return f"{r:.1f}"
    return f"{r:.2f} {'ok' if r <= target else 'MISS'} (<={target:g})"  # 1.62 is no 1.6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    args, names, threads = H.setup(ap, list(ROWS), list(ROWS), argv)
    x, t, idx, source = H.load_data(args.data_dir, BATCH, SEED)
    net = fn.pipeline(fn.Dense(HIDDEN, W_init=0.01), fn.Relu(), fn.Dense(CLASSES, W_init=0.01))
    c = argparse.Namespace(x=x, t=t, idx=idx, net=net, threads=threads)
    c.params0, steps = net.init(SEED, (-1, x.shape[1]))[1], len(idx)
    print(f"data: {source}; {steps} steps of batch {BATCH}, {x.dtype}")

    rows = {n: ROWS[n](c) for n in names}
    loss = {n: float(epoch(fresh())[-1]) for n, (fresh, epoch) in rows.items()}  # warm-up
    # The matmul floor: the five matmuls of one SGD step, float32, in the step's layouts.
    rng, f32, shapes = np.random.default_rng(SEED), np.float32, [(BATCH, HIDDEN), (BATCH, CLASSES)]
    h, dz, dh = (rng.random(shape, dtype=f32) for shape in [*shapes, shapes[0]])
    x0, W1, W2 = x[idx[0]], c.params0[0]["W"], c.params0[2]["W"]
    ops = [("x·W1    (100x784)(784x100)", x0, W1), ("h·W2    (100x100)(100x10)", h, W2),
           ("hᵀ·dz   (100x100)(100x10)", h.T, dz), ("dz·W2ᵀ  (100x10)(10x100)", dz, W2.T),
           ("xᵀ·dh   (784x100)(100x100)", x0.T, dh)]  # fmt: skip
    ops = [(label, a, b, np.empty((a.shape[0], b.shape[1]), f32)) for label, a, b in ops]
    parts = []  # each floor run's seconds per matmul

    def floor(_=None):
        parts.append([])
        for _, a, b, out in ops:
            start = time.perf_counter()
            for _ in range(steps):
                np.matmul(a, b, out=out)
            parts[-1].append(time.perf_counter() - start)
        return sum(parts[-1])

    floor()
    parts.clear()
    rounds = H.round_robin({**rows, FLOOR: (lambda: None, floor)}, args.repeats or 7, "entries")
    med = H.report(rounds, "implementation", [
        ("vs funcnet", lambda n, med: H.ratio(med, n, H.family(n) if n != FLOOR else None)),
        ("vs floor", vs_floor),
        ("loss", lambda n, med: f"{loss[n]:.4f}" if n in loss else ""),
    ])  # fmt: skip

    flops = [2 * a.shape[0] * a.shape[1] * b.shape[1] for _, a, b, _ in ops]
    total = sum(flops) * steps
    print(
        f"\nmatmul floor: {sum(flops) / 1e6:.2f} MFLOP per step x {steps} = {total / 1e9:.2f} "
        f"GFLOP per epoch; {med[FLOOR]:.3f} s at {total / med[FLOOR] / 1e9:.1f} GFLOP/s "
        "(sgemm, np.matmul, float32)"
    )
    for i, (label, *_) in enumerate(ops):
        sec = statistics.median(p[i] for p in parts)
        gflops = flops[i] * steps / sec / 1e9
        print(f"  {label:<28} {flops[i] / 1e6:6.2f} MFLOP  {sec:.3f} s  {gflops:6.1f} GFLOP/s")
    print()
    H.print_load(rounds, threads, "epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
