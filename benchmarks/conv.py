"""One Conv layer, the pools, and one SimpleConvNet (or DeepConvNet) epoch: funcnet against
XLA's own convolution and PyTorch, with the targets of the conv-speed work (ok/MISS).

    .venv/bin/python benchmarks/conv.py [--no-epoch] [--no-pools] [--repeats N]
        [--shapes convnet,large,strided,wide] [--only funcnet-np,torch] [--np-steps 60]
        [--net simple|deep] [--epoch-steps N] [--no-torch] [--data-dir DIR]

Part 1, one Conv layer's forward and backward (y, dW, db, dx) with bias, float32, at four
shapes (``SHAPES``: SimpleConvNet's first layer, a large one, stride 2, small images with
many channels).  Rows: funcnet-np (NumPy); funcnet-jax (one ``jax.jit``, ``algorithm=
"auto"``) and its two formulations forced, funcnet-jax-im2col and funcnet-jax-xla; lax-conv
(``jax.vjp`` of lax.conv_general_dilated, jitted); torch (F.conv2d + autograd.grad).
Targets: funcnet-np <= 1.0x torch (1.2x at ``large``); funcnet-jax <= 1.1x the faster of
lax-conv and funcnet-jax-im2col.  Then every row's max |diff| against funcnet-np, and the
traced peak memory of one funcnet-np forward + backward against the batch's im2col.

Part 2, MaxPool and AvgPool 2x2 at x (100, 30, 24, 24): funcnet-np against torch,
funcnet-jax against ``jax.vjp`` of lax.reduce_window (targets <= 1.0x).

Part 3 (``--no-epoch`` skips it), one epoch of 600 steps of batch 100, Adam 0.001, from the
same weights: funcnet-np-step (``train.make_step`` on NumPy, over ``--np-steps`` steps
scaled to 600, marked *), funcnet-jax-step (jitted per batch), funcnet-jax-scan (one
lax.scan), jnp-step / jnp-scan (the net and Adam written in jax.numpy; jnp-scan only when
``--only`` names it), torch-step (PyTorch eager).  Targets against torch-step: NumPy <= 0.8,
JAX <= 0.5.  ``--net deep``: chapter 8's DeepConvNet, its Dropout fed as ``fit`` feeds it,
plain ratios to torch-step; ``--epoch-steps K`` times every row over K steps, scaled.

Layer and pool rows run ``calls`` calls (about 0.2 s) per timed run; the tables give the
median and min-max ms per call over ``--repeats`` (default 7; epochs: 3) round-robin runs.
NumPy and PyTorch rows are timed with each other, the JAX rows with each other.
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

SEED, BATCH, LR = 0, 100, 0.001
RUN_S = 0.2  # a timed layer run lasts about this long: calls = ceil(RUN_S / warm-up call)
# x (N, C, H, W), W (F, C, kh, kw), padding, stride, funcnet-np's target vs torch.  The issue:
# "<= 1.2x at the large shape, <= 1.0x at the SimpleConvNet shape, also on a strided shape
# and a small-image wide one": the two added shapes get the SimpleConvNet shape's 1.0.
SHAPES = {
    "convnet": ((100, 1, 28, 28), (30, 1, 5, 5), 0, 1, 1.0),
    "large": ((64, 64, 32, 32), (64, 64, 3, 3), 1, 1, 1.2),
    # (32 + 2 - 3) / 2 does not divide, which Conv refuses; PyTorch would drop the last
    # padding row.  31x31 gives the same 16x16 output, the same flops, on both sides.
    "strided": ((64, 32, 31, 31), (64, 32, 3, 3), 1, 2, 1.0),
    "wide": ((32, 128, 16, 16), (128, 128, 3, 3), 1, 1, 1.0),
}
POOL_SHAPE = (100, 30, 24, 24)  # SimpleConvNet's pooling input; 2x2 windows, stride 2
DN = ("NCHW", "OIHW", "NCHW")
# row -> (reference rows (the fastest counts), target ratio or None: the shape's)
TARGETS = {
    "funcnet-np": (("torch",), None),
    "funcnet-jax": (("lax-conv", "funcnet-jax-im2col"), 1.1),
}
POOL_TARGETS = {"funcnet-np": (("torch",), 1.0), "funcnet-jax": (("reduce-window",), 1.0)}
EPOCH_TARGETS = {
    "funcnet-np-step": (("torch-step",), 0.8),
    "funcnet-jax-step": (("torch-step",), 0.5),
    "funcnet-jax-scan": (("torch-step",), 0.5),
}


def mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.2f} MB"


def lax_conv(x, W, pad: int, stride: int = 1):  # NCHW and OIHW, as funcnet and PyTorch
    return lax.conv_general_dilated(x, W, (stride,) * 2, [(pad, pad)] * 2, dimension_numbers=DN)


def vs_target(targets, default=None):
    """A column: the row's median over the fastest of its reference rows, ok/MISS."""

    def cell(n, med):
        refs, target = targets.get(n, ((), None))
        refs, target = [r for r in refs if r in med], target or default
        if not refs or target is None:
            return ""
        ref = min(refs, key=med.get)
        r = med[n] / med[ref]
        return f"{r:.2f} {'ok' if r <= target else 'MISS'} (<={target:g} {ref})"

    return cell


def make_case(xs, ws, pad, stride, target, threads):
    rng = np.random.default_rng(SEED)
    layer = fn.Conv(ws[0], ws[2:], padding=pad, stride=stride)
    out = layer.init(0, xs)[0]
    x = rng.standard_normal(xs, dtype=np.float32)  # x, W, b, dout drawn in this order
    W = rng.standard_normal(ws, dtype=np.float32) * np.float32(math.sqrt(2 / math.prod(ws[1:])))
    return argparse.Namespace(
        x=x, W=W, pad=pad, layer=layer, out=out,
        b=rng.standard_normal(ws[0], dtype=np.float32) * np.float32(0.1),
        dout=rng.standard_normal(out, dtype=np.float32), threads=threads, stride=stride,
        target=target,
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


def layer_funcnet_jax(algorithm):
    def build(c):
        layer = fn.Conv(c.W.shape[0], c.W.shape[2:], padding=c.pad, stride=c.stride,
                        algorithm=algorithm)  # fmt: skip
        return jitted(functools.partial(fwd_bwd, layer), {"W": c.W, "b": c.b}, c.x, c.dout)

    return build


def layer_lax_conv(c):
    def run(W, b, x, dout):
        def f(W, b, x):
            return lax_conv(x, W, c.pad, c.stride) + b[None, :, None, None]

        y, vjp = jax.vjp(f, W, b, x)
        return y, *vjp(dout)

    return jitted(run, c.W, c.b, c.x, c.dout)


def layer_torch(c):
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(c.threads)
    x, W, b = (torch.from_numpy(a).requires_grad_() for a in (c.x, c.W, c.b))
    dout = torch.from_numpy(c.dout)

    def call():
        y = F.conv2d(x, W, b, padding=c.pad, stride=c.stride)
        dx, dW, db = torch.autograd.grad(y, (x, W, b), dout)
        return y.detach(), dW, db, dx

    return call


LAYER_ROWS = {
    "funcnet-np": layer_funcnet_np,
    "funcnet-jax": layer_funcnet_jax("auto"),
    "funcnet-jax-im2col": layer_funcnet_jax("im2col"),
    "funcnet-jax-xla": layer_funcnet_jax("xla"),
    "lax-conv": layer_lax_conv,
    "torch": layer_torch,
}


def print_memory(c, call) -> None:
    """The traced peak of one funcnet-np forward+backward against the batch's im2col."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    kept = call()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    results = sum(a.nbytes for a in kept)
    verdict = "ok" if peak <= c.cols else "MISS"
    if results > c.cols:
        verdict = f"n/a: y, dW, db and dx alone take {mb(results)}"
    print(
        f"  traced peak of one funcnet-np forward+backward: {mb(peak)} ({peak / c.cols:.2f} x "
        f"the batch's im2col of {mb(c.cols)}, target <= 1: {verdict})"
    )


def print_agreement(results, labels=("y", "dW", "db", "dx")) -> None:
    """max |diff| of every row's results against funcnet-np's."""
    ref = [np.asarray(a, np.float64) for a in results.pop("funcnet-np")]
    scale = "  ".join(map("{} {:.3g}".format, labels, (np.abs(r).max() for r in ref)))
    print(f"  agreement, max |diff| against funcnet-np (largest |value|: {scale}):")
    for name, res in results.items():
        diffs = [np.abs(np.asarray(a) - r).max() for r, a in zip(ref, res, strict=True)]
        print(f"    {name:<18} " + "  ".join(map("{} {:.2e}".format, labels, diffs)))


def time_calls(args, calls, extra):
    """Warm up every call, then time them round-robin; print the table; -> (results, rounds)."""
    results, runs = {}, {}
    for n, call in calls.items():
        results[n], runs[n] = H.calibrate(call, RUN_S)
    rounds = H.round_robin({n: (lambda: None, r) for n, r in runs.items()}, args.repeats or 7)
    pre = [("calls", lambda n, med: str(runs[n].calls))]
    H.report(rounds, "row", extra, 1e3, "ms", pre=pre)
    return results, rounds


def bench(args, calls, extra, threads, labels=("y", "dW", "db", "dx")) -> None:
    """Time ``calls`` in two groups, NumPy's beside PyTorch's and JAX's beside XLA's (JAX's
    CPU runtime slows NumPy and PyTorch rows timed between its own), then the agreement."""
    host = {n: c for n, c in calls.items() if n in ("funcnet-np", "torch")}
    rest = {n: c for n, c in calls.items() if n not in host}
    results = {}
    for group in (g for g in (host, rest) if g):
        res, rounds = time_calls(args, group, extra)
        results.update(res)
        H.print_load(rounds, threads)
    if "funcnet-np" in results and len(results) > 1:
        print_agreement(results, labels)


def bench_layer(args, label, shape, names, threads) -> None:
    c = make_case(*shape, threads)
    calls = {n: LAYER_ROWS[n](c) for n in names}
    print(f"\n== layer {label}: x {shape[0]}, W {shape[1]}, stride {c.stride}, padding {c.pad} "
          f"-> out {c.out}, float32; {c.flops / 1e9:.3f} GFLOP per forward+backward")  # fmt: skip
    gflops = ("GFLOP/s", lambda n, med: f"{c.flops / med[n] / 1e9:.1f}")
    bench(args, calls, [gflops, ("vs ref", vs_target(TARGETS, c.target))], threads)
    if "funcnet-np" in calls:
        print_memory(c, calls["funcnet-np"])


def pool_calls(kind, names, threads):
    """{row: call} for one pooling layer's forward+backward at POOL_SHAPE."""
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal(POOL_SHAPE, dtype=np.float32)
    layer = (fn.MaxPool if kind == "max" else fn.AvgPool)(2)
    dout = rng.standard_normal(layer.init(0, POOL_SHAPE)[0], dtype=np.float32)

    def funcnet(x, dout):
        y, cache = layer.forward((), x)
        return y, layer.backward(cache, dout)[1]

    def reduce_window(x, dout):
        def f(x):
            if kind == "max":
                return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
            return lax.reduce_window(x, 0.0, lax.add, (1, 1, 2, 2), (1, 1, 2, 2), "VALID") / 4

        y, vjp = jax.vjp(f, x)
        return y, *vjp(dout)

    def torch_call():
        import torch
        from torch.nn import functional as F

        torch.set_num_threads(threads)
        tx, td = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dout)
        pool = F.max_pool2d if kind == "max" else F.avg_pool2d

        def call():
            y = pool(tx, 2)
            return y.detach(), *torch.autograd.grad(y, tx, td)

        return call

    rows = {
        "funcnet-np": lambda: functools.partial(funcnet, x, dout),
        "funcnet-jax": lambda: jitted(funcnet, x, dout),
        "reduce-window": lambda: jitted(reduce_window, x, dout),
        "torch": torch_call,
    }
    return {n: rows[n]() for n in rows if n in names or n == "reduce-window"}


def bench_pools(args, names, threads) -> None:
    for kind in ("max", "avg"):
        print(f"\n== {kind}-pool 2x2 at x {POOL_SHAPE}, float32: forward + backward")
        calls = pool_calls(kind, names, threads)
        bench(args, calls, [("vs ref", vs_target(POOL_TARGETS))], threads, ("y", "dx"))


def funcnet_row(kind):  # "np", "step", "scan"
    def build(c):
        opt = optim.adam(LR)
        step = train.make_step(c.net, fn.softmax_cross_entropy, opt)
        fresh = H.fresh_state(c.params0, lambda p: opt.init(fn.trainable(p)), kind != "np")
        steps = c.np_steps if kind == "np" else c.steps
        rngs = train.step_rngs(SEED, 1, len(c.idx), kind != "np") if c.random else None
        return fresh, H.epoch_fn(kind, step, c, 2, train.make_epoch, rngs), steps

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
        return H.fresh_state(p0, _jnp_adam_init), H.epoch_fn(kind, _jnp_step, c, 2), c.steps

    return build


def torch_row(c):
    """The same network, loss and Adam in PyTorch, eager, from the same weights."""
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(c.threads)
    convs = [(p["W"], p["b"]) for p in c.params0 if p and p["W"].ndim == 4]
    # funcnet's Dense keeps W as (in, out); torch's Linear takes (out, in).
    dense = [(p["W"].T, p["b"]) for p in c.params0 if p and p["W"].ndim == 2]
    p0 = [a for pair in convs + dense for a in pair]

    def fresh():
        params = [torch.tensor(np.array(a)).requires_grad_() for a in p0]
        return [params, torch.optim.Adam(params, lr=LR)]

    def simple(params, x):
        W1, b1, W2, b2, W3, b3 = params
        y = F.max_pool2d(F.relu(F.conv2d(x, W1, b1)), 2).flatten(1)
        return F.linear(F.relu(F.linear(y, W2, b2)), W3, b3)

    def drop(y):  # the book's Dropout(0.5) in training: a kept unit is not rescaled
        return y * (torch.rand_like(y) >= 0.5)

    def deep(params, x):
        w = iter(params)
        for i, pad in enumerate((1, 1, 1, 2, 1, 1)):
            x = F.relu(F.conv2d(x, next(w), next(w), padding=pad))
            x = F.max_pool2d(x, 2) if i % 2 else x
        x = drop(F.relu(F.linear(x.flatten(1), next(w), next(w))))
        return drop(F.linear(x, next(w), next(w)))

    forward = deep if c.random else simple

    def epoch(state, steps=None):
        params, opt = state
        losses = []
        for b in c.idx[:steps]:
            opt.zero_grad()
            out = forward(params, torch.from_numpy(c.x[b]))
            loss = F.cross_entropy(out, torch.from_numpy(c.t[b]))
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return [float(v) for v in losses]

    epoch.warm = lambda state, steps=None: epoch(state, 2)
    return fresh, epoch, c.steps


EPOCH_ROWS = {
    "funcnet-np-step": funcnet_row("np"),
    "funcnet-jax-step": funcnet_row("step"),
    "funcnet-jax-scan": funcnet_row("scan"),
    "jnp-step": jnp_row("step"),
    "jnp-scan": jnp_row("scan"),
    "torch-step": torch_row,
}
OPT_IN = ("jnp-scan",)  # run only when --only names it (~25 s per epoch on 2 cores)


def bench_epoch(args, names, threads) -> None:
    x, t, idx, source = H.load_data(args.data_dir, BATCH, SEED)
    deep = args.net == "deep"
    net = models.deep_convnet() if deep else models.simple_convnet()
    steps = len(idx)
    timed = min(args.epoch_steps or steps, steps)  # every row's steps; funcnet-np's at most
    c = argparse.Namespace(x=x.reshape(-1, 1, 28, 28), t=t, idx=idx, net=net, random=deep,
                           threads=threads, steps=timed,
                           np_steps=min(args.np_steps, timed))  # fmt: skip
    c.params0 = net.init(SEED, (BATCH, 1, 28, 28))[1]
    k = c.np_steps
    print(f"\n== one {'DeepConvNet' if deep else 'SimpleConvNet'} epoch: {net.name}")
    print(f"data: {source}; {steps} steps of batch {BATCH}, {x.dtype}; Adam lr {LR}")
    rows = {n: EPOCH_ROWS[n](c) for n in names}
    for fresh, epoch, n_steps in rows.values():  # warm-up: compile, touch the buffers
        epoch.warm(fresh(), n_steps)
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

    def plain_torch(n, med):  # the targets are SimpleConvNet's: DeepConvNet gets the ratio
        return "" if n == "torch-step" else H.ratio(med, n, "torch-step")

    med = H.report(rounds, "row", [
        ("vs funcnet", lambda n, med: H.ratio(med, n, H.family(n))),
        ("vs torch", plain_torch if deep else vs_target(EPOCH_TARGETS)),
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
    ap.add_argument("--net", choices=("simple", "deep"), default="simple",
                    help="the epoch's net: SimpleConvNet or chapter 8's DeepConvNet")  # fmt: skip
    ap.add_argument("--epoch-steps", type=int, default=None,
                    help="time every epoch row over this many steps, scaled to 600")  # fmt: skip
    ap.add_argument("--shapes", default=",".join(SHAPES), help="Conv shapes: " + ", ".join(SHAPES))
    ap.add_argument("--pools", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the pooling layers (default: on)")  # fmt: skip
    every = [*LAYER_ROWS, *EPOCH_ROWS]
    default = [n for n in every if n not in OPT_IN]
    args, names, threads = H.setup(ap, every, default, argv)
    shapes = [v.strip() for v in args.shapes.split(",") if v.strip()]
    if unknown := [v for v in shapes if v not in SHAPES]:
        ap.error(f"unknown --shapes {unknown}; choose from {', '.join(SHAPES)}")
    if args.np_steps < 1 or (args.epoch_steps is not None and args.epoch_steps < 1):
        ap.error("--np-steps and --epoch-steps must be >= 1")
    if args.net == "deep" and (jnp_rows := [n for n in names if n.startswith("jnp-")]):
        if args.only:
            ap.error(f"--net deep has no {', '.join(jnp_rows)}: the jnp rows are SimpleConvNet's")
        names = [n for n in names if n not in jnp_rows]
    print(
        f"jax default backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"default_matmul_precision {jax.config.jax_default_matmul_precision}"
    )
    if layer_names := [n for n in names if n in LAYER_ROWS]:
        for label in shapes:
            bench_layer(args, label, SHAPES[label], layer_names, threads)
            gc.collect()
        if args.pools:
            bench_pools(args, layer_names, threads)
    if args.epoch and (epoch_names := [n for n in names if n in EPOCH_ROWS]):
        bench_epoch(args, epoch_names, threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
