"""One convolution layer forward+backward, and one SimpleConvNet epoch: funcnet against
``lax.conv_general_dilated`` and PyTorch.

Usage::

    .venv/bin/python benchmarks/conv.py                   # default rows (~3 min on 2 idle cores)
    .venv/bin/python benchmarks/conv.py --no-epoch        # the layer part only (< 1 min)
    .venv/bin/python benchmarks/conv.py --only funcnet-np,torch --no-epoch --repeats 9
    .venv/bin/python benchmarks/conv.py --only funcnet-jax-scan,jnp-scan --data-dir ~/mnist
    .venv/bin/python benchmarks/conv.py --np-steps 600    # the NumPy epoch row unextrapolated
    .venv/bin/python benchmarks/conv.py --no-torch --show-runs
    .venv/bin/python benchmarks/conv.py --profile         # where funcnet-np's conv spends its time

Part 1, one layer.  Forward and backward (dW, db and dx) of one ``Conv`` with bias, float32,
at two shapes:

``convnet``  x (100, 1, 28, 28), W (30, 1, 5, 5), stride 1, padding 0: SimpleConvNet's
             first layer on a batch of 100 (out (100, 30, 24, 24)).
``large``    x (64, 64, 32, 32), W (64, 64, 3, 3), stride 1, padding 1 (out (64, 64, 32, 32)).

x, W, b and the upstream gradient dout are fixed random arrays.  Rows (``--only`` names):

``funcnet-np``   ``layer.forward`` + ``layer.backward`` of ``funcnet.Conv`` on NumPy arrays.
``funcnet-jax``  the same two calls inside one ``jax.jit`` (one XLA program: im2col as
                 slices and a stack, then matmuls; col2im as pads and adds).
``lax-conv``     ``jax.vjp`` of ``lax.conv_general_dilated(x, W) + b`` under ``jax.jit``: XLA's
                 own convolution and its transposes, the reference for the JAX row.
``torch``        ``F.conv2d`` + ``torch.autograd.grad`` on the CPU, as many intra-op threads as
                 NumPy's BLAS (only if torch imports): the reference for the NumPy row.

Every row returns the forward output too, so that no compiler can drop the forward.  Each
row is warmed up (compiled) first; then a run is ``calls`` back-to-back calls (enough for
about 0.2 s, chosen per row from the warm-up), and its time is its wall time / ``calls``.

What is printed per shape:

* ``median ms``, ``min-max ms``: per call, over ``--repeats`` runs (default 5), interleaved
  round-robin (the starting row rotates every round) so that background noise hits every
  row alike.
* ``GFLOP/s``: 3 × 2·N·F·OH·OW·C·kh·kw (forward, dW and dx are one such product each) per
  median call.
* ``vs ref``: median / the reference's median, with the target: funcnet-np against torch
  (target ≤ 3), funcnet-jax against lax-conv (target ≤ 1.2); ``ok`` or ``MISS``.
* ``bg cores``, ``quiet median ms``: the load other processes put on the CPUs during the
  row's runs (median, in cores), and the median over only the runs with less than 0.2
  cores of it, with their count when some were left out (see ``_harness.py``).
* agreement: max |difference| of y, dW, db and dx against funcnet-np, next to the largest
  |value| of funcnet-np's, so that the rows are known to compute the same thing.  float32
  sums in a different order differ by a few ulps of the largest partial sums.
* memory: the size of the batch's im2col matrix (N·OH·OW·C·kh·kw·itemsize bytes), how
  funcnet's NumPy path forms it (whole and kept in the cache for the backward, or in
  chunks of samples of at most ``funcnet.conv.IM2COL_CHUNK_BYTES``, gathered again in the
  backward), and the peak of NumPy's traced allocations (``tracemalloc``) during one
  funcnet-np forward+backward, above what was allocated before it.  At the
  SimpleConvNet shape also the stack of max-pool windows (kh·kw·N·C·OH·OW·itemsize for
  MaxPool 2×2 on the conv output (100, 30, 24, 24)) and its traced peak.

Part 2, one epoch (``--epoch``, default on; ``--no-epoch`` skips it).  SimpleConvNet
(``models.simple_convnet()``: Conv 30 5×5, Relu, MaxPool 2, Flatten, Dense 100, Relu,
Dense 10; weights N(0, 0.01²)), Adam lr 0.001, batch 100, float32, 600 steps over a fixed
permutation of the 60000 training images, every run from the same initial weights:

``funcnet-np-step``   ``train.make_step`` eagerly on NumPy.  Only the first ``--np-steps``
                      steps (default 60) are run, and the time is scaled to 600 steps: the
                      table says so.  ``--np-steps 600`` runs the whole epoch.
``funcnet-jax-step``  the same step under ``jax.jit`` (params and state donated), one call
                      per batch; the batches are gathered on the host (``x[idx]``).
``funcnet-jax-scan``  the whole epoch as one jitted ``lax.scan`` (``train.make_epoch``), the
                      batches gathered on the device first, as ``train.fit(scan=True)``.
``jnp-step``          the same network written in ``jax.numpy`` (``lax.conv_general_dilated``,
                      ``lax.reduce_window`` max-pool, log-softmax) with Adam written out,
                      ``jax.value_and_grad`` + ``jax.jit``, one call per batch.
``jnp-scan``          the same, the whole epoch in one jitted ``lax.scan``.  Only when
                      ``--only`` names it: about 25 s an epoch on 2 cores, where the time
                      goes to XLA's CPU kernel for the max-pool gradient
                      (``select_and_scatter``), which ``jnp-step`` already shows.

Each row is warmed up first, untimed: the per-step rows run 2 steps (which compiles the
step), the scan rows compile their program ahead of time (``jit(...).lower(...).compile()``)
and run that.  Columns: ``median s`` per epoch over ``--repeats`` runs (default 3), each
from the initial weights, interleaved round-robin; ``vs funcnet`` = median / the funcnet row
with the same dispatch (``jnp-step`` against ``funcnet-jax-step``, ``jnp-scan`` against
``funcnet-jax-scan``); ``loss@K``: the loss of step K of the first timed run (K =
``--np-steps``, the last step the NumPy row runs) and ``loss@600`` of its last step (equal
leading digits show that the rows train the same network the same way; float32 rounding
makes them drift apart slowly); ``bg cores`` and ``quiet median s`` as above.

``--profile`` instead runs cProfile over funcnet-np's forward+backward at both shapes and
times each step of funcnet.conv's NumPy path alone (pad, im2col, the batched matmuls, bias,
sums, and dx as Conv forms it at that channel count: whole dcols then col2im below
``DX_BY_OFFSET_MIN_CHANNELS``, one kernel offset at a time from it on).  In parentheses, for
comparison: the dx formulation not taken, and two one-sgemm alternatives.

Data: ``--data-dir``, else ``$FUNCNET_DATA``, else ``../shared/mnist`` next to the repository;
if no MNIST is found there, random data of the same shapes with a notice (timings do not
depend on the pixel values).  Nothing is downloaded.

On a GPU: when JAX's default backend is not the CPU, the JAX rows run on its first device
(the output names it) and every timed JAX call ends in ``block_until_ready``; the
funcnet-np and torch rows still run on the host CPU, so their ratios stay CPU figures.
float32 convolutions and matmuls on an NVIDIA GPU may run in TF32 by default (JAX's
``default_matmul_precision`` is printed), which widens the agreement differences.
"""

from __future__ import annotations

import argparse
import gc
import math
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
    usable_cpus,
)
from jax import lax

# funcnet comes from the checkout: importing _harness put the repository root on sys.path.
import funcnet as fn
from funcnet import models, optim, train

SEED = 0
BATCH = 100
LR = 0.001
LAYER_REPEATS, EPOCH_REPEATS = 5, 3  # default --repeats of the two parts
RUN_S = 0.2  # a timed layer run lasts about this long: calls = ceil(RUN_S / warm-up call)
DN = ("NCHW", "OIHW", "NCHW")  # lax.conv_general_dilated's layouts: funcnet's and PyTorch's


class Shape(NamedTuple):
    x: tuple[int, int, int, int]  # (N, C, H, W)
    W: tuple[int, int, int, int]  # (F, C, kh, kw)
    stride: int
    pad: int

    @property
    def out(self) -> tuple[int, int, int, int]:
        n, _, h, w = self.x
        f, _, kh, kw = self.W
        oh = (h + 2 * self.pad - kh) // self.stride + 1
        ow = (w + 2 * self.pad - kw) // self.stride + 1
        return n, f, oh, ow

    @property
    def flops(self) -> int:
        """Forward, dW and dx: three products of 2·N·F·OH·OW·C·kh·kw flops each."""
        n, f, oh, ow = self.out
        _, c, kh, kw = self.W
        return 3 * 2 * n * f * oh * ow * c * kh * kw

    def im2col_bytes(self, itemsize: int = 4) -> int:
        n, _, oh, ow = self.out
        _, c, kh, kw = self.W
        return n * oh * ow * c * kh * kw * itemsize

    def describe(self) -> str:
        return f"x {self.x}, W {self.W}, stride {self.stride}, padding {self.pad} -> out {self.out}"


SHAPES = {
    "convnet": Shape((100, 1, 28, 28), (30, 1, 5, 5), 1, 0),
    "large": Shape((64, 64, 32, 32), (64, 64, 3, 3), 1, 1),
}


def on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.2f} MB"


# --------------------------------------------------------------------------- part 1: one layer


class Case(NamedTuple):
    shape: Shape
    x: np.ndarray
    W: np.ndarray
    b: np.ndarray
    dout: np.ndarray
    threads: int


def make_case(shape: Shape, threads: int) -> Case:
    rng = np.random.default_rng(SEED)
    f, c, kh, kw = shape.W
    x = rng.standard_normal(shape.x, dtype=np.float32)
    W = rng.standard_normal(shape.W, dtype=np.float32) * np.float32(math.sqrt(2 / (c * kh * kw)))
    b = rng.standard_normal(f, dtype=np.float32) * np.float32(0.1)
    dout = rng.standard_normal(shape.out, dtype=np.float32)
    return Case(shape, x, W, b, dout, threads)


# A layer row: build(case) -> call() doing one forward+backward, returning (y, dW, db, dx)
# finished (blocked on) and in any array type np.asarray accepts.
LayerRow = Callable[[Case], Callable[[], tuple]]


def conv_layer(shape: Shape) -> fn.Layer:
    f, _, kh, kw = shape.W
    return fn.Conv(f, (kh, kw), stride=shape.stride, padding=shape.pad)


def layer_funcnet_np(case: Case):
    layer = conv_layer(case.shape)
    params = {"W": case.W, "b": case.b}

    def call():
        y, cache = layer.forward(params, case.x)
        grads, dx = layer.backward(cache, case.dout)
        return y, grads["W"], grads["b"], dx

    return call


def layer_funcnet_jax(case: Case):
    layer = conv_layer(case.shape)

    @jax.jit
    def fwd_bwd(params, x, dout):
        y, cache = layer.forward(params, x)
        grads, dx = layer.backward(cache, dout)
        return y, grads["W"], grads["b"], dx

    params = {"W": jnp.asarray(case.W), "b": jnp.asarray(case.b)}
    x, dout = jnp.asarray(case.x), jnp.asarray(case.dout)
    return lambda: jax.block_until_ready(fwd_bwd(params, x, dout))


def lax_conv(x, W, stride: int, pad: int):
    return lax.conv_general_dilated(
        x, W, (stride, stride), [(pad, pad), (pad, pad)], dimension_numbers=DN
    )


def layer_lax_conv(case: Case):
    s, p = case.shape.stride, case.shape.pad

    def conv(W, b, x):
        return lax_conv(x, W, s, p) + b[None, :, None, None]

    @jax.jit
    def fwd_bwd(W, b, x, dout):
        y, vjp = jax.vjp(conv, W, b, x)
        dW, db, dx = vjp(dout)
        return y, dW, db, dx

    W, b, x, dout = map(jnp.asarray, (case.W, case.b, case.x, case.dout))
    return lambda: jax.block_until_ready(fwd_bwd(W, b, x, dout))


def layer_torch(case: Case):
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(case.threads)
    x = torch.from_numpy(case.x).requires_grad_()
    W = torch.from_numpy(case.W).requires_grad_()
    b = torch.from_numpy(case.b).requires_grad_()
    dout = torch.from_numpy(case.dout)
    s, p = case.shape.stride, case.shape.pad

    def call():
        y = F.conv2d(x, W, b, stride=s, padding=p)
        dx, dW, db = torch.autograd.grad(y, (x, W, b), dout)
        return y.detach(), dW, db, dx

    return call


LAYER_ROWS: dict[str, LayerRow] = {
    "funcnet-np": layer_funcnet_np,
    "funcnet-jax": layer_funcnet_jax,
    "lax-conv": layer_lax_conv,
    "torch": layer_torch,
}
# row -> (reference row, target ratio)
TARGETS = {"funcnet-np": ("torch", 3.0), "funcnet-jax": ("lax-conv", 1.2)}


def calls_entry(call: Callable[[], Any], calls: int) -> Entry:
    """A timed run of ``calls`` calls; it records seconds per call."""

    def run(_state) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            call()
        return (time.perf_counter() - start) / calls

    return Entry(lambda: None, run, self_timed=True)


def traced_peak(fn_: Callable[[], Any]) -> float:
    """Peak bytes of traced (NumPy and Python) allocations during ``fn_()``, above the start."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fn_()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def layer_memory(case: Case, call: Callable[[], Any] | None) -> list[str]:
    shape = case.shape
    from funcnet import conv as C

    n = shape.x[0]
    chunks = C._chunks(np, n, shape.im2col_bytes() // n)
    if len(chunks) == 1:
        how = "formed whole, kept in the cache for the backward"
    else:
        per = chunks[0].stop - chunks[0].start
        size = mb(shape.im2col_bytes() / n * per)
        how = (
            f"formed in {len(chunks)} chunks of <= {per} samples ({size}, budget "
            f"{mb(C.IM2COL_CHUNK_BYTES)}), gathered again in the backward"
        )
    lines = [f"  im2col of the batch: {mb(shape.im2col_bytes())}; funcnet-np: {how}"]
    if call is not None:
        peak = traced_peak(call)
        lines.append(
            f"  traced peak of one funcnet-np forward+backward: {mb(peak)} "
            f"({peak / shape.im2col_bytes():.1f} x im2col)"
        )
    if shape == SHAPES["convnet"]:
        pool = fn.MaxPool(2)
        x = np.random.default_rng(SEED).standard_normal(shape.out, dtype=np.float32)
        (pn, pc, ph, pw), _ = pool.init(0, x.shape)
        stack = 2 * 2 * pn * pc * ph * pw * x.itemsize
        dout = np.ones((pn, pc, ph, pw), np.float32)

        def pool_call():
            _, cache = pool.forward((), x)
            return pool.backward(cache, dout)

        pool_call()
        lines.append(
            f"  MaxPool 2x2 on the conv output {shape.out}: window stack {mb(stack)}; traced "
            f"peak of one forward+backward {mb(traced_peak(pool_call))}"
        )
    return lines


def agreement(case: Case, results: dict[str, tuple]) -> list[str]:
    ref = [np.asarray(a) for a in results["funcnet-np"]]
    labels = ("y", "dW", "db", "dx")
    scale = "  ".join(f"{k} {np.abs(r).max():.3g}" for k, r in zip(labels, ref, strict=True))
    lines = [f"  agreement, max |diff| against funcnet-np (largest |value|: {scale}):"]
    for name, res in results.items():
        if name == "funcnet-np":
            continue
        diffs = []
        for k, r, a in zip(labels, ref, res, strict=True):
            a = np.asarray(a)
            if a.shape != r.shape:
                diffs.append(f"{k} SHAPE {a.shape} != {r.shape}")
            else:
                diffs.append(f"{k} {np.abs(a.astype(np.float64) - r).max():.2e}")
        lines.append(f"    {name:<12} " + "  ".join(diffs))
    return lines


def bench_layer(args, names: list[str], threads: int) -> None:
    """Part 1, for every shape."""
    for label, shape in SHAPES.items():
        case = make_case(shape, threads)
        calls = {n: LAYER_ROWS[n](case) for n in names}
        results, per_call = {}, {}
        for n, call in calls.items():  # warm-up: compile, touch buffers, then time one call
            results[n] = call()
            call()
            start = time.perf_counter()
            call()
            per_call[n] = time.perf_counter() - start
        count = {n: max(1, math.ceil(RUN_S / per_call[n])) for n in names}
        print(f"\n== layer {label}: {shape.describe()}, float32")
        entries = {n: calls_entry(calls[n], count[n]) for n in names}
        rounds = round_robin(entries, args.repeats or LAYER_REPEATS, "rows")
        times, foreign = rounds.times, rounds.foreign
        med = {n: statistics.median(v) for n, v in times.items()}
        rows = []
        for n in names:
            vs = ""
            if n in TARGETS:
                ref, target = TARGETS[n]
                if ref in med:
                    ratio = med[n] / med[ref]
                    vs = f"{ratio:.2f} {'ok' if ratio <= target else 'MISS'} (<={target:g})"
            rows.append(
                [
                    n,
                    str(count[n]),
                    f"{med[n] * 1e3:.3f}",
                    fmt_range(times[n], 1e3),
                    f"{shape.flops / med[n] / 1e9:.1f}",
                    vs,
                    f"{statistics.median(foreign[n]):.2f}",
                    quiet_median(times[n], foreign[n], scale=1e3),
                ]
            )
        print()
        print_table(
            [
                ("row", 12),
                ("calls", 5),
                ("median ms", 10),
                ("min-max ms", 17),
                ("GFLOP/s", 8),
                ("vs ref", 20),
                ("bg cores", 8),
                ("quiet median ms", 16),
            ],
            rows,
        )
        if args.show_runs:
            print_runs(rounds, 1e3, "ms per call")
        print(f"  {shape.flops / 1e9:.3f} GFLOP per forward+backward")
        if "funcnet-np" in results and len(results) > 1:
            print("\n".join(agreement(case, results)))
        print(f"  memory at {label}:")
        print("\n".join(layer_memory(case, calls.get("funcnet-np"))))
        print_load(rounds, threads)
        del calls, results
        gc.collect()


# --------------------------------------------------------------------------- part 2: one epoch


class Ctx(NamedTuple):
    x: np.ndarray  # (60000, 1, 28, 28) float32
    t: np.ndarray  # (60000,) int64
    idx: np.ndarray  # (steps, BATCH) int64
    net: fn.Layer
    params0: Any
    np_steps: int


class Impl(NamedTuple):
    family: str  # the row the "vs funcnet" column divides by
    fresh: Callable[[], Any]  # -> (params, optimizer state), untimed
    epoch: Callable[[Any, int], Any]  # (state, steps) -> the losses of the steps it ran
    steps: int  # steps a timed run does: the epoch's, or fewer (scaled up)
    warm: Callable[[], Any] | None = None  # compile; None: run WARM_STEPS steps


WARM_STEPS = 2  # the warm-up of a row that dispatches per step: compiles, touches buffers


def _loop(step, x, t, idx, block=lambda a: a):
    """An epoch as one ``step`` call per batch, the batches gathered on the host."""

    def epoch(state, steps):
        params, s = state
        losses = []
        for b in idx[:steps]:
            params, s, loss = step(params, s, x[b], t[b])
            losses.append(loss)
        return block(losses)

    return epoch


def _scan(ctx: Ctx, family: str, run, fresh) -> Impl:
    """An epoch as one jitted program ``run(params, state, xs, ts)``, compiled ahead of time
    by the warm-up; the batches are gathered on the device inside the timed region."""
    x_dev, t_dev, idx_dev = (
        jnp.asarray(ctx.x),
        jnp.asarray(ctx.t.astype(np.int32)),
        jnp.asarray(ctx.idx),
    )
    compiled = {}

    def gather():
        return x_dev[idx_dev], t_dev[idx_dev]

    def warm():
        params, s = fresh()
        compiled["run"] = run.lower(params, s, *gather()).compile()

    def epoch(state, steps):
        params, s = state
        params, s, losses = compiled.get("run", run)(params, s, *gather())
        return jax.block_until_ready(losses)

    return Impl(family, fresh, epoch, len(ctx.idx), warm)


def _jax_fresh(params0, opt):
    def fresh():
        params = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), params0)
        state = opt.init(params)
        return jax.block_until_ready((params, state))

    return fresh


def epoch_funcnet_np(ctx: Ctx) -> Impl:
    opt = optim.adam(LR)
    step = train.make_step(ctx.net, fn.softmax_cross_entropy, opt)

    def fresh():
        params = jax.tree_util.tree_map(np.copy, ctx.params0)
        return params, opt.init(params)

    return Impl("funcnet-np-step", fresh, _loop(step, ctx.x, ctx.t, ctx.idx), ctx.np_steps)


def epoch_funcnet_jax_step(ctx: Ctx) -> Impl:
    opt = optim.adam(LR)
    step = jax.jit(train.make_step(ctx.net, fn.softmax_cross_entropy, opt), donate_argnums=(0, 1))
    epoch = _loop(step, ctx.x, ctx.t, ctx.idx, jax.block_until_ready)
    return Impl("funcnet-jax-step", _jax_fresh(ctx.params0, opt), epoch, len(ctx.idx))


def epoch_funcnet_jax_scan(ctx: Ctx) -> Impl:
    opt = optim.adam(LR)
    run = jax.jit(
        train.make_epoch(train.make_step(ctx.net, fn.softmax_cross_entropy, opt)),
        donate_argnums=(0, 1),
    )
    return _scan(ctx, "funcnet-jax-scan", run, _jax_fresh(ctx.params0, opt))


# The reference: the same network, loss and Adam written directly in jax.numpy.


def flat_params(params0) -> dict[str, Any]:
    conv, _, _, _, d1, _, d2 = params0
    return {
        "W1": conv["W"],
        "b1": conv["b"],
        "W2": d1["W"],
        "b2": d1["b"],
        "W3": d2["W"],
        "b3": d2["b"],
    }


def _jnp_loss(p, x, t):
    y = lax_conv(x, p["W1"], 1, 0) + p["b1"][None, :, None, None]
    # jax.nn.relu, not jnp.maximum(y, 0): its derivative at 0 is 0 like funcnet's Relu, where
    # maximum's is 1/2; at the first step every all-zero image patch gives y = b = 0 exactly.
    y = jax.nn.relu(y)
    y = lax.reduce_window(y, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    h = jax.nn.relu(y.reshape(y.shape[0], -1) @ p["W2"] + p["b2"])
    logp = jax.nn.log_softmax(h @ p["W3"] + p["b3"])
    return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=1))


def _jnp_adam_init(p):
    def zeros():  # mu and nu must not share buffers: both are donated
        return jax.tree_util.tree_map(jnp.zeros_like, p)

    return jnp.zeros((), jnp.int32), zeros(), zeros()


def _jnp_step(p, state, x, t, b1=0.9, b2=0.999, eps=1e-8):
    loss, g = jax.value_and_grad(_jnp_loss)(p, x, t)
    count, mu, nu = state
    count = count + 1
    mu = jax.tree_util.tree_map(lambda g, m: (1 - b1) * g + b1 * m, g, mu)
    nu = jax.tree_util.tree_map(lambda g, v: (1 - b2) * (g * g) + b2 * v, g, nu)
    c1 = (1 - b1**count).astype(jnp.float32)
    c2 = (1 - b2**count).astype(jnp.float32)

    def update(a, m, v):
        return a - LR * (m / c1) / (jnp.sqrt(v / c2) + eps)

    p = jax.tree_util.tree_map(update, p, mu, nu)
    return p, (count, mu, nu), loss


def _jnp_fresh(ctx: Ctx):
    p0 = flat_params(ctx.params0)

    def fresh():
        params = {k: jnp.array(v, copy=True) for k, v in p0.items()}
        return jax.block_until_ready((params, _jnp_adam_init(params)))

    return fresh


def epoch_jnp_step(ctx: Ctx) -> Impl:
    step = jax.jit(_jnp_step, donate_argnums=(0, 1))
    epoch = _loop(step, ctx.x, ctx.t, ctx.idx, jax.block_until_ready)
    return Impl("funcnet-jax-step", _jnp_fresh(ctx), epoch, len(ctx.idx))


def epoch_jnp_scan(ctx: Ctx) -> Impl:
    def run(params, state, xs, ts):
        def body(carry, batch):
            p, s, loss = _jnp_step(*carry, *batch)
            return (p, s), loss

        (params, state), losses = lax.scan(body, (params, state), (xs, ts))
        return params, state, losses

    run = jax.jit(run, donate_argnums=(0, 1))
    return _scan(ctx, "funcnet-jax-scan", run, _jnp_fresh(ctx))


EPOCH_ROWS: dict[str, Callable[[Ctx], Impl]] = {
    "funcnet-np-step": epoch_funcnet_np,
    "funcnet-jax-step": epoch_funcnet_jax_step,
    "funcnet-jax-scan": epoch_funcnet_jax_scan,
    "jnp-step": epoch_jnp_step,
    "jnp-scan": epoch_jnp_scan,
}
OPT_IN = ("jnp-scan",)  # run only when --only names them (jnp-scan: ~25 s per epoch on 2 cores)


def epoch_entry(name: str, impl: Impl, total: int, first: dict[str, Any]) -> Entry:
    """A timed run: ``impl.steps`` steps, recorded as seconds per ``total`` steps; the losses
    of the first run are kept in ``first``."""

    def run(state) -> float:
        start = time.perf_counter()
        losses = impl.epoch(state, impl.steps)
        sec = time.perf_counter() - start
        first.setdefault(name, losses)
        return sec * total / impl.steps

    return Entry(impl.fresh, run, self_timed=True)


def bench_epoch(args, names: list[str], threads: int) -> None:
    x, t, source = load_data(args.data_dir or default_data_dir(), SEED)
    x = x.reshape(-1, 1, 28, 28)
    steps = len(x) // BATCH
    idx = np.random.default_rng(SEED).permutation(len(x))[: steps * BATCH].reshape(steps, BATCH)
    net = models.simple_convnet()
    _, params0 = net.init(SEED, (BATCH, 1, 28, 28))
    k = min(args.np_steps, steps)
    ctx = Ctx(x, t, idx, net, params0, k)
    print(f"\n== one SimpleConvNet epoch: {net.name}")
    print(f"data: {source}; {steps} steps of batch {BATCH}, {x.dtype}; Adam lr {LR}")

    impls = {n: EPOCH_ROWS[n](ctx) for n in names}
    for impl in impls.values():  # warm-up: compiles JAX, touches the buffers
        if impl.warm is not None:
            impl.warm()
        else:
            impl.epoch(impl.fresh(), WARM_STEPS)
    first: dict[str, Any] = {}
    entries = {n: epoch_entry(n, impl, steps, first) for n, impl in impls.items()}
    rounds = round_robin(entries, args.repeats or EPOCH_REPEATS, "rows")
    times, foreign = rounds.times, rounds.foreign
    med = {n: statistics.median(v) for n, v in times.items()}
    rows = []
    for n in names:
        base = impls[n].family
        vs = f"{med[n] / med[base]:.2f}" if base in med else "-"
        losses = first[n]
        rows.append(
            [
                n + (" *" if impls[n].steps < steps else ""),
                f"{med[n]:.3f}",
                fmt_range(times[n]),
                vs,
                f"{float(losses[k - 1]):.4f}",
                f"{float(losses[-1]):.4f}" if len(losses) == steps else "-",
                f"{statistics.median(foreign[n]):.2f}",
                quiet_median(times[n], foreign[n]),
            ]
        )
    print()
    print_table(
        [
            ("row", 18),
            ("median s", 9),
            ("min-max s", 15),
            ("vs funcnet", 10),
            (f"loss@{k}", 8),
            (f"loss@{steps}", 8),
            ("bg cores", 8),
            ("quiet median s", 15),
        ],
        rows,
    )
    if args.show_runs:
        print_runs(rounds)
    for n, impl in impls.items():
        if impl.steps < steps:
            print(
                f"* {n}: timed over the first {impl.steps} of {steps} steps and scaled by "
                f"{steps / impl.steps:g} to one epoch ({impl.steps / steps * med[n]:.3f} s "
                f"measured per {impl.steps} steps)"
            )
    print_load(rounds, threads, "epoch")


# --------------------------------------------------------------------------- profile


def profile_layer(threads: int) -> None:
    """cProfile funcnet-np's forward+backward at each shape, and time its parts one by one."""
    for label, shape in SHAPES.items():
        case = make_case(shape, threads)
        call = layer_funcnet_np(case)
        reps = max(1, math.ceil(1.0 / _time(call)))
        print(f"\n== layer {label}: {shape.describe()}")

        def repeated(call=call, reps=reps):
            for _ in range(reps):
                call()

        print_profile(repeated, f"{reps} funcnet-np calls", 12)

        parts = conv_parts(case)
        total = _time(call)
        print(f"\nfuncnet-np forward+backward: {total * 1e3:.2f} ms per call; its parts:")
        for name, part in parts.items():
            sec = _time(part)
            share = "" if name.startswith("(") else f"{sec / total * 100:5.1f} %"
            print(f"  {name:<30} {sec * 1e3:8.3f} ms  {share}")


def conv_parts(case: Case) -> dict[str, Callable[[], Any]]:
    """The steps of funcnet.conv's ``_conv_forward`` / ``_conv_backward`` one at a time (with
    its private helpers), over every chunk of samples the NumPy path forms im2col in, and
    alternatives marked by parentheses: the dx formulation not taken at this channel count,
    and two one-sgemm products over the whole batch."""
    from funcnet import conv as C

    shape = case.shape
    f, c, kh, kw = shape.W
    n, _, oh, ow = shape.out
    kernel, stride, padding = (kh, kw), (shape.stride,) * 2, (shape.pad,) * 2
    x, W, b, dout = case.x, case.W, case.b, case.dout
    W2 = W.reshape(f, -1)
    x_pad = C._pad(np, x, padding)
    d = dout.reshape(n, f, -1)
    chunks = C._chunks(np, n, shape.im2col_bytes() // n)
    cols = [C._im2col(np, x_pad[s], kernel, stride, (oh, ow)) for s in chunks]
    out = np.empty((n, f, oh * ow), np.float32)

    def each(fn_):
        return lambda: [fn_(s, k) for k, s in enumerate(chunks)]

    def dx_by_offset(s, k):
        m = s.stop - s.start
        return C._col2im(
            np,
            lambda i, j: (W[:, :, i, j].T @ d[s]).reshape(m, c, oh, ow),
            (m, *x_pad.shape[1:]), kernel, stride, (oh, ow),
        )  # fmt: skip

    def dx_whole(s, k):
        m = s.stop - s.start
        dcols = (W2.T @ d[s]).reshape(m, c, kh, kw, oh, ow)
        return C._col2im(
            np, lambda i, j: dcols[:, :, i, j], (m, *x_pad.shape[1:]), kernel, stride, (oh, ow)
        )

    twice = len(chunks) > 1  # chunked: gathered in the forward and again in the backward
    gathers = "im2col (slices + stack)" + (" x2" if twice else "")

    def gather(s, k):
        for _ in range(1 + twice):
            C._im2col(np, x_pad[s], kernel, stride, (oh, ow))

    parts = {
        "pad x": lambda: C._pad(np, x, padding),
        gathers: each(gather),
        "y = W2 @ cols (batched)": each(lambda s, k: np.matmul(W2, cols[k], out=out[s])),
        "y += b": lambda: out.__iadd__(b.reshape(1, f, 1)),
        "dW = (d @ colsT).sum(0)": each(lambda s, k: (d[s] @ cols[k].transpose(0, 2, 1)).sum(0)),
        "db = dout.sum": lambda: dout.sum(axis=(0, 2, 3)),
    }
    taken, other = (
        (("dx: Wij^T @ d into col2im", dx_by_offset), ("dx: W2T @ d, col2im", dx_whole))
        if c >= C.DX_BY_OFFSET_MIN_CHANNELS
        else (("dx: W2T @ d, col2im", dx_whole), ("dx: Wij^T @ d into col2im", dx_by_offset))
    )
    parts[taken[0]] = each(taken[1])
    parts[f"({other[0]})"] = each(other[1])
    parts["(one sgemm) dW = D @ COLS^T"] = _one_gemm_dw(
        d, C._im2col(np, x_pad, kernel, stride, (oh, ow))
    )
    parts["(one sgemm) dcols = W2T @ D"] = _one_gemm_dcols(W2, d)
    return parts


def _one_gemm_dw(d, cols):
    """dW as one (F, N·P)·(N·P, K) product over transposed copies, the copies not timed."""
    n, f, p = d.shape
    D = np.ascontiguousarray(d.transpose(1, 0, 2)).reshape(f, n * p)
    COLS = np.ascontiguousarray(cols.transpose(0, 2, 1)).reshape(n * p, -1)
    return lambda: D @ COLS


def _one_gemm_dcols(W2, d):
    n, f, p = d.shape
    D = np.ascontiguousarray(d.transpose(1, 0, 2)).reshape(f, n * p)
    return lambda: W2.T @ D


def _time(fn_: Callable[[], Any], min_s: float = 0.2) -> float:
    """Median seconds per call of ``fn_`` over 5 runs of enough calls for ``min_s``/5."""
    fn_()
    start = time.perf_counter()
    fn_()
    once = max(time.perf_counter() - start, 1e-6)
    reps = max(1, math.ceil(min_s / 5 / once))
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            fn_()
        samples.append((time.perf_counter() - start) / reps)
    return statistics.median(samples)


# --------------------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    every = [*LAYER_ROWS, *EPOCH_ROWS]
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"timed runs per row (default {LAYER_REPEATS} per layer row, {EPOCH_REPEATS} "
        "per epoch row)",
    )
    ap.add_argument("--data-dir", type=Path, default=None, help="MNIST directory (epoch part)")
    ap.add_argument("--only", default=None, help="comma-separated rows: " + ", ".join(every))
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch row")
    ap.add_argument(
        "--epoch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time one SimpleConvNet epoch (default: on)",
    )
    ap.add_argument(
        "--np-steps",
        type=int,
        default=60,
        help="steps the funcnet-np-step epoch row runs, scaled to 600 (default 60)",
    )
    ap.add_argument(
        "--show-runs", action="store_true", help="also print every run's time and background load"
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="cProfile funcnet-np's conv forward+backward and time its parts, then exit",
    )
    args = ap.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.np_steps < 1:
        ap.error("--np-steps must be >= 1")
    names = [n for n in every if n not in OPT_IN]
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in every]
        if unknown:
            ap.error(f"unknown --only name(s) {unknown}; choose from {', '.join(every)}")

    blas, threads = blas_info()
    threads = threads or usable_cpus()
    note = check_torch(names, args.no_torch, threads)
    print_environment(blas, note)
    dev = jax.devices()[0]
    print(
        f"jax default backend: {jax.default_backend()} ({dev.device_kind}), "
        f"default_matmul_precision {jax.config.jax_default_matmul_precision}"
        + ("" if on_cpu() else "; the funcnet-np and torch rows run on the host CPU")
    )
    if args.profile:
        profile_layer(threads)
        return 0

    layer_names = [n for n in names if n in LAYER_ROWS]
    if layer_names:
        bench_layer(args, layer_names, threads)
    epoch_names = [n for n in names if n in EPOCH_ROWS]
    if args.epoch and epoch_names:
        bench_epoch(args, epoch_names, threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
