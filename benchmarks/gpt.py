"""One training step of nanoGPT's CPU recipe model (4 layers, 4 heads, width 128, context
64, batch 12, vocabulary 65): funcnet's hand-written backward against jax.grad of the same
model written directly in jax.numpy (tests/gpt_reference.py) and against the same model in
eager PyTorch (benchmarks/_torch_gpt.py, nanoGPT's model.py and train.py step), the NumPy
step beside them.

Rows (each times ``--steps`` steps on the same fixed batches, runs interleaved round-robin;
the table gives the median per step):
  funcnet-jax  jax.jit(train.make_step(gpt, token_cross_entropy, optimizer)): the
               hand-written forward and backward, clipping, AdamW, one XLA program
  jnp-jax      jax.jit of jax.value_and_grad of the jax.numpy model, then the same
               optimizer (funcnet.optim): only the gradient differs from the row above
  torch        PyTorch eager, torch.set_num_threads(the BLAS threads the others get):
               forward, backward, clip_grad_norm_(1.0), torch.optim.AdamW with nanoGPT's
               decay groups and the lr of the schedule at that step
  funcnet-np   the same step as funcnet-jax, eagerly on NumPy arrays
``vs jnp`` and ``vs torch`` divide by the jnp-jax and torch medians of the same run (targets:
funcnet-jax <= 1.05x jnp-jax and <= 0.5x torch).  Before timing, the script checks that
every row computes the same loss as funcnet-jax from the same params on the same batch (to
1e-5), and after the warm-up runs (``--steps`` training steps each) the same last loss.  The
torch row is skipped when PyTorch does not import (or with ``--no-torch``).

``--runs``: instead of the step table, the whole recipe end to end (``--iters``, default the
recipe's 2,000 iterations, and the validation loss at the end), one row after the other:
funcnet's ``gpt.train_gpt`` jitted (compile included) and ``_torch_gpt.train``, nanoGPT's
``train.py`` loop in eager PyTorch on the same windows, schedule and initial params.
``--cpu-time`` times by this process's CPU time (for runs with one thread per library).
On a loaded machine PyTorch's OpenMP threads spin and wait at every barrier: the torch
row's time then depends on ``OMP_WAIT_POLICY`` (printed; PASSIVE is PyTorch's best case
there, see NOTES.md).  Run from the repository root:

    .venv/bin/python benchmarks/gpt.py --repeats 7
    .venv/bin/python benchmarks/gpt.py --runs
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import _harness as h
import jax
import numpy as np

sys.path.insert(0, str(h.REPO / "tests"))

import _torch_gpt as tg  # imports PyTorch only when called
import gpt_reference as ref

from funcnet import gpt, optim, shakespeare, train

ROWS = ["funcnet-jax", "jnp-jax", "torch", "funcnet-np"]
RUN_ROWS = ["funcnet-jax", "torch"]  # --runs
SAME = 1e-5  # the largest difference in loss (float32) that counts as the same
SAME_AFTER = 1e-4  # the same, after the warm-up's training steps


def batches(steps: int, r: gpt.Recipe, seed: int = 0):
    """``steps`` batches of random windows of tiny Shakespeare, or random ids when the corpus
    is absent (the time does not depend on the values)."""
    rng = np.random.default_rng(seed)
    path = shakespeare.find()
    if path is None:
        print("notice: tiny Shakespeare not found; random ids of the same shapes")
        data = rng.integers(0, 65, 100_000).astype(np.int32)
    else:
        data = shakespeare.load(path).train
    return [
        gpt.windows(data, gpt.random_starts(len(data), r.context, r.batch, rng), r.context)
        for _ in range(steps)
    ]


def torch_entry(r, params0, data, threads: int, last: dict, clock):
    """(prepare, run) of the torch row: a fresh model from ``params0`` and a fresh AdamW,
    then the steps over ``data`` (ids as int64 tensors, made once), the lr from the schedule
    at each step."""
    import torch

    torch.set_num_threads(threads)
    tdata = [(tg.ids(x), tg.ids(t)) for x, t in data]

    def prepare():
        net = tg.model(65, r)
        tg.load_funcnet(net, params0, r)
        return net, tg.optimizer(net, r)

    def run(state):
        net, opt = state
        start = clock()
        for i, (x, t) in enumerate(tdata):
            loss = tg.step(net, opt, x, t, tg.lr_at(i, r), r.clip)
        last["torch"] = float(loss)
        return clock() - start

    return prepare, run


def first_losses(net, r, params0, x, t, names) -> dict:
    """Each row's loss at ``params0`` on the batch (x, t), without a step."""
    out = {}
    fun = jax.jit(lambda p, x, t: gpt.token_cross_entropy.forward(net.forward(p, x)[0], t)[0])
    if "funcnet-jax" in names or "jnp-jax" in names:
        out["funcnet-jax"] = float(fun(params0, x, t))
    if "jnp-jax" in names:
        out["jnp-jax"] = float(
            jax.jit(ref.loss, static_argnums=(3, 4))(
                ref.flat(params0, r.tie), x, t, r.heads, r.gelu
            )
        )
    if "funcnet-np" in names:
        out["funcnet-np"] = float(gpt.token_cross_entropy.forward(net.forward(params0, x)[0], t)[0])
    if "torch" in names:
        import torch

        tnet = tg.model(65, r)
        tg.load_funcnet(tnet, params0, r)
        with torch.no_grad():
            out["torch"] = float(tg.loss_fn(tnet, tg.ids(x), tg.ids(t)))
    return out


def check_same(losses: dict, tol: float, what: str) -> None:
    """Print the rows' losses and their largest difference to the first; raise if over
    ``tol``: the rows would not be timing the same computation."""
    ref_name, ref_value = next(iter(losses.items()))
    diff = {n: abs(v - ref_value) for n, v in losses.items()}
    cells = ", ".join(f"{n} {v:.7f}" for n, v in losses.items())
    print(f"{what}: {cells}; largest difference to {ref_name} {max(diff.values()):.2e}")
    if bad := [n for n, d in diff.items() if d > tol]:
        raise SystemExit(f"error: {', '.join(bad)} differ from {ref_name} by more than {tol}")


def target(med: dict, row: str, peer: str, goal: float) -> None:
    if row in med and peer in med:
        ratio = med[row] / med[peer]
        verdict = "ok" if ratio <= goal else "MISS"
        print(f"{row} / {peer} = {ratio:.3f} (target <= {goal}: {verdict})")


def steps_table(args, names, threads) -> None:
    r = gpt.NANOGPT_CPU
    net, params0 = tg.funcnet_start(65, r, 0)
    opt = gpt.optimizer(r)
    data = batches(args.steps, r)
    n_params = sum(a.size for a in jax.tree.leaves(params0))
    n_np = max(1, args.steps // 4)
    print(f"model: {net.name}, {n_params:,} params, batch {r.batch}")
    print(f"steps per timed run: {args.steps} (NumPy: {n_np})")
    check_same(first_losses(net, r, params0, *data[0], names), SAME, "loss at the start")

    fun_step = jax.jit(train.make_step(net, gpt.token_cross_entropy, opt))

    def ref_step(flat, state, x, t):
        value, grads = jax.value_and_grad(ref.loss)(flat, x, t, r.heads, r.gelu)
        updates, state = opt.update(grads, state, flat)
        return optim.apply_updates(flat, updates), state, value

    ref_step = jax.jit(ref_step)
    np_step = train.make_step(net, gpt.token_cross_entropy, opt)
    last = {}
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"clock: {'CPU time of this process' if args.cpu_time else 'wall time'}")

    def loop(name, step, n):
        def run(state):
            p, s = state
            start = clock()
            for x, t in data[:n]:
                p, s, loss = step(p, s, x, t)
            last[name] = float(loss)
            return clock() - start

        return run

    build = {
        "funcnet-jax": lambda: (
            h.fresh_state(params0, opt.init),
            loop("funcnet-jax", fun_step, args.steps),
        ),
        "jnp-jax": lambda: (
            h.fresh_state(ref.flat(params0, r.tie), opt.init),
            loop("jnp-jax", ref_step, args.steps),
        ),
        "torch": lambda: torch_entry(r, params0, data, threads, last, clock),
        "funcnet-np": lambda: (
            h.fresh_state(params0, opt.init, on_jax=False),
            loop("funcnet-np", np_step, n_np),
        ),
    }
    entries = {n: build[n]() for n in names}
    for prepare, run in entries.values():  # compile, and warm the caches
        run(prepare())
    after = {n: v for n, v in last.items() if n != "funcnet-np"}
    if len(after) > 1:
        check_same(after, SAME_AFTER, f"loss at the last of the {args.steps} warm-up steps")
    rounds = h.round_robin(entries, args.repeats or 5)
    per = {n: (args.steps if n != "funcnet-np" else n_np) for n in names}
    rounds.times = {n: [t / per[n] for t in v] for n, v in rounds.times.items()}
    extra = [
        ("vs jnp", lambda n, m: h.ratio(m, n, "jnp-jax")),
        ("vs torch", lambda n, m: h.ratio(m, n, "torch")),
    ]
    med = h.report(rounds, "row", extra, 1e3, "ms/step")
    h.print_load(rounds, threads, "step")
    target(med, "funcnet-jax", "jnp-jax", 1.05)
    target(med, "funcnet-jax", "torch", 0.5)


def recipe_runs(args, names, threads) -> None:
    """The whole recipe, once per row, one after the other; each row metered."""
    r = gpt.NANOGPT_CPU._replace(iters=args.iters) if args.iters else gpt.NANOGPT_CPU
    corpus = shakespeare.load()
    print(f"recipe: {r}")
    print(f"rows, one after the other: {', '.join(names)}; seed 0, eval at the end only")
    rows = [["row", "wall s", "val loss", "mean train loss", "bg cores", "loadavg after"]]
    wall = {}
    for n in names:
        print(f"running {n} ...", flush=True)
        meter = h.CpuMeter().start()
        if n == "funcnet-jax":
            result = gpt.train_gpt(corpus, r, seed=0)
            val, losses = result.history[-1][2], result.losses
        else:
            val, losses, _ = tg.train(corpus, r, seed=0, threads=threads)
        meter.stop()
        wall[n] = meter.wall
        cells = [f"{meter.wall:.1f}", f"{val:.4f}", f"{np.mean(losses):.4f}"]
        rows.append([n, *cells, f"{meter.foreign:.2f}", h.loadavg()])
        print(f"  {n}: {meter.wall:.1f} s, val loss {val:.4f}, bg cores {meter.foreign:.2f}")
    print("\n" + h.table(rows))
    if len(wall) == 2:
        ratio = wall["funcnet-jax"] / wall["torch"]
        verdict = "ok" if ratio < 1 else "MISS"
        print(f"wall funcnet-jax / torch = {ratio:.3f} (target < 1: {verdict})")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="steps per timed run (NumPy: 1/4)")
    ap.add_argument(
        "--cpu-time", action="store_true", help="time the steps by this process's CPU time"
    )
    ap.add_argument("--runs", action="store_true", help="the whole recipe, end to end")
    ap.add_argument("--iters", type=int, default=None, help="--runs: iterations (2000)")
    argv = sys.argv[1:] if argv is None else argv
    runs = "--runs" in argv
    rows = RUN_ROWS if runs else ROWS
    args, names, threads = h.setup(ap, rows, rows, argv)
    # libgomp (PyTorch's OpenMP) spins at its barriers unless told otherwise: on a loaded
    # machine that decides the torch row's time, so say how it was set.
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset: spin, then sleep)')}")
    (recipe_runs if runs else steps_table)(args, names, threads)


if __name__ == "__main__":
    main()
