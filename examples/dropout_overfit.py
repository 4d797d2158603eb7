"""The book's overfit_dropout.py: a 7-layer net overfits 300 images; Dropout narrows the gap.

784-[100×6]-10 (He init; Dense + Relu [+ Dropout] per hidden layer), trained on only the
first 300 MNIST training images with SGD lr 0.01, batch 100, and tested on the 10,000 test
images after every epoch.  The book runs 301 epochs, with dropout ratio 0.2 and without;
so does this by default (``--epochs``).  Both nets start from the same weights and see the
same batches.  The book's result: without dropout the training accuracy reaches 100% while
the test accuracy stays far below; with dropout both rise more slowly and the gap between
them is smaller.  Prints the train/test accuracy curves of both nets and the final gaps.

    python examples/dropout_overfit.py --data-dir ../shared/mnist
    python examples/dropout_overfit.py --data-dir ../shared/mnist --epochs 50 --test-size 1000
    python examples/dropout_overfit.py --data-dir ../shared/mnist --scaling book

``funcnet.Dropout`` is inverted dropout: it divides the kept units by (1 − p) at train time
and is the identity at test time.  The book's Dropout keeps the units unscaled at train time
and multiplies by (1 − p) at test time.  Both are consistent between train and test, but
they are not the same training run: the book's net with weights W computes what the
inverted net computes with 0.8·W after each dropout (p = 0.2), and SGD on it moves those
layers as if the learning rate were 0.64×.  Over six dropout layers its output starts
0.8⁶ ≈ 0.26 times as large, so it learns much more slowly, and its train/test gap stays
small for longer.  ``--scaling book`` uses the book's rule
(``funcnet.Dropout(p, scale_at="eval")``) to reproduce its curves.

The numpy backend on a busy machine: set OPENBLAS_NUM_THREADS=1, or OpenBLAS's threads wait
on each other for most of each step.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import funcnet as fn
from funcnet import models, optim, plot, train
from funcnet.cli import run_script
from funcnet.data import load_mnist


def build_net(
    dropout: float = 0.0, hidden=(100,) * 6, W_init="he_normal", scaling: str = "inverted"
) -> fn.Layer:
    """The book's MultiLayerNetExtend: Dense + Relu [+ Dropout] per hidden size, Dense(10).
    ``scaling``: "inverted" (scale kept units at train time) or "book" (scale at eval)."""
    if scaling not in ("inverted", "book"):
        raise ValueError(f"scaling must be 'inverted' or 'book', got {scaling!r}")
    scale_at = "train" if scaling == "inverted" else "eval"
    return models.multilayer_net(hidden, W_init, dropout=dropout, dropout_scale_at=scale_at)


def run(
    data_dir=None,
    epochs: int = 301,
    dropout: float = 0.2,
    train_size: int = 300,
    test_size: int | None = None,
    batch_size: int = 100,
    lr: float = 0.01,
    backend: str = "jax",
    seed: int = 0,
    hidden=(100,) * 6,
    scaling: str = "inverted",
    data=None,
) -> dict:
    """``{"plain"|"dropout": {"train_acc", "test_acc", "gaps": per-epoch arrays, "gap":
    final train − test accuracy, "seconds"}, "dropout": ratio, "scaling"}``.  ``data``
    (``load_mnist``'s return value) skips loading."""
    (x_train, t_train), (x_test, t_test) = data if data is not None else load_mnist(data_dir)
    train_set = (x_train[:train_size], t_train[:train_size])
    test_set = (x_test[:test_size], t_test[:test_size])
    plain, drop = build_net(0.0, hidden), build_net(dropout, hidden, scaling=scaling)
    _, p_plain = plain.init(seed, (-1, x_train.shape[1]))
    _, p_drop = drop.init(seed, (-1, x_train.shape[1]))
    # The pipelines differ in length, so the same seed would give different weights.
    p_drop = models.with_dense_weights(p_drop, models.dense_weights(p_plain))
    out = {"dropout": dropout, "scaling": scaling}
    for name, net, params in (("plain", plain, p_plain), ("dropout", drop, p_drop)):
        start = time.perf_counter()
        _, _, hist = train.fit(
            net, train.to_backend(params, backend), train_set, test_set,
            optimizer=optim.sgd(lr), epochs=epochs, batch_size=batch_size, seed=seed,
            progress=False,
        )  # fmt: skip
        train_acc, test_acc = np.asarray(hist.train_acc), np.asarray(hist.test_acc)
        out[name] = {
            "train_acc": train_acc,
            "test_acc": test_acc,
            "gaps": train_acc - test_acc,
            "gap": float(train_acc[-1] - test_acc[-1]),
            "seconds": time.perf_counter() - start,
        }
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder with the four MNIST files")
    ap.add_argument("--epochs", type=int, default=301)
    ap.add_argument("--dropout", type=float, default=0.2, help="drop probability")
    ap.add_argument("--train-size", type=int, default=300)
    ap.add_argument("--test-size", type=int, default=None, help="first N test images only")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--backend", choices=["numpy", "jax"], default="jax")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--scaling", choices=["inverted", "book"], default="inverted",
        help="inverted: funcnet.Dropout; book: the book's test-time (1 − p) scaling",
    )  # fmt: skip
    args = ap.parse_args(argv)
    print(
        f"784-[100×6]-10 on the first {args.train_size} training images, SGD lr {args.lr}, "
        f"batch {args.batch}, {args.epochs} epochs, dropout {args.dropout} ({args.scaling}) "
        f"vs none, backend {args.backend}, seed {args.seed}"
    )
    r = run(
        args.data_dir, args.epochs, args.dropout, args.train_size, args.test_size, args.batch,
        args.lr, args.backend, args.seed, scaling=args.scaling,
    )  # fmt: skip
    for name, title in (
        ("plain", "without dropout"),
        ("dropout", f"dropout {args.dropout} ({args.scaling})"),
    ):
        series = {"train": r[name]["train_acc"], "test": r[name]["test_acc"]}
        print(
            plot.lines(
                series,
                f"{title}: accuracy",
                xlabel="epoch",
                ylabel="accuracy",
                height=14,
                ylim=(0.0, 1.0),
            )
        )
    marks = sorted({1, *range(50, args.epochs + 1, 50), args.epochs})
    print("accuracy (%): train, test and the gap train − test (points)")
    print(f"{'epoch':<7}{'no dropout':>24}{'dropout ' + str(args.dropout):>26}")
    p, d = r["plain"], r["dropout"]
    for m in marks:
        cells = "  ".join(
            f"{100 * x['train_acc'][m - 1]:8.1f}{100 * x['test_acc'][m - 1]:8.1f}"
            f"{100 * x['gaps'][m - 1]:8.1f}"
            for x in (p, d)
        )
        print(f"{m:<7}{cells}")
    for name in ("plain", "dropout"):
        x = r[name]
        print(
            f"{name:<8} final train {100 * x['train_acc'][-1]:5.1f}%  test "
            f"{100 * x['test_acc'][-1]:5.1f}%  gap {100 * x['gap']:5.1f} points   "
            f"{x['seconds']:5.1f} s"
        )
    narrower = int(np.sum(d["gaps"] < p["gaps"]))
    print(
        f"the dropout net's gap is the smaller one after {narrower} of {args.epochs} epochs; "
        f"mean gap {100 * d['gaps'].mean():.1f} vs {100 * p['gaps'].mean():.1f} points"
    )
    return r


if __name__ == "__main__":
    run_script(main)
