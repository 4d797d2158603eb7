"""One SGD step of a dense net: funcnet against the same net written by hand, in NumPy,
in ``jax.grad`` and in PyTorch, at sizes from Python-bound to BLAS-bound.

    .venv/bin/python benchmarks/dense.py [--repeats 7] [--only funcnet-np,minimal-np]
        [--nets 1000x1000,deep] [--no-torch]

Nets (``--nets`` names): ``HxB`` is 784-H-10 (Dense, Relu, Dense) at batch B; ``small`` is
784-50-10 at batch 32, where Python overhead dominates; ``deep`` is 784-[512 x 4]-10 at
batch 256, each hidden block Dense, BatchNorm (train mode, running statistics updated),
then Sigmoid, Tanh, Sigmoid, Tanh.  Softmax cross-entropy on integer labels, SGD lr 0.1,
float32, fixed random x, t and weights; every row computes the loss and every gradient
but the first layer's dx.  Rows (``--only`` names):

funcnet-np    ``train.make_step`` eagerly on NumPy arrays: new parameter arrays each step.
minimal-np    the same net written inline in NumPy: in-place updates, temporaries reused,
              no checks; the same FLOPs.  The target for funcnet-np: <= 1.15x.
torch         PyTorch eager, nn.Sequential + optim.SGD, as many threads as NumPy's BLAS.
funcnet-jit   ``train.make_step`` under ``jax.jit`` on JAX arrays (params not donated: the
              CPU backend cannot reuse them).
jax.grad-jit  the same net in ``jax.numpy``, ``jax.value_and_grad`` + plain SGD, jitted.
              The target for funcnet-jit: <= 1.05x.

A timed run is ``calls`` steps (about 0.2 s, from a warm-up), each from the state the last
one left; the table gives the median ms per step over ``--repeats`` round-robin runs (each
ratio's two rows with each other, PyTorch alone: ``groups``), and the two ratios with
ok/MISS.  ``loss`` checks that the rows compute the
same thing: the first step's loss of each (equal to about 6 digits).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _harness, also under -m
import _harness as H
import jax
import jax.numpy as jnp

import funcnet as fn  # the checkout's: _harness put the repository root first on sys.path
from funcnet import optim, train

LR, SEED, RUN_S, EPS, MOM = 0.1, 0, 0.2, 1e-5, 0.9
NETS = {  # name: (hidden widths, activations, batch)
    "100x100": ([100], ["relu"], 100),
    "100x1000": ([100], ["relu"], 1000),
    "1000x100": ([1000], ["relu"], 100),
    "1000x1000": ([1000], ["relu"], 1000),
    "4096x256": ([4096], ["relu"], 256),
    "small": ([50], ["relu"], 32),
    "deep": ([512] * 4, ["sigmoid", "tanh"] * 2, 256),
}
TARGETS = {"funcnet-np": ("minimal-np", 1.15), "funcnet-jit": ("jax.grad-jit", 1.05)}
ACTS = {"relu": fn.Relu, "sigmoid": fn.Sigmoid, "tanh": fn.Tanh}


def funcnet_net(hidden, acts):
    layers = []
    for width, act in zip(hidden, acts, strict=True):
        layers.append(fn.Dense(width))
        if act != "relu":  # the deep net: Dense, BatchNorm, activation
            layers.append(fn.BatchNorm(MOM, EPS))
        layers.append(ACTS[act]())
    return fn.pipeline(*layers, fn.Dense(10))


def spec(params):
    """The net as a flat list of (kind, arrays) from funcnet's params, for the other rows."""
    out = []
    for p in params:
        if "W" in p:
            out.append(("dense", [p["W"], p["b"]]))
        elif "gamma" in p:
            out.append(("bn", [p["gamma"], p["beta"], p["state"]["mean"], p["state"]["var"]]))
        else:
            out.append(("act", []))
    return out


# ----------------------------------------------------------------------- minimal NumPy


def minimal_step(kinds):
    def step(arrays, x, t):
        acts, h = [], x
        for (kind, act), a in zip(kinds, arrays, strict=True):
            if kind == "dense":
                z = h @ a[0]
                z += a[1]
                acts.append(h)
            elif kind == "bn":
                mu = h.mean(axis=0)
                z = h - mu
                var = np.mean(z * z, axis=0)
                std = np.sqrt(var + EPS)
                z /= std
                acts.append((z, std))
                z = z * a[0]
                z += a[1]
                a[2] *= MOM
                a[2] += (1 - MOM) * mu
                a[3] *= MOM
                a[3] += (1 - MOM) * var
            elif act == "relu":
                z = np.maximum(h, 0, out=h)
                acts.append(z)
            elif act == "sigmoid":
                z = np.exp(-h, out=h)  # the inputs here are moderate: no overflow guard
                z += 1
                np.reciprocal(z, out=z)
                acts.append(z)
            else:
                z = np.tanh(h, out=h)
                acts.append(z)
            h = z
        n = len(t)
        s = h - h.max(axis=1, keepdims=True)
        e = np.exp(s)
        total = e.sum(axis=1, keepdims=True)
        loss = np.log(total[:, 0]).sum() / n - s[np.arange(n), t].sum() / n
        d = e / total
        d[np.arange(n), t] -= 1
        d /= n
        for i in reversed(range(len(kinds))):
            (kind, act), a, c = kinds[i], arrays[i], acts[i]
            if kind == "dense":
                dW = c.T @ d
                db = d.sum(axis=0)
                if i:
                    d = d @ a[0].T
                dW *= LR
                a[0] -= dW
                db *= LR
                a[1] -= db
            elif kind == "bn":
                xn, std = c
                dgamma = (d * xn).sum(axis=0)
                dbeta = d.sum(axis=0)
                d *= a[0]
                mean_gx = (d * xn).mean(axis=0)
                d -= d.mean(axis=0)
                xn *= mean_gx
                d -= xn
                d /= std
                a[0] -= LR * dgamma
                a[1] -= LR * dbeta
            elif act == "relu":
                d *= c > 0
            elif act == "sigmoid":
                d *= c * (1 - c)
            else:
                d *= 1 - c * c
        return arrays, loss

    return step


# ----------------------------------------------------------------------- jax.grad


def jax_loss(kinds, arrays, x, t):
    h, stats = x, []
    for (kind, act), a in zip(kinds, arrays, strict=True):
        if kind == "dense":
            h = h @ a[0] + a[1]
        elif kind == "bn":
            mu = h.mean(axis=0)
            var = jnp.mean((h - mu) ** 2, axis=0)
            stats.append((mu, var))
            h = (h - mu) / jnp.sqrt(var + EPS) * a[0] + a[1]
        else:
            h = {"relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}[act](h)
    logp = jax.nn.log_softmax(h)
    return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=1)), stats


def jax_step(kinds):
    def step(arrays, x, t):
        trained = [a[:2] for a in arrays]
        full = lambda tr: [w + a[2:] for w, a in zip(tr, arrays, strict=True)]  # noqa: E731
        (loss, stats), g = jax.value_and_grad(
            lambda tr: jax_loss(kinds, full(tr), x, t), has_aux=True
        )(trained)
        new, it = [], iter(stats)
        for (kind, _), a, ga in zip(kinds, arrays, g, strict=True):
            a = [w - LR * gw for w, gw in zip(a[:2], ga, strict=True)] + a[2:]
            if kind == "bn":
                mu, var = next(it)
                a = [*a[:2], MOM * a[2] + (1 - MOM) * mu, MOM * a[3] + (1 - MOM) * var]
            new.append(a)
        return new, loss

    return jax.jit(step)


# ----------------------------------------------------------------------- PyTorch


def torch_step(kinds, arrays, threads):
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.set_num_threads(threads)
    mods = []
    for (kind, act), a in zip(kinds, arrays, strict=True):
        if kind == "dense":
            m = nn.Linear(*a[0].shape)
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(a[0].T.copy()))
                m.bias.copy_(torch.from_numpy(a[1]))
        elif kind == "bn":
            m = nn.BatchNorm1d(len(a[0]), eps=EPS, momentum=1 - MOM)
        else:
            m = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[act]()
        mods.append(m)
    model = nn.Sequential(*mods).train()
    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def step(state, x, t):  # state: unused, the model holds it
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(t))
        loss.backward()
        opt.step()
        return state, loss.detach()

    return step


# ----------------------------------------------------------------------- timing


def rows_for(name, threads, only):
    hidden, acts, batch = NETS[name]
    net = funcnet_net(hidden, acts)
    params0 = net.init(SEED, (-1, 784))[1]
    rng = np.random.default_rng(SEED)
    x = rng.random((batch, 784), dtype=np.float32)
    t = rng.integers(0, 10, batch)
    acts_iter = iter(acts)
    kinds = [(k, next(acts_iter) if k == "act" else None) for k, _ in spec(params0)]
    arrays0 = [a for _, a in spec(params0)]
    opt = optim.sgd(LR)
    f_step = train.make_step(net, fn.softmax_cross_entropy, opt)
    f_state = [params0, opt.init(fn.trainable(params0))]
    copies = [[a.copy() for a in arrs] for arrs in arrays0]
    builders = {  # row: () -> (step(*state, x, t) -> (*state, loss), state, x, t)
        "funcnet-np": lambda: (f_step, f_state, x, t),
        "minimal-np": lambda: (minimal_step(kinds), [copies], x, t),
        "torch": lambda: (torch_step(kinds, arrays0, threads), [None], x, t),
        "funcnet-jit": lambda: (jax.jit(f_step), jax.device_put(f_state), *jax.device_put((x, t))),
        "jax.grad-jit": lambda: (
            jax_step(kinds),
            [jax.device_put(arrays0)],
            *jax.device_put((x, t)),
        ),
    }
    entries, loss = {}, {}
    for row in [r for r in builders if r in only]:
        step, state, xb, tb = builders[row]()
        box = {"state": state}

        def call(step=step, box=box, xb=xb, tb=tb):  # one step from the last one's state
            *box["state"], value = step(*box["state"], xb, tb)
            return value

        first, run = H.calibrate(call, RUN_S)
        loss[row], entries[row] = float(first), (lambda: None, run)
    return entries, loss


def groups(entries: dict) -> list[dict]:
    """The rows timed together: each ratio's two rows round-robin with each other, PyTorch
    (a column, not a target) on its own.  Timed between XLA's or PyTorch's rows, the NumPy
    rows here ran up to 30 % slower and swung more (as in ``benchmarks/conv.py``), and
    PyTorch's up to 2.4x slower between NumPy's."""
    order = [("funcnet-np", "minimal-np"), ("torch",), ("funcnet-jit", "jax.grad-jit")]
    found = [{n: entries[n] for n in names if n in entries} for names in order]
    return [g for g in found if g]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--nets", default=",".join(NETS), help="comma-separated: " + ", ".join(NETS))
    rows = ["funcnet-np", "minimal-np", "torch", "funcnet-jit", "jax.grad-jit"]
    args, names, threads = H.setup(ap, rows, rows, argv)
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    if unknown := [n for n in nets if n not in NETS]:
        ap.error(f"unknown --nets name(s) {unknown}; choose from {', '.join(NETS)}")
    table, misses = [], 0
    for name in nets:
        entries, loss = rows_for(name, threads, names)
        med, bg, probes = {}, 0.0, []
        for group in groups(entries):
            rounds = H.round_robin(group, args.repeats or 7, f"rows of {name}")
            med |= {n: statistics.median(v) for n, v in rounds.times.items()}
            bg = max(bg, *(statistics.median(v) for v in rounds.foreign.values()))
            probes += [p for v in rounds.slow.values() for p in v]
            H.print_load(rounds, threads, "step")
        cells = [name, *(f"{1e3 * med[r]:.3f}" if r in med else "-" for r in rows)]
        for row, (ref, target) in TARGETS.items():
            if row in med and ref in med:
                r = med[row] / med[ref]
                misses += r > target
                cells.append(f"{r:.2f} {'ok' if r <= target else 'MISS'} (<={target:g})")
            else:
                cells.append("-")
        spread = max(loss.values()) - min(loss.values()) if loss else 0.0
        cells += [f"{next(iter(loss.values()), 0.0):.5f} ±{spread:.0e}", f"{bg:.2f}"]
        cells.append(H.slow_cell(probes))
        table.append(cells)
    head = ["net", *(f"{r} ms" for r in rows), "np ratio", "jit ratio", "loss", "bg cores"]
    print("\n" + H.table([[*head, "cpu slow"], *table]))
    print(f"\n{misses} MISS" if misses else "\nall ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
