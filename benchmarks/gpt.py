"""One training step of nanoGPT's CPU recipe model (4 layers, 4 heads, width 128, context
64, batch 12, vocabulary 65): funcnet's hand-written backward against jax.grad of the same
model written directly in jax.numpy (tests/gpt_reference.py), the NumPy step beside them.

Rows (each times ``--steps`` steps on the same fixed batches, runs interleaved round-robin;
the table gives the median per step):
  funcnet-jax  jax.jit(train.make_step(gpt, token_cross_entropy, optimizer)): the
               hand-written forward and backward, clipping, AdamW, one XLA program
  jnp-jax      jax.jit of jax.value_and_grad of the jax.numpy model, then the same
               optimizer (funcnet.optim): only the gradient differs from the row above
  funcnet-np   the same step as funcnet-jax, eagerly on NumPy arrays
``vs jnp`` divides by the jnp-jax median of the same run (target: funcnet-jax <= 1.05x).
There is no PyTorch row yet.  Run from the repository root:

    .venv/bin/python benchmarks/gpt.py --repeats 7
"""

from __future__ import annotations

import argparse
import sys

import _harness as h
import jax
import numpy as np

sys.path.insert(0, str(h.REPO / "tests"))

import gpt_reference as ref

from funcnet import gpt, optim, shakespeare, train

ROWS = ["funcnet-jax", "jnp-jax", "funcnet-np"]


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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="steps per timed run (NumPy: 1/4)")
    args, names, threads = h.setup(ap, ROWS, ROWS, argv)
    r = gpt.NANOGPT_CPU
    net = gpt.gpt(65, r.layers, r.heads, r.width, r.context)
    _, params0 = net.init(0, (-1, r.context))
    opt = gpt.optimizer(r)
    data = batches(args.steps, r)
    n_params = sum(a.size for a in jax.tree.leaves(params0))
    n_np = max(1, args.steps // 4)
    print(f"model: {net.name}, {n_params:,} params, batch {r.batch}")
    print(f"steps per timed run: {args.steps} (NumPy: {n_np})")

    fun_step = jax.jit(train.make_step(net, gpt.token_cross_entropy, opt))

    def ref_step(flat, state, x, t):
        value, grads = jax.value_and_grad(ref.loss)(flat, x, t, r.heads)
        updates, state = opt.update(grads, state, flat)
        return optim.apply_updates(flat, updates), state, value

    ref_step = jax.jit(ref_step)
    np_step = train.make_step(net, gpt.token_cross_entropy, opt)

    def loop(step, n):
        def run(state):
            p, s = state
            for x, t in data[:n]:
                p, s, loss = step(p, s, x, t)
            jax.block_until_ready(loss)

        return run

    entries = {
        "funcnet-jax": (h.fresh_state(params0, opt.init), loop(fun_step, args.steps)),
        "jnp-jax": (h.fresh_state(ref.flat(params0), opt.init), loop(ref_step, args.steps)),
        "funcnet-np": (
            h.fresh_state(params0, opt.init, on_jax=False),
            loop(np_step, n_np),
        ),
    }
    entries = {n: entries[n] for n in names}
    for prepare, run in entries.values():  # compile, and warm the caches
        run(prepare())
    rounds = h.round_robin(entries, args.repeats or 5)
    per = {n: (args.steps if n != "funcnet-np" else n_np) for n in names}
    rounds.times = {n: [t / per[n] for t in v] for n, v in rounds.times.items()}
    med = h.report(
        rounds, "row", [("vs jnp", lambda n, m: h.ratio(m, n, "jnp-jax"))], 1e3, "ms/step"
    )
    h.print_load(rounds, threads, "step")
    if "funcnet-jax" in med and "jnp-jax" in med:
        ratio = med["funcnet-jax"] / med["jnp-jax"]
        verdict = "ok" if ratio <= 1.05 else "MISS"
        print(f"funcnet-jax / jnp-jax = {ratio:.3f} (target <= 1.05: {verdict})")


if __name__ == "__main__":
    main()
