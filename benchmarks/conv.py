"""One Conv layer forward+backward, and one SimpleConvNet epoch: funcnet against
``lax.conv_general_dilated`` and PyTorch.

    .venv/bin/python benchmarks/conv.py [--no-epoch] [--repeats N] [--np-steps 60]
        [--only funcnet-np,torch] [--no-torch] [--data-dir DIR]

Part 1, one layer: forward and backward (dW, db, dx) of a Conv with bias, float32, fixed
random x, W, b, dout; ``convnet`` x (100, 1, 28, 28), W (30, 1, 5, 5), padding 0
(SimpleConvNet's first layer) and ``large`` x (64, 64, 32, 32), W (64, 64, 3, 3), padding 1.
Rows: funcnet-np (``layer.forward`` + ``layer.backward`` on NumPy), funcnet-jax (the same
in one ``jax.jit``), lax-conv (``jax.vjp`` of lax.conv_general_dilated + b, jitted: the
reference for funcnet-jax, target <= 1.2), torch (F.conv2d + autograd.grad, as many threads
as NumPy's BLAS: the reference for funcnet-np, target <= 3).  A run is ``calls`` calls
(about 0.2 s); median/min-max ms per call over ``--repeats`` (default 5) round-robin runs;
GFLOP/s counts 3 products of 2·N·F·OH·OW·C·kh·kw; ``vs ref`` with ok/MISS against the
target.  Then agreement (max |diff| against funcnet-np), and memory: im2col's size, how
funcnet-np forms it (whole, or in chunks of ``_conv_fast.IM2COL_CHUNK_BYTES``) and the
traced peak of one funcnet-np forward+backward.

Part 2, one epoch (``--no-epoch`` skips it): SimpleConvNet, Adam lr 0.001, 600 steps of
batch 100, every run from the same weights; median s over ``--repeats`` (default 3).
funcnet-np-step (``train.make_step`` on NumPy; only the first ``--np-steps`` steps, scaled
to 600, marked *), funcnet-jax-step (jitted, one call per batch), funcnet-jax-scan
(``train.make_epoch`` as one lax.scan), jnp-step / jnp-scan (the net and Adam written in
jax.numpy; ``vs funcnet`` against the funcnet row of the same dispatch).  jnp-scan (~25 s
on 2 cores, in XLA's max-pool gradient) runs only when ``--only`` names it.  loss@K, loss@600:
step K and last step of the first timed run (equal digits: the rows train alike).
"""

from __future__ import annotations

import argparse
import functools
import gc
import math
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _harness, also under -m
import _harness as H
import jax
import jax.numpy as jnp
from jax import lax

import funcnet as fn  # the checkout's: _harness put the repository root first on sys.path
from funcnet import models, optim, train
from funcnet.layers import _conv_fast

SEED, BATCH, LR = 0, 100, 0.001
RUN_S = 0.2  # a timed layer run lasts about this long: calls = ceil(RUN_S / warm-up call)
SHAPES = {  # x (N, C, H, W), W (F, C, kh, kw), padding; stride 1
    "convnet": ((100, 1, 28, 28), (30, 1, 5, 5), 0),
    "large": ((64, 64, 32, 32), (64, 64, 3, 3), 1),
}
DN = ("NCHW", "OIHW", "NCHW")
# row -> (reference row, target ratio)
TARGETS = {"funcnet-np": ("torch", 3.0), "funcnet-jax": ("lax-conv", 1.2)}


def mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.2f} MB"


def lax_conv(x, W, pad: int):  # NCHW and OIHW, as funcnet and PyTorch
    return lax.conv_general_dilated(x, W, (1, 1), [(pad, pad)] * 2, dimension_numbers=DN)


def make_case(xs, ws, pad, threads):
    rng = np.random.default_rng(SEED)
    layer = fn.Conv(ws[0], ws[2:], padding=pad)
    out = layer.init(0, xs)[0]
    x = rng.standard_normal(xs, dtype=np.float32)  # x, W, b, dout drawn in this order
    W = rng.standard_normal(ws, dtype=np.float32) * np.float32(math.sqrt(2 / math.prod(ws[1:])))
    return argparse.Namespace(
        x=x, W=W, pad=pad, layer=layer, out=out,
        b=rng.standard_normal(ws[0], dtype=np.float32) * np.float32(0.1),
        dout=rng.standard_normal(out, dtype=np.float32), threads=threads,
        flops=3 * 2 * math.prod(out) * math.prod(ws[1:]),
        cols=math.prod(out) // ws[0] * math.prod(ws[1:]) * 4,  # im2col bytes
    )  # fmt: skip


def fwd_bwd(layer, params, x, dout):
    y, cache = layer.forward(params, x)
    grads, dx = layer.backward(cache, dout)
    return y, grads["W"], grads["b"], dx


def layer_funcnet_np(c):
    return functools.partial(fwd_bwd, c.layer, {"W": c.W, "b": c.b}, c.x, c.dout)


def jitted(f, *args):
    run, args = jax.jit(f), jax.device_put(args)
    return lambda: jax.block_until_ready(run(*args))


def layer_funcnet_jax(c):
    return jitted(functools.partial(fwd_bwd, c.layer), {"W": c.W, "b": c.b}, c.x, c.dout)


def layer_lax_conv(c):
    def run(W, b, x, dout):
        y, vjp = jax.vjp(lambda W, b, x: lax_conv(x, W, c.pad) + b[None, :, None, None], W, b, x)
        return y, *vjp(dout)

    return jitted(run, c.W, c.b, c.x, c.dout)


def layer_torch(c):
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(c.threads)
    x, W, b = (torch.from_numpy(a).requires_grad_() for a in (c.x, c.W, c.b))
    dout = torch.from_numpy(c.dout)

    def call():
        y = F.conv2d(x, W, b, padding=c.pad)
        dx, dW, db = torch.autograd.grad(y, (x, W, b), dout)
        return y.detach(), dW, db, dx

    return call


LAYER_ROWS = {
    "funcnet-np": layer_funcnet_np,
    "funcnet-jax": layer_funcnet_jax,
    "lax-conv": layer_lax_conv,
    "torch": layer_torch,
}


def print_memory(label, c, call) -> None:
    """im2col's size, how funcnet-np forms it, the traced peak of ``call()`` (if any)."""
    n = c.x.shape[0]
    parts = _conv_fast.chunks(n, c.cols // n)
    how = "formed whole, kept in the cache for the backward"
    if len(parts) > 1:
        per = parts[0].stop - parts[0].start
        how = (
            f"formed in {len(parts)} chunks of <= {per} samples ({mb(c.cols / n * per)}, budget "
            f"{mb(_conv_fast.IM2COL_CHUNK_BYTES)}), gathered again in the backward"
        )
    print(f"  memory at {label}:\n  im2col of the batch: {mb(c.cols)}; funcnet-np: {how}")
    if call is not None:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        call()
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        print(
            f"  traced peak of one funcnet-np forward+backward: {mb(peak)} "
            f"({peak / c.cols:.1f} x im2col)"
        )


def print_agreement(results) -> None:
    """max |diff| of every row's y, dW, db, dx against funcnet-np's."""
    ref = [np.asarray(a, np.float64) for a in results.pop("funcnet-np")]
    labels = ("y", "dW", "db", "dx")
    scale = "  ".join(map("{} {:.3g}".format, labels, (np.abs(r).max() for r in ref)))
    print(f"  agreement, max |diff| against funcnet-np (largest |value|: {scale}):")
    for name, res in results.items():
        diffs = [np.abs(np.asarray(a) - r).max() for r, a in zip(ref, res, strict=True)]
        print(f"    {name:<12} " + "  ".join(map("{} {:.2e}".format, labels, diffs)))


def bench_layer(args, label, shape, names, threads) -> None:
    c = make_case(*shape, threads)
    calls = {n: LAYER_ROWS[n](c) for n in names}
    results, count = {}, {}
    for n, call in calls.items():  # warm-up: compile, touch buffers, then time one call
        results[n], _ = call(), call()
        start = time.perf_counter()
        call()
        count[n] = max(1, math.ceil(RUN_S / (time.perf_counter() - start)))

    def run(n):  # a timed run: count[n] calls, recorded as seconds per call
        start = time.perf_counter()
        for _ in range(count[n]):
            calls[n]()
        return (time.perf_counter() - start) / count[n]

    def vs_ref(n, med):
        ref, target = TARGETS.get(n, (None, 0))
        ok = ref in med and ("ok" if med[n] / med[ref] <= target else "MISS")
        return f"{med[n] / med[ref]:.2f} {ok} (<={target:g})" if ok else ""

    print(f"\n== layer {label}: x {shape[0]}, W {shape[1]}, stride 1, padding {shape[2]} -> "
          f"out {c.out}, float32")  # fmt: skip
    rounds = H.round_robin({n: (lambda n=n: n, run) for n in names}, args.repeats or 5)
    H.report(rounds, "row", [
        ("GFLOP/s", lambda n, med: f"{c.flops / med[n] / 1e9:.1f}"), ("vs ref", vs_ref),
    ], 1e3, "ms", pre=[("calls", lambda n, med: str(count[n]))])  # fmt: skip
    print(f"  {c.flops / 1e9:.3f} GFLOP per forward+backward")
    if "funcnet-np" in results and len(results) > 1:
        print_agreement(results)
    print_memory(label, c, calls.get("funcnet-np"))
    H.print_load(rounds, threads)


def funcnet_row(kind):  # "np", "step", "scan"
    def build(c):
        opt = optim.adam(LR)
        step = train.make_step(c.net, fn.softmax_cross_entropy, opt)
        fresh = H.fresh_state(c.params0, lambda p: opt.init(fn.trainable(p)), kind != "np")
        steps = c.np_steps if kind == "np" else len(c.idx)
        return fresh, H.epoch_fn(kind, step, c, 2, train.make_epoch), steps

    return build


# The reference: the same network, loss and Adam written directly in jax.numpy.


def _jnp_loss(p, x, t):
    # jax.nn.relu, not jnp.maximum(y, 0): its derivative at 0 is 0 like funcnet's Relu, where
    # maximum's is 1/2; at the first step every all-zero image patch gives y = b = 0 exactly.
    y = jax.nn.relu(lax_conv(x, p["W1"], 0) + p["b1"][None, :, None, None])
    y = lax.reduce_window(y, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    h = jax.nn.relu(y.reshape(y.shape[0], -1) @ p["W2"] + p["b2"])
    logp = jax.nn.log_softmax(h @ p["W3"] + p["b3"])
    return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=1))


def _jnp_adam_init(p):  # mu and nu must not share buffers: both are donated
    return (
        jnp.zeros((), jnp.int32),
        jax.tree.map(jnp.zeros_like, p),
        jax.tree.map(jnp.zeros_like, p),
    )


def _jnp_step(p, state, x, t, b1=0.9, b2=0.999, eps=1e-8):
    loss, g = jax.value_and_grad(_jnp_loss)(p, x, t)
    count, mu, nu = state
    count = count + 1
    mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, g, mu)
    nu = jax.tree.map(lambda g, v: (1 - b2) * (g * g) + b2 * v, g, nu)
    c1, c2 = (1 - b1**count).astype(jnp.float32), (1 - b2**count).astype(jnp.float32)

    def update(a, m, v):
        return a - LR * (m / c1) / (jnp.sqrt(v / c2) + eps)

    return jax.tree.map(update, p, mu, nu), (count, mu, nu), loss


def jnp_row(kind):
    def build(c):
        (conv, _, _, _, d1, _, d2), p0 = c.params0, {}
        for i, d in enumerate((conv, d1, d2), 1):
            p0[f"W{i}"], p0[f"b{i}"] = d["W"], d["b"]
        return H.fresh_state(p0, _jnp_adam_init), H.epoch_fn(kind, _jnp_step, c, 2), len(c.idx)

    return build


EPOCH_ROWS = {
    "funcnet-np-step": funcnet_row("np"),
    "funcnet-jax-step": funcnet_row("step"),
    "funcnet-jax-scan": funcnet_row("scan"),
    "jnp-step": jnp_row("step"),
    "jnp-scan": jnp_row("scan"),
}
OPT_IN = ("jnp-scan",)  # run only when --only names it (~25 s per epoch on 2 cores)


def bench_epoch(args, names, threads) -> None:
    x, t, idx, source = H.load_data(args.data_dir, BATCH, SEED)
    net, steps, k = models.simple_convnet(), len(idx), max(1, min(args.np_steps, len(idx)))
    c = argparse.Namespace(x=x.reshape(-1, 1, 28, 28), t=t, idx=idx, net=net, np_steps=k)
    c.params0 = net.init(SEED, (BATCH, 1, 28, 28))[1]
    print(f"\n== one SimpleConvNet epoch: {net.name}")
    print(f"data: {source}; {steps} steps of batch {BATCH}, {x.dtype}; Adam lr {LR}")
    rows = {n: EPOCH_ROWS[n](c) for n in names}
    for fresh, epoch, _ in rows.values():  # warm-up: compile, touch the buffers
        epoch.warm(fresh())
    first = {}  # the losses of each row's first timed run

    def run(n, epoch, n_steps):
        def timed(state):
            start = time.perf_counter()
            first.setdefault(n, epoch(state, n_steps))
            return (time.perf_counter() - start) * steps / n_steps

        return timed

    rounds = H.round_robin({n: (r[0], run(n, *r[1:])) for n, r in rows.items()}, args.repeats or 3)

    def loss(at):
        return lambda n, med: f"{float(first[n][at - 1]):.4f}" if len(first[n]) >= at else "-"

    med = H.report(rounds, "row", [
        ("vs funcnet", lambda n, med: H.ratio(med, n, H.family(n))),
        (f"loss@{k}", loss(k)),
        (f"loss@{steps}", loss(steps)),
    ], label=lambda n: n + (" *" if rows[n][2] < steps else ""))  # fmt: skip
    for n, (*_, n_steps) in rows.items():
        if n_steps < steps:
            print(
                f"* {n}: timed over the first {n_steps} of {steps} steps and scaled by "
                f"{steps / n_steps:g} to one epoch ({n_steps / steps * med[n]:.3f} s "
                f"measured per {n_steps} steps)"
            )
    H.print_load(rounds, threads, "epoch")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--epoch", action=argparse.BooleanOptionalAction, default=True,
                    help="also time one SimpleConvNet epoch (default: on)")  # fmt: skip
    ap.add_argument("--np-steps", type=int, default=60, help="steps of funcnet-np-step (60)")
    every = [*LAYER_ROWS, *EPOCH_ROWS]
    default = [n for n in every if n not in OPT_IN]
    args, names, threads = H.setup(ap, every, default, argv)
    print(
        f"jax default backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"default_matmul_precision {jax.config.jax_default_matmul_precision}"
    )
    if layer_names := [n for n in names if n in LAYER_ROWS]:
        for label, shape in SHAPES.items():
            bench_layer(args, label, shape, layer_names, threads)
            gc.collect()
    if args.epoch and (epoch_names := [n for n in names if n in EPOCH_ROWS]):
        bench_epoch(args, epoch_names, threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
