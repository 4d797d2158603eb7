"""The LSTM layer's forward + backward through time: funcnet against the book's
``TimeLSTM``, ``jax.grad`` of the same ``lax.scan`` cell and PyTorch's ``nn.LSTM``.

    .venv/bin/python benchmarks/seq.py [--repeats 7] [--only funcnet-np,book-np]
        [--shape 128,29,16,256] [--no-torch]

The shape is the date task's (N 128, T 29, D 16, H 256) unless ``--shape N,T,D,H``; float32,
fixed random x, weights and upstream gradient dhs; every row computes the hidden states
and the gradients of Wx, Wh, b and x.  Rows (``--only`` names):

funcnet-np    ``LSTM(H)``'s forward and backward on NumPy arrays.
book-np       the book's ``TimeLSTM`` (``../shared/dlfs2``, or ``$FUNCNET_DLFS2_DIR``);
              skipped when absent.  The target for funcnet-np: <= 0.7x.
products-np   only the matrix products of a pass, on NumPy (T steps of h·Wh and of dA·Whᵀ,
              ∂L/∂Wh as one product, x·Wx, ∂L/∂Wx, ∂L/∂x): the floor of any NumPy
              LSTM that multiplies as the book does; its ratio is to book-np.
torch         PyTorch eager ``nn.LSTM`` (its gates in i, f, g, o order, two biases), the
              forward and ``backward``, as many threads as NumPy's BLAS; skipped when torch
              is not importable.
funcnet-jit   the layer's forward and hand-written backward in one ``jax.jit`` program.
jax.grad-jit  the same cell written in ``jax.numpy`` in one ``lax.scan``, differentiated by
              ``jax.vjp``, jitted.  The target for funcnet-jit: <= 1.05x.

A timed run is ``calls`` forward+backward passes (about 0.2 s, after a warm-up); the table
gives the median ms per pass over ``--repeats`` round-robin runs and the ratios.  On a
machine other processes load, ``--cpu-time`` with ``OPENBLAS_NUM_THREADS=1`` and
``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"`` times the
work itself (this process's CPU seconds) rather than the waits for a core.
``|dWh|`` checks that the rows compute the same thing (equal to about 5 digits).

``--epoch-steps K`` adds rows that time K training steps of the addition task's peeky model
(the book's settings) per run, in ms per step: ``epoch-book`` (the book's ``PeekySeq2seq``,
``Adam``, ``clip_grads``), ``epoch-np`` and ``epoch-jit`` (``train.make_step`` on NumPy
and jitted); the target for epoch-jit: <= 0.5x epoch-book.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _harness, also under -m
import _harness as H
import jax
import jax.numpy as jnp

import funcnet as fn  # the checkout's: _harness put the repository root first on sys.path

RUN_S, SEED = 0.2, 0
ROWS = ["funcnet-np", "book-np", "products-np", "torch", "funcnet-jit", "jax.grad-jit"]
EPOCH_ROWS = ["epoch-book", "epoch-np", "epoch-jit"]
TARGETS = {
    "funcnet-np": ("book-np", 0.7),
    "products-np": ("book-np", None),
    "funcnet-jit": ("jax.grad-jit", 1.05),
    "epoch-jit": ("epoch-book", 0.5),
}
STEPS_PER_EPOCH = 45000 // 128  # the addition task's training steps at batch 128


def book_dir() -> Path:
    env = os.environ.get("FUNCNET_DLFS2_DIR")
    return Path(env) if env else H.REPO.parent / "shared" / "dlfs2"


def make_data(n, steps, d, h):
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((n, steps, d), dtype=np.float32)
    dhs = rng.standard_normal((n, steps, h), dtype=np.float32)
    p = {
        "Wx": (rng.standard_normal((d, 4 * h)) / np.sqrt(d)).astype(np.float32),
        "Wh": (rng.standard_normal((h, 4 * h)) / np.sqrt(h)).astype(np.float32),
        "b": (rng.standard_normal(4 * h) * 0.1).astype(np.float32),
    }
    return x, dhs, p


def funcnet_pass(layer):
    def run(p, x, dhs):
        _, cache = layer.forward(p, x)
        return layer.backward(cache, dhs)

    return run


def products_pass(p):
    """The matrix products of one LSTM pass alone, on arrays of the pass's shapes."""

    def run(p, x, dhs):
        n, steps, d = x.shape
        Wx, Wh = p["Wx"], p["Wh"]
        h, k = Wh.shape[0], Wh.shape[1]
        hs = np.tanh(dhs).transpose(1, 0, 2).copy()  # time-major stand-ins
        dA = np.resize(dhs, (steps, n, k))
        x2 = x.transpose(1, 0, 2).reshape(-1, d)
        a = x2 @ Wx
        for t in range(steps):
            a[t * n : (t + 1) * n] += hs[t] @ Wh
        dh = [dA[t] @ Wh.T for t in range(steps)]
        dWh = hs[:-1].reshape(-1, h).T @ dA[1:].reshape(-1, k)
        dA2 = dA.reshape(-1, k)
        return {"Wx": x2.T @ dA2, "Wh": dWh, "b": dh[0][0]}, dA2 @ Wx.T

    return run


def book_pass(p):
    folder = str(book_dir())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    from common.time_layers import TimeLSTM

    lstm = TimeLSTM(p["Wx"].copy(), p["Wh"].copy(), p["b"].copy())

    def run(_p, x, dhs):
        lstm.forward(x)
        dx = lstm.backward(dhs)
        return {"Wx": lstm.grads[0], "Wh": lstm.grads[1], "b": lstm.grads[2]}, dx

    return run


def scan_cell(p, x):
    """The same LSTM as jnp code in one lax.scan: what jax.vjp differentiates."""
    h = p["Wh"].shape[0]

    def cell(carry, xt):
        hp, cp = carry
        a = xt @ p["Wx"] + hp @ p["Wh"] + p["b"]
        f, g = jax.nn.sigmoid(a[:, :h]), jnp.tanh(a[:, h : 2 * h])
        i, o = jax.nn.sigmoid(a[:, 2 * h : 3 * h]), jax.nn.sigmoid(a[:, 3 * h :])
        c = f * cp + g * i
        hn = o * jnp.tanh(c)
        return (hn, c), hn

    zeros = jnp.zeros((x.shape[0], h), x.dtype)
    _, hs = jax.lax.scan(cell, (zeros, zeros), jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(hs, 0, 1)


def jax_grad_pass():
    def run(p, x, dhs):
        _, pull = jax.vjp(scan_cell, p, x)
        return pull(dhs)

    return jax.jit(run)


def torch_pass(p, threads):
    import torch

    torch.set_num_threads(threads)
    d, h = p["Wx"].shape[0], p["Wh"].shape[0]
    m = torch.nn.LSTM(d, h, batch_first=True)
    order = np.r_[2 * h : 3 * h, 0:h, h : 2 * h, 3 * h : 4 * h]  # book f,g,i,o -> i,f,g,o
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(p["Wx"][:, order].T.copy()))
        m.weight_hh_l0.copy_(torch.from_numpy(p["Wh"][:, order].T.copy()))
        m.bias_ih_l0.copy_(torch.from_numpy(p["b"][order].copy()))
        m.bias_hh_l0.zero_()

    def run(_p, x, dhs):
        m.zero_grad()
        xt = torch.from_numpy(x).requires_grad_()
        hs, _ = m(xt)
        hs.backward(torch.from_numpy(dhs))
        dWh = m.weight_hh_l0.grad.numpy().T[:, np.argsort(order)]
        return {"Wh": dWh}, xt.grad

    return run


def entries_for(rows, shape, threads, clock=time.perf_counter):
    x, dhs, p = make_data(*shape)
    layer = fn.LSTM(shape[3])
    on_jax = jax.device_put((p, x, dhs))
    builders = {
        "funcnet-np": lambda: (funcnet_pass(layer), (p, x, dhs)),
        "book-np": lambda: (book_pass(p), (p, x, dhs)),
        "products-np": lambda: (products_pass(p), (p, x, dhs)),
        "torch": lambda: (torch_pass(p, threads), (p, x, dhs)),
        "funcnet-jit": lambda: (jax.jit(funcnet_pass(layer)), on_jax),
        "jax.grad-jit": lambda: (jax_grad_pass(), on_jax),
    }
    entries, check = {}, {}
    for row in rows:
        run, args = builders[row]()
        grads = jax.block_until_ready(run(*args))  # compile, first touch
        if row != "products-np":  # stand-in data: its gradients mean nothing
            check[row] = float(np.abs(np.asarray(grads[0]["Wh"])).sum())
        start = time.perf_counter()
        jax.block_until_ready(run(*args))
        calls = max(1, math.ceil(RUN_S / (time.perf_counter() - start)))

        def timed(_, run=run, args=args, calls=calls):
            start = clock()
            for _ in range(calls):
                out = run(*args)
            jax.block_until_ready(out)
            return (clock() - start) / calls

        entries[row] = (lambda: None, timed)
    return entries, check


def epoch_entries(rows, steps: int, clock):
    """Training steps of the addition task's peeky model (vocabulary 13, wordvec 16, hidden
    128, reversed questions, batch 128, Adam 0.001 after clipping at 5.0): the book's
    ``PeekySeq2seq`` with its ``Adam`` and ``clip_grads``, funcnet's ``train.make_step`` on
    NumPy and jitted.  Each timed run is ``steps`` steps on the first training rows."""
    from funcnet import losses, models, optim, text, train

    data = text.load_seq2seq("addition")
    rows_n = 128 * steps
    q, a = data.x_train[:rows_n, ::-1].copy(), data.t_train[:rows_n]
    x, t = text.teacher_forcing(data.x_train[:rows_n], a, reverse=True)
    net = models.seq2seq(13, 16, 128, peeky=True, question_len=7)
    _, params = net.init(SEED, (-1, x.shape[1]))
    opt = optim.chain(optim.clip_by_global_norm(5.0), optim.adam(0.001))
    step = train.make_step(net, losses.time_softmax_cross_entropy, opt)

    def funcnet_run(step, params):
        box = {"p": params, "s": opt.init(params)}

        def run():
            for i in range(steps):
                b = slice(i * 128, (i + 1) * 128)
                box["p"], box["s"], loss = step(box["p"], box["s"], x[b], t[b])
            return jax.block_until_ready(loss)

        return run

    def book_run():
        folder = str(book_dir())
        for p in (folder, folder + "/ch07"):
            if p not in sys.path:
                sys.path.insert(0, p)
        from common.optimizer import Adam
        from common.util import clip_grads
        from peeky_seq2seq import PeekySeq2seq

        model, adam = PeekySeq2seq(13, 16, 128), Adam(0.001)

        def run():
            for i in range(steps):
                b = slice(i * 128, (i + 1) * 128)
                loss = model.forward(q[b], a[b])
                model.backward()
                clip_grads(model.grads, 5.0)
                adam.update(model.params, model.grads)
            return loss

        return run

    builders = {
        "epoch-book": book_run,
        "epoch-np": lambda: funcnet_run(step, params),
        "epoch-jit": lambda: funcnet_run(jax.jit(step), jax.device_put(params)),
    }
    entries = {}
    for row in rows:
        run = builders[row]()
        run()  # compile, first touch

        def timed(_, run=run):
            start = clock()
            run()
            return (clock() - start) / steps

        entries[row] = (lambda: None, timed)
    return entries


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="128,29,16,256", help="N,T,D,H")
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by this process's CPU seconds (all threads), not wall time: on a shared "
        "machine with one BLAS and one XLA thread, the work itself without the waits",
    )
    ap.add_argument(
        "--epoch-steps",
        type=int,
        default=0,
        help="also time this many training steps of the addition task per run (rows "
        + ", ".join(EPOCH_ROWS)
        + "; 0: none)",
    )
    args, rows, threads = H.setup(ap, ROWS + EPOCH_ROWS, ROWS, argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    if "book-np" in rows and not (book_dir() / "common" / "time_layers.py").is_file():
        print(f"book-np: the book's code not found in {book_dir()}, row skipped")
        rows = [r for r in rows if r != "book-np"]
    print(f"LSTM forward + backward, N {shape[0]}, T {shape[1]}, D {shape[2]}, H {shape[3]}")
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"clock: {'CPU time of this process' if args.cpu_time else 'wall time'}")
    layer_rows = [r for r in rows if r not in EPOCH_ROWS]
    entries, check = entries_for(layer_rows, shape, threads, clock)
    if args.epoch_steps:
        epoch_rows = [r for r in EPOCH_ROWS if r in rows or args.only is None]
        entries |= epoch_entries(epoch_rows, args.epoch_steps, clock)
        print(f"epoch rows: ms per training step; an epoch is {STEPS_PER_EPOCH} steps")
    rounds = H.round_robin(entries, args.repeats or 7)

    def vs(n, med):
        ref, target = TARGETS.get(n, (None, None))
        if ref not in med:
            return ""
        r = med[n] / med[ref]
        if target is None:
            return f"{r:.2f}x {ref}"
        return f"{r:.2f}x {ref} ({'ok' if r <= target else 'MISS'} <= {target})"

    extra = [("ratio", vs), ("|dWh|", lambda n, med: f"{check[n]:.6g}" if n in check else "")]
    H.report(rounds, "row", extra, scale=1e3, unit="ms")
    H.print_load(rounds, threads)


if __name__ == "__main__":
    main()
