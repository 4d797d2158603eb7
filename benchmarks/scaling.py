"""Data parallel funcnet: steps/s on 1, 2, 4, ... devices, the all-reduce's share of a step,
and the scaling to expect on many GPUs from the arithmetic of the gradient bytes.

    .venv/bin/python benchmarks/scaling.py [--devices 1,2,4] [--repeats 5] [--data-dir DIR]
    .venv/bin/python benchmarks/scaling.py --expected    # the arithmetic table only (no timing)

One MNIST epoch of 784-100-10 (SGD lr 0.1, 600 steps of global batch 100, float32) as one
jitted ``lax.scan`` program, the batches already on the devices (split along the mesh's
``"data"`` axis when there is a mesh); every timed epoch starts from the same weights.  On a
machine without an accelerator the devices are host devices (``jax_num_cpu_devices``) that
share the CPU's cores: the CPU rows measure what the mesh and its all-reduces add, not a
speed-up.  On a GPU machine ``--devices`` defaults to 1, 2, 4, ... up to all of them.

Rows (``--only`` names; N the device count):

funcnet-1      ``train.make_epoch`` of ``train.make_step`` jitted on one device, as ``fit``.
jax.grad-1     the same net in ``jax.numpy``, ``value_and_grad``, in the same scan.
funcnet-dpN    the funcnet epoch on an N-device mesh (``parallel.jit_replicated``), as
               ``fit(mesh=parallel.data_mesh(N), scan=True)``.
jax.grad-dpN   the ``jax.grad`` epoch with the same shardings.
allreduceN     600 all-reduces (``lax.psum`` in ``shard_map``) of a gradient-sized tree over
               N devices and nothing else: what an epoch's collectives cost alone.

Columns: ``steps/s`` 600 / median; ``eff.`` the scaling efficiency against an ideal N-fold
speed-up of the 1-device row of the same kind, at the same global batch (median of the
1-device row / (N × median)); ``all-reduce`` allreduceN / the row's median, the share of a
step the collective alone takes; ``AR/step`` the all-reduce ops in the compiled step and the
bytes they carry.  ``--expected`` prints the arithmetic table of docs/scale.md instead.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _harness, also under -m
import _harness as H
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

import funcnet as fn  # the checkout's: _harness put the repository root first on sys.path
from funcnet import models, optim, parallel, train

LR, BATCH, HIDDEN, SEED = 0.1, 100, 100, 0


def device_counts(text: str | None) -> list[int]:
    """``"1,2,4"``, or None: 1, 2, 4, ... up to every device (the CPU: 1, 2, 4)."""
    if text:
        return [int(n) for n in text.split(",")]
    total = 4 if jax.default_backend() == "cpu" else len(jax.devices())
    return [2**k for k in range(int(math.log2(total)) + 1)]


def row_names(counts: list[int]) -> list[str]:
    names = ["funcnet-1", "jax.grad-1"]
    for n in counts:
        names += [f"funcnet-dp{n}", f"jax.grad-dp{n}"] + ([f"allreduce{n}"] if n > 1 else [])
    return names


def devices_of(name: str) -> int:
    return int(re.search(r"(\d+)$", name).group(1))


def jnp_step(p, x, t):  # the jax.grad reference: the same net and loss, autodiff's backward
    def loss(p):
        h = jnp.maximum(x @ p[0]["W"] + p[0]["b"], 0)
        logp = jax.nn.log_softmax(h @ p[2]["W"] + p[2]["b"])
        return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=1))

    value, g = jax.value_and_grad(loss)(p)
    return jax.tree.map(lambda a, d: a - LR * d, p, g), value


def epochs(net):
    """The two epochs (params, xs, ts) -> (params, losses), and funcnet's step and opt."""
    opt = optim.sgd(LR)
    step = train.make_step(net, fn.softmax_cross_entropy, opt)

    def funcnet(p, xs, ts):
        p, _, losses = train.make_epoch(step)(p, opt.init(fn.trainable(p)), xs, ts)
        return p, losses

    def autodiff(p, xs, ts):
        return jax.lax.scan(lambda p, b: jnp_step(p, *b), p, (xs, ts))

    return {"funcnet": funcnet, "jax.grad": autodiff}, step, opt


def build(c, names):
    """name -> (fresh() -> state [untimed], run(state) [timed]); and name -> (all-reduce
    ops, bytes) of the compiled step."""
    rows, hlo = {}, {}
    kinds, step, opt = epochs(c.net)
    xs, ts = c.x[c.idx], c.t[c.idx].astype(np.int32)
    for name in names:
        n = devices_of(name)
        if name.startswith("allreduce"):
            rows[name] = allreduce_row(c.params0, parallel.data_mesh(n), len(c.idx))
            continue
        epoch = kinds[name.split("-")[0]]
        if "-dp" not in name:
            prog, data = jax.jit(epoch), jax.device_put((xs, ts))

            def fresh():
                return jax.block_until_ready(jax.device_put(c.params0))

        else:
            mesh = parallel.data_mesh(n)
            rows_here = parallel.local_rows(mesh, BATCH)
            prog = parallel.jit_replicated(epoch, mesh)
            data = tuple(parallel.place(a[:, rows_here], mesh, BATCH, 1) for a in (xs, ts))

            def fresh(mesh=mesh):
                return jax.block_until_ready(parallel.replicate(c.params0, mesh))

            if name.startswith("funcnet"):
                p0 = fresh()
                one = parallel.jit_replicated(step, mesh).lower(
                    p0, opt.init(p0), *(a[0] for a in data)
                )
                reduced = parallel.all_reduces(one.compile().as_text())
                hlo[name] = reduced.ops, reduced.bytes
        compiled = prog.lower(fresh(), *data).compile()
        rows[name] = (fresh, lambda p, f=compiled, d=data: jax.block_until_ready(f(p, *d)))
    return rows, hlo


def allreduce_row(params0, mesh, steps: int):
    """``steps`` all-reduces of a tree shaped like the gradients over ``mesh``, one program."""
    grads = jax.tree.map(np.ones_like, fn.trainable(params0))
    n = mesh.size

    @jax.jit
    @jax.shard_map(mesh=mesh, in_specs=P(), out_specs=P())
    def reduce_many(g):
        def body(g, _):
            return jax.tree.map(lambda a: jax.lax.psum(a, parallel.AXIS) / n, g), None

        return jax.lax.scan(body, g, None, length=steps)[0]

    def fresh():
        return jax.block_until_ready(parallel.replicate(grads, mesh))

    compiled = reduce_many.lower(fresh()).compile()
    return fresh, lambda g: jax.block_until_ready(compiled(g))


# --------------------------------------------------------------------------- the arithmetic

PER_GPU_BATCH = 128  # --per-gpu-batch
GPU_FLOPS = 30e12  # sustained float32 (TF32 matmuls) of an H100-class GPU on these shapes
STEP_FLOOR = 30e-6  # s: a step's kernel launches and small ops, whatever its size
NVLINK = (300e9, 5e-6)  # in one node (N <= 8): all-reduce bus bandwidth B/s, latency per hop
NETWORK = (40e9, 10e-6)  # across nodes: one 400 Gb/s NIC per GPU, latency per hop
GPUS = (1, 8, 64, 512)


def allreduce_seconds(nbytes: float, n: int) -> float:
    """Ring all-reduce: every GPU sends and receives 2(N−1)/N of the bytes, at the slowest
    link's bandwidth; plus 2·log2(N) hops of latency (the tree NCCL uses for small ones)."""
    if n == 1:
        return 0.0
    bandwidth, hop = NVLINK if n <= 8 else NETWORK
    return 2 * (n - 1) / n * nbytes / bandwidth + 2 * math.log2(n) * hop


def expected_table(per_gpu: int = PER_GPU_BATCH) -> str:
    nets = {
        "MLP 784-100-10": (models.two_layer_net(100), (-1, 784)),
        "SimpleConvNet": (models.simple_convnet(), (-1, 1, 28, 28)),
        "wider MLP 784-4096-4096-10": (models.multilayer_net((4096, 4096)), (-1, 784)),
    }
    rows = [["net", "params", "grad MB", "GFLOP/step", "GPUs", "compute µs", "all-reduce µs",
             "efficiency", "samples/s"]]  # fmt: skip
    for label, (net, shape) in nets.items():
        _, params = net.init(0, shape)
        size = sum(a.size for a in jax.tree_util.tree_leaves(fn.trainable(params)))
        flops = step_flops(net, params, shape, per_gpu)
        compute = STEP_FLOOR + flops / GPU_FLOPS
        for n in GPUS:
            comm = allreduce_seconds(4 * size, n)
            step = compute + comm  # no overlap: one all-reduce after the whole backward
            rows.append([label, f"{size:,}", f"{4 * size / 1e6:.2f}", f"{flops / 1e9:.3f}",
                         str(n), f"{1e6 * compute:.0f}", f"{1e6 * comm:.0f}",
                         f"{compute / step:.0%}", f"{n * per_gpu / step:,.0f}"])  # fmt: skip
    return H.table(rows)


def step_flops(net, params, shape, batch: int) -> float:
    """XLA's count of the floating-point operations of one funcnet step at ``batch``
    (compiled for the CPU: the same HLO operations a GPU would run)."""
    opt = optim.sgd(LR)
    step = jax.jit(train.make_step(net, fn.softmax_cross_entropy, opt))
    x = np.zeros((batch, *shape[1:]), np.float32)
    p = jax.device_put(params)
    cost = step.lower(p, opt.init(fn.trainable(p)), x, np.zeros(batch, np.int32))
    return float(cost.compile().cost_analysis()["flops"])


def print_expected(per_gpu: int) -> None:
    print(
        f"Expected scaling, per-GPU batch {per_gpu} (global batch {per_gpu}·N), "
        f"float32 gradients all-reduced once per step, no overlap with the backward.\n"
        f"compute = {1e6 * STEP_FLOOR:.0f} µs + FLOP / {GPU_FLOPS / 1e12:.0f} TFLOP/s; "
        f"all-reduce = 2(N−1)/N · bytes / bandwidth + 2·log2(N) · latency; "
        f"N ≤ 8: {NVLINK[0] / 1e9:.0f} GB/s, {1e6 * NVLINK[1]:.0f} µs (NVLink); "
        f"N > 8: {NETWORK[0] / 1e9:.0f} GB/s, {1e6 * NETWORK[1]:.0f} µs (400 Gb/s per GPU)."
    )
    print(expected_table(per_gpu))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--devices", default=None, help="comma-separated device counts, e.g. 1,2,4")
    ap.add_argument("--expected", action="store_true", help="print the arithmetic table only")
    ap.add_argument("--per-gpu-batch", type=int, default=PER_GPU_BATCH, help="for --expected")
    first, _ = ap.parse_known_args(argv)
    if first.expected:
        print_expected(first.per_gpu_batch)
        return 0
    # Host devices for a CPU-only machine (an accelerator, where there is one, is the default
    # backend and keeps its own count); JAX must not have started yet.
    parallel.use_cpu_devices(max(device_counts(first.devices)) if first.devices else 4)
    counts = device_counts(first.devices)
    names_all = row_names(counts)
    args, names, threads = H.setup(ap, names_all, names_all, argv)
    x, t, idx, source = H.load_data(args.data_dir, BATCH, SEED)
    net = models.two_layer_net(HIDDEN)
    c = argparse.Namespace(x=x, t=t, idx=idx, net=net, params0=net.init(SEED, (-1, 784))[1])
    print(f"data: {source}; {len(idx)} steps of global batch {BATCH}, {x.dtype}")
    print(f"device counts: {counts} ({jax.default_backend()}); compiling ...", flush=True)
    rows, hlo = build(c, names)
    for fresh, run in rows.values():  # warm-up
        run(fresh())
    rounds = H.round_robin(rows, args.repeats or 5, "rows")
    steps = len(idx)

    def eff(n, med):
        base = n.split("-")[0] + "-1"
        if n.startswith("allreduce") or base not in med:
            return ""
        return f"{med[base] / (devices_of(n) * med[n]):.0%}"

    def share(n, med):
        ar = f"allreduce{devices_of(n)}"
        return f"{med[ar] / med[n]:.0%}" if ar in med and not n.startswith("allreduce") else ""

    def reduced(n, med):
        return f"{hlo[n][0]} / {hlo[n][1] / 1e3:.0f} kB" if n in hlo else ""

    H.report(rounds, "row", [
        ("steps/s", lambda n, med: f"{steps / med[n]:,.0f}"),
        ("eff.", eff), ("all-reduce", share), ("AR/step", reduced),
    ])  # fmt: skip
    grads = sum(a.size for a in jax.tree_util.tree_leaves(fn.trainable(c.params0)))
    print(f"\ngradients: {grads:,} float32 = {4 * grads / 1e3:.0f} kB all-reduced per step")
    print()
    H.print_load(rounds, threads, "epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
