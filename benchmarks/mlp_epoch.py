"""One MNIST epoch of the book's two-layer net, funcnet against plain NumPy, JAX and PyTorch.

Usage::

    .venv/bin/python benchmarks/mlp_epoch.py                 # every implementation, 7 repeats
    .venv/bin/python benchmarks/mlp_epoch.py --repeats 3 --only funcnet-np,book-f32
    .venv/bin/python benchmarks/mlp_epoch.py --no-torch --data-dir /path/to/mnist
    .venv/bin/python benchmarks/mlp_epoch.py --show-runs     # also every run, with its load
    .venv/bin/python benchmarks/mlp_epoch.py --profile       # cProfile one funcnet-np epoch
    .venv/bin/python benchmarks/mlp_epoch.py --profile book-f32

The network is 784-100-10 (Dense, Relu, Dense, softmax cross-entropy), weights N(0, 0.01²),
zero biases, plain SGD with lr 0.1; one epoch is 600 steps of batch 100 over a fixed
permutation of the 60000 training images.  Every implementation starts each timed epoch
from the same initial weights and gathers its batches (``x[idx]``) inside the timed region.

Implementations (``--only`` takes these names, comma separated):

``funcnet-np``        ``train.make_step`` run eagerly on NumPy arrays.
``funcnet-jax-step``  the same step under ``jax.jit`` (params donated), one call per batch.
``funcnet-jax-scan``  the same step, the whole epoch one jitted ``lax.scan``
                      (``train.make_epoch``); the batches are gathered on the device first,
                      as ``train.fit(scan=True)`` does.
``book-f32``          the book's ``Affine``/``Relu``/``SoftmaxWithLoss`` classes (written
                      below) with in-place SGD, float32 weights and inputs.
``book-f64``          the same with the book's own types: float64 weights (``0.01 * randn``)
                      and the float32 images its ``load_mnist`` returns, so every matmul
                      runs in float64 after an up-cast of the float32 operand.
``jnp-step``          the net written directly in ``jax.numpy``, ``jax.value_and_grad`` +
                      ``jax.jit`` per step.
``jnp-scan``          the same, whole epoch in one jitted ``lax.scan``.
``torch``             PyTorch eager on the CPU, ``nn.Sequential`` + ``torch.optim.SGD``, float32,
                      as many intra-op threads as NumPy's BLAS (only if torch imports).

What is printed:

* per implementation the median epoch time in seconds over ``--repeats`` runs (after one
  untimed warm-up epoch, which also compiles the JAX programs), the min-max range, and
  ``vs funcnet`` = median / median of the funcnet path of the same family: the NumPy and
  PyTorch rows against ``funcnet-np``, ``jnp-step`` against ``funcnet-jax-step``,
  ``jnp-scan`` against ``funcnet-jax-scan``.  ``vs floor`` is median / the matmul floor.
  Runs are interleaved round-robin (the starting implementation rotates every round) so
  that background noise hits all of them alike.  ``loss`` is the last batch's loss of the
  warm-up epoch: equal digits show that the rows compute the same thing.  ``bg cores`` is
  the median load other processes put on the CPUs during that row's timed runs (see below);
  ``quiet median s`` the median over only the runs during which that load stayed under 0.2
  cores, with their count when some were left out.
* the matmul floor: the five matmuls one SGD step needs (forward x·W1 and h·W2, backward
  dW2 = hᵀ·dz, dh = dz·W2ᵀ, dW1 = xᵀ·dh; not the first layer's dx, which nobody uses), timed
  with ``np.matmul`` on exactly those float32 shapes and layouts into preallocated outputs,
  600 times each, as one more round-robin entry.  It is a lower bound for any
  implementation that runs its matmuls through this BLAS on this machine; its GFLOP/s is
  the sgemm speed that bound assumes.
* the CPU load seen during the timed rounds: from ``/proc/stat`` the busy time of all CPUs,
  minus this process's own CPU time, per second of wall time (= foreign load in cores),
  the hypervisor's steal time, and ``/proc/loadavg``.
* memory: RSS (``VmRSS``) and traced NumPy/Python allocations before and after three
  funcnet-np epochs (tracing from one epoch earlier, so the live params are in the
  baseline); a growth of a few kB that does not scale with the epochs is allocator noise.

Data: ``--data-dir``, else ``$FUNCNET_DATA``, else ``../shared/mnist`` next to the repository;
if no MNIST is found there, random data of the same shapes and dtypes (timings do not
depend on the pixel values) with a notice.  Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _harness, also under -m
import jax
import jax.numpy as jnp
from _harness import (
    Entry,
    blas_info,
    check_torch,
    default_data_dir,
    fmt_range,
    load_data,
    print_environment,
    print_load,
    print_profile,
    print_runs,
    print_table,
    quiet_median,
    round_robin,
    rss_mb,
    usable_cpus,
)

# funcnet comes from the checkout: importing _harness put the repository root on sys.path.
import funcnet as fn
from funcnet import optim, train

LR = 0.1
BATCH = 100
HIDDEN = 100
CLASSES = 10
SEED = 0


class Ctx(NamedTuple):
    x: np.ndarray  # (60000, 784) float32
    t: np.ndarray  # (60000,) int64
    idx: np.ndarray  # (steps, BATCH) int64: the epoch's batches
    net: fn.Layer
    params0: Any  # funcnet params: ({"W", "b"}, (), {"W", "b"}), float32
    threads: int


def flat_params(params0) -> dict[str, np.ndarray]:
    d1, _, d2 = params0
    return {"W1": d1["W"], "b1": d1["b"], "W2": d2["W"], "b2": d2["b"]}


# An implementation: fresh() -> state (untimed), epoch(state) -> last loss (timed).
class Impl(NamedTuple):
    family: str  # the funcnet row the "vs funcnet" column divides by
    fresh: Callable[[], Any]
    epoch: Callable[[Any], float]


# --------------------------------------------------------------------------- funcnet


def funcnet_np(ctx: Ctx) -> Impl:
    opt = optim.sgd(LR)
    step = train.make_step(ctx.net, fn.softmax_cross_entropy, opt)
    x, t, idx = ctx.x, ctx.t, ctx.idx

    def fresh():
        params = jax.tree_util.tree_map(np.copy, ctx.params0)
        return params, opt.init(params)

    def epoch(state):
        params, s = state
        for b in idx:
            params, s, loss = step(params, s, x[b], t[b])
        return float(loss)

    return Impl("funcnet-np", fresh, epoch)


def _jax_fresh(params0, opt=None):
    def fresh():
        params = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), params0)
        params = jax.block_until_ready(params)
        return (params, opt.init(params)) if opt is not None else params

    return fresh


def funcnet_jax_step(ctx: Ctx) -> Impl:
    opt = optim.sgd(LR)
    step = jax.jit(train.make_step(ctx.net, fn.softmax_cross_entropy, opt), donate_argnums=(0, 1))
    x, t, idx = ctx.x, ctx.t, ctx.idx

    def epoch(state):
        params, s = state
        for b in idx:
            params, s, loss = step(params, s, x[b], t[b])
        jax.block_until_ready((params, s, loss))
        return float(loss)

    return Impl("funcnet-jax-step", _jax_fresh(ctx.params0, opt), epoch)


def _device_data(ctx: Ctx):
    return jnp.asarray(ctx.x), jnp.asarray(ctx.t.astype(np.int32)), jnp.asarray(ctx.idx)


def funcnet_jax_scan(ctx: Ctx) -> Impl:
    opt = optim.sgd(LR)
    run = jax.jit(
        train.make_epoch(train.make_step(ctx.net, fn.softmax_cross_entropy, opt)),
        donate_argnums=(0, 1),
    )
    x_dev, t_dev, idx_dev = _device_data(ctx)

    def epoch(state):
        params, s = state
        params, s, losses = run(params, s, x_dev[idx_dev], t_dev[idx_dev])
        jax.block_until_ready((params, s, losses))
        return float(losses[-1])

    return Impl("funcnet-jax-scan", _jax_fresh(ctx.params0, opt), epoch)


# --------------------------------------------------------------------------- the book's code
# After common/layers.py, common/functions.py and ch05/two_layer_net.py of the book's
# repository, reduced to what this network uses; the training loop is ch05/train_neuralnet.py
# without its extra loss evaluation per step.


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


class Relu:
    def __init__(self):
        self.mask = None

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
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        self.x = x
        return np.dot(self.x, self.W) + self.b

    def backward(self, dout):
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class SoftmaxWithLoss:
    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        if self.t.size == self.y.size:
            dx = (self.y - self.t) / batch_size
        else:
            dx = self.y.copy()
            dx[np.arange(batch_size), self.t] -= 1
            dx = dx / batch_size
        return dx


class TwoLayerNet:
    def __init__(self, params: dict[str, np.ndarray]):
        self.params = params
        self.layers = {
            "Affine1": Affine(self.params["W1"], self.params["b1"]),
            "Relu1": Relu(),
            "Affine2": Affine(self.params["W2"], self.params["b2"]),
        }
        self.lastLayer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.lastLayer.forward(self.predict(x), t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.lastLayer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        return {
            "W1": self.layers["Affine1"].dW,
            "b1": self.layers["Affine1"].db,
            "W2": self.layers["Affine2"].dW,
            "b2": self.layers["Affine2"].db,
        }


def book(dtype) -> Callable[[Ctx], Impl]:
    def build(ctx: Ctx) -> Impl:
        x, t, idx = ctx.x, ctx.t, ctx.idx
        base = {k: v.astype(dtype) for k, v in flat_params(ctx.params0).items()}

        def fresh():
            return TwoLayerNet({k: v.copy() for k, v in base.items()})

        def epoch(network):
            for b in idx:
                grad = network.gradient(x[b], t[b])
                for key in ("W1", "b1", "W2", "b2"):
                    network.params[key] -= LR * grad[key]
            return float(network.lastLayer.loss)

        return Impl("funcnet-np", fresh, epoch)

    return build


# --------------------------------------------------------------------------- JAX directly


def _jnp_loss(p, x, t):
    h = jnp.maximum(x @ p["W1"] + p["b1"], 0)
    logp = jax.nn.log_softmax(h @ p["W2"] + p["b2"])
    return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=1))


def _jnp_step(p, x, t):
    loss, g = jax.value_and_grad(_jnp_loss)(p, x, t)
    return jax.tree_util.tree_map(lambda a, d: a - LR * d, p, g), loss


def jnp_step(ctx: Ctx) -> Impl:
    step = jax.jit(_jnp_step, donate_argnums=(0,))
    x, t, idx = ctx.x, ctx.t, ctx.idx

    def epoch(params):
        for b in idx:
            params, loss = step(params, x[b], t[b])
        jax.block_until_ready((params, loss))
        return float(loss)

    return Impl("funcnet-jax-step", _jax_fresh(flat_params(ctx.params0)), epoch)


def jnp_scan(ctx: Ctx) -> Impl:
    def run(params, xs, ts):
        def body(p, batch):
            return _jnp_step(p, *batch)

        return jax.lax.scan(body, params, (xs, ts))

    run = jax.jit(run, donate_argnums=(0,))
    x_dev, t_dev, idx_dev = _device_data(ctx)

    def epoch(params):
        params, losses = run(params, x_dev[idx_dev], t_dev[idx_dev])
        jax.block_until_ready((params, losses))
        return float(losses[-1])

    return Impl("funcnet-jax-scan", _jax_fresh(flat_params(ctx.params0)), epoch)


# --------------------------------------------------------------------------- PyTorch


def torch_eager(ctx: Ctx) -> Impl:
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.set_num_threads(ctx.threads)
    x, t, idx = ctx.x, ctx.t, ctx.idx
    p = flat_params(ctx.params0)

    def fresh():
        model = nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))
        with torch.no_grad():
            for layer, w, b in ((model[0], "W1", "b1"), (model[2], "W2", "b2")):
                layer.weight.copy_(torch.from_numpy(p[w].T.copy()))
                layer.bias.copy_(torch.from_numpy(p[b]))
        return model, torch.optim.SGD(model.parameters(), lr=LR)

    def epoch(state):
        model, opt = state
        for b in idx:
            xb, tb = torch.from_numpy(x[b]), torch.from_numpy(t[b])
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), tb)
            loss.backward()
            opt.step()
        return float(loss.detach())

    return Impl("funcnet-np", fresh, epoch)


# --------------------------------------------------------------------------- matmul floor


class Floor(NamedTuple):
    labels: list[str]
    flops: list[int]  # per step, per matmul
    run: Callable[[], list[float]]  # seconds for 600 calls of each matmul


def matmul_floor(ctx: Ctx) -> Floor:
    """The five matmuls of one SGD step, float32, in the layouts the step uses."""
    rng = np.random.default_rng(SEED)
    f32 = np.float32
    x = ctx.x[ctx.idx[0]]  # (B, 784)
    W1 = ctx.params0[0]["W"]  # (784, H)
    W2 = ctx.params0[2]["W"]  # (H, C)
    h = rng.random((BATCH, HIDDEN), dtype=f32)
    dz = rng.standard_normal((BATCH, CLASSES), dtype=f32)
    dh = rng.standard_normal((BATCH, HIDDEN), dtype=f32)
    ops = [  # label, a, b, out
        ("x·W1    (100x784)(784x100)", x, W1, np.empty((BATCH, HIDDEN), f32)),
        ("h·W2    (100x100)(100x10)", h, W2, np.empty((BATCH, CLASSES), f32)),
        ("hᵀ·dz   (100x100)(100x10)", h.T, dz, np.empty((HIDDEN, CLASSES), f32)),
        ("dz·W2ᵀ  (100x10)(10x100)", dz, W2.T, np.empty((BATCH, HIDDEN), f32)),
        ("xᵀ·dh   (784x100)(100x100)", x.T, dh, np.empty((784, HIDDEN), f32)),
    ]
    steps = len(ctx.idx)

    def run():
        times = []
        for _, a, b, out in ops:
            start = time.perf_counter()
            for _ in range(steps):
                np.matmul(a, b, out=out)
            times.append(time.perf_counter() - start)
        return times

    flops = [2 * a.shape[0] * a.shape[1] * b.shape[1] for _, a, b, _ in ops]
    return Floor([op[0] for op in ops], flops, run)


# --------------------------------------------------------------------------- driver

IMPLS: dict[str, Callable[[Ctx], Impl]] = {
    "funcnet-np": funcnet_np,
    "book-f32": book(np.float32),
    "book-f64": book(np.float64),
    "torch": torch_eager,
    "funcnet-jax-step": funcnet_jax_step,
    "jnp-step": jnp_step,
    "funcnet-jax-scan": funcnet_jax_scan,
    "jnp-scan": jnp_scan,
}
FLOOR = "matmul floor"


def profile(ctx: Ctx, name: str) -> None:
    """cProfile one epoch of implementation ``name`` (after a warm-up), top 15 by tottime."""
    impl = IMPLS[name](ctx)
    impl.epoch(impl.fresh())  # warm-up
    state = impl.fresh()
    print_profile(lambda: impl.epoch(state), f"one {name} epoch")


def memory_check(ctx: Ctx, epochs: int = 3) -> str:
    """RSS and traced allocations around ``epochs`` funcnet-np epochs that carry on training.

    Tracing starts one epoch earlier, so that the baseline already holds the live params
    (allocated by the traced steps): the growth is then what accumulates per epoch.
    """
    opt = optim.sgd(LR)
    step = train.make_step(ctx.net, fn.softmax_cross_entropy, opt)
    params = jax.tree_util.tree_map(np.copy, ctx.params0)
    s = opt.init(params)

    def one_epoch():
        nonlocal params, s
        for b in ctx.idx:
            params, s, _ = step(params, s, ctx.x[b], ctx.t[b])

    tracemalloc.start()
    one_epoch()
    gc.collect()
    rss0, traced0 = rss_mb(), tracemalloc.get_traced_memory()[0]
    for _ in range(epochs):
        one_epoch()
    gc.collect()
    traced1, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = rss_mb()
    return (
        f"memory, {epochs} funcnet-np epochs: RSS {rss0:.1f} -> {rss1:.1f} MB "
        f"({rss1 - rss0:+.1f} MB); traced allocations {traced0 / 1e6:.3f} -> "
        f"{traced1 / 1e6:.3f} MB ({(traced1 - traced0) / 1e3:+.1f} kB), "
        f"peak {peak / 1e6:.2f} MB"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed epochs per implementation")
    ap.add_argument("--data-dir", type=Path, default=None, help="MNIST directory")
    ap.add_argument("--only", default=None, help="comma-separated names: " + ", ".join(IMPLS))
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch row")
    ap.add_argument(
        "--show-runs", action="store_true", help="also print every run's time and background load"
    )
    ap.add_argument(
        "--profile",
        nargs="?",
        const="funcnet-np",
        metavar="NAME",
        help="cProfile one epoch of NAME (default funcnet-np), print the top 15, exit",
    )
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.profile is not None and args.profile not in IMPLS:
        ap.error(f"unknown --profile name {args.profile!r}; choose from {', '.join(IMPLS)}")

    names = list(IMPLS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in IMPLS]
        if unknown:
            ap.error(f"unknown --only name(s) {unknown}; choose from {', '.join(IMPLS)}")
    blas, threads = blas_info()
    threads = threads or usable_cpus()
    torch_note = check_torch(names, args.no_torch, threads)

    data_dir = args.data_dir or default_data_dir()
    x, t, source = load_data(data_dir)
    steps = len(x) // BATCH
    idx = np.random.default_rng(SEED).permutation(len(x))[: steps * BATCH].reshape(steps, BATCH)
    net = fn.pipeline(fn.Dense(HIDDEN, W_init=0.01), fn.Relu(), fn.Dense(CLASSES, W_init=0.01))
    _, params0 = net.init(SEED, (-1, x.shape[1]))
    ctx = Ctx(x, t, idx, net, params0, threads)

    print_environment(blas, torch_note)
    print(f"data: {source}; {steps} steps of batch {BATCH}, {x.dtype}")

    if args.profile:
        profile(ctx, args.profile)
        return 0

    impls = {n: IMPLS[n](ctx) for n in names}
    floor = matmul_floor(ctx)
    loss: dict[str, float] = {}
    for n, impl in impls.items():  # warm-up: compiles JAX, touches every buffer
        loss[n] = impl.epoch(impl.fresh())
    floor.run()

    floor_parts: list[list[float]] = []

    def floor_run(_state) -> float:
        parts = floor.run()
        floor_parts.append(parts)
        return sum(parts)

    entries = {n: Entry(impls[n].fresh, impls[n].epoch) for n in names}
    entries[FLOOR] = Entry(lambda: None, floor_run, self_timed=True)
    rounds = round_robin(entries, args.repeats)
    times, foreign = rounds.times, rounds.foreign

    med = {n: statistics.median(v) for n, v in times.items()}
    floor_s = med[FLOOR]
    print()
    columns = [
        ("implementation", 18),
        ("median s", 9),
        ("min-max s", 13),
        ("vs funcnet", 10),
        ("vs floor", 9),
        ("loss", 8),
        ("bg cores", 9),
        ("quiet median s", 15),
    ]
    rows = []
    for n in [*names, FLOOR]:
        base = impls[n].family if n in impls else None
        vs = f"{med[n] / med[base]:.2f}" if base in med else ("-" if base else "")
        rows.append(
            [
                n,
                f"{med[n]:.3f}",
                fmt_range(times[n]),
                vs,
                f"{med[n] / floor_s:.1f}",
                f"{loss[n]:.4f}" if n in loss else "",
                f"{statistics.median(foreign[n]):.2f}",
                quiet_median(times[n], foreign[n]),
            ]
        )
    print_table(columns, rows)

    if args.show_runs:
        print_runs(rounds)

    total = sum(floor.flops) * steps
    print()
    print(
        f"matmul floor: {sum(floor.flops) / 1e6:.2f} MFLOP per step x {steps} = "
        f"{total / 1e9:.2f} GFLOP per epoch; {floor_s:.3f} s at {total / floor_s / 1e9:.1f} "
        "GFLOP/s (sgemm, np.matmul, float32)"
    )
    for i, label in enumerate(floor.labels):
        part = statistics.median(p[i] for p in floor_parts)
        print(
            f"  {label:<28} {floor.flops[i] / 1e6:6.2f} MFLOP  {part:.3f} s  "
            f"{floor.flops[i] * steps / part / 1e9:6.1f} GFLOP/s"
        )
    print()
    print_load(rounds, threads, "epoch")
    print(memory_check(ctx))
    return 0


if __name__ == "__main__":
    sys.exit(main())
