"""Train the second book's seq2seq models on its toy sets (chapter 7: addition, chapter 8:
dates) with its settings: Adam 0.001, gradient norm clipped at 5.0, batch 128.

Prints per epoch the mean loss and the exact-match accuracy on the 5,000 held-out
questions, a few test questions with the model's answer marked right or wrong (as the
book's ``eval_seq2seq``), and a last line ``test accuracy ...``.

    python examples/seq2seq_addition.py --model peeky --reverse            # 25 epochs
    python examples/seq2seq_addition.py --task date --model attention --epochs 10
    python examples/seq2seq_addition.py --epochs 2 --train-rows 5000 --backend numpy

The data sets are found in ``$FUNCNET_SEQ2SEQ_DIR`` or ``../shared/seq2seq``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from funcnet import models, optim, seq2seq, text, train
from funcnet.losses import time_softmax_cross_entropy


def build(kind: str, data, question_len: int):
    if kind == "attention":
        return models.attention_seq2seq(data.vocab_size, question_len=question_len)
    return models.seq2seq(data.vocab_size, peeky=kind == "peeky", question_len=question_len)


def run(
    task="addition",
    kind="peeky",
    reverse=True,
    epochs=25,
    batch=128,
    seed=0,
    backend="jax",
    train_rows=None,
    report=print,
):
    """Train one model; -> (params, the per-epoch test accuracies, the model, the data)."""
    data = text.load_seq2seq(task)
    x, t = text.teacher_forcing(data.x_train, data.t_train, reverse=reverse)
    x_test, t_test = text.teacher_forcing(data.x_test, data.t_test, reverse=reverse)
    x, t = x[:train_rows], t[:train_rows]
    model = build(kind, data, data.x_train.shape[1])
    _, params = model.init(seed, (-1, x.shape[1]))
    opt = optim.chain(optim.clip_by_global_norm(5.0), optim.adam(0.001))
    step = train.make_step(model, time_softmax_cross_entropy, opt)
    if backend == "jax":
        import jax

        params, step = jax.device_put(params), jax.jit(step)
    state = opt.init(params)
    rng, accs = np.random.default_rng(seed), []
    for epoch in range(1, epochs + 1):
        start, perm, losses = time.perf_counter(), rng.permutation(len(x)), []
        for i in range(len(x) // batch):
            idx = perm[i * batch : (i + 1) * batch]
            params, state, loss = step(params, state, x[idx], t[idx])
            losses.append(loss)
        took = time.perf_counter() - start
        accs.append(seq2seq.exact_match(model, params, x_test, t_test))
        report(
            f"epoch {epoch:>2}  loss {float(np.mean(losses)):.4f}  test exact match "
            f"{100 * accs[-1]:.2f}%  ({took:.1f} s training)"
        )
    return params, accs, model, data


def show(model, params, data, reverse: bool, k: int = 5) -> None:
    """A few test questions, each with the model's answer marked right or wrong."""
    q, a = data.x_test[:k], data.t_test[:k]
    x, t = text.teacher_forcing(q, a, reverse=reverse)
    guess = np.asarray(model.generate(params, x[:, : q.shape[1]], x[:, q.shape[1]], t.shape[1]))
    for qi, ti, gi in zip(q, t, guess, strict=True):
        ok = "right" if np.array_equal(ti, gi) else "WRONG"
        print(f"Q {text.decode(qi, data.id_to_char)}  T {text.decode(ti, data.id_to_char)}"
              f"  guess {text.decode(gi, data.id_to_char)}  {ok}")  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=["addition", "date"], default="addition")
    ap.add_argument("--model", choices=["plain", "peeky", "attention"], default="peeky")
    ap.add_argument("--reverse", action="store_true", help="reverse each question")
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", choices=["jax", "numpy"], default="jax")
    ap.add_argument("--train-rows", type=int, default=None, help="train on the first rows")
    args = ap.parse_args(argv)
    params, accs, model, data = run(
        args.task, args.model, args.reverse, args.epochs, seed=args.seed,
        backend=args.backend, train_rows=args.train_rows,
    )  # fmt: skip
    show(model, params, data, args.reverse)
    n = len(data.x_test)
    print(f"test accuracy {100 * accs[-1]:.2f}% on all {n} test questions")


if __name__ == "__main__":
    main()
