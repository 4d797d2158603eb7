"""The book's batch_norm_test.py: training with and without Batch Normalization.

A 6-layer net 784-[100×5]-10, trained on the first 1,000 MNIST training images with SGD
lr 0.01, batch 100, 20 epochs; once as (Dense + Relu) × 5 + Dense and once with a
BatchNorm after every hidden Dense, before its Relu.  The book repeats this for 16 weight
init stds (``np.logspace(0, -4, 16)``); here 1.0, 0.1, 0.01, 0.001 by default (``--stds``).
Both nets of a pair start from the same weights and see the same batches.  The book's
result: with BatchNorm the training accuracy rises faster, and for almost every std,
including those where the plain net does not learn at all.  Prints the training accuracy
curves (BatchNorm evaluated with its running statistics, i.e. in eval mode) and a table.

    python examples/batchnorm.py --data-dir ../shared/mnist
    python examples/batchnorm.py --data-dir ../shared/mnist --stds 0.3 0.03 --epochs 10

(The numpy backend on a busy machine: set OPENBLAS_NUM_THREADS=1, or OpenBLAS's threads
wait on each other for most of each step.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import funcnet as fn
from funcnet import models, optim, plot, train
from funcnet.cli import run_script
from funcnet.data import load_mnist

DEFAULT_STDS = (1.0, 0.1, 0.01, 0.001)


def build_net(std: float, batchnorm: bool, hidden=(100,) * 5) -> fn.Layer:
    """The book's MultiLayerNetExtend: Dense [+ BatchNorm] + Relu per hidden size, Dense(10)."""
    return models.multilayer_net(hidden, std, batchnorm=batchnorm)


def train_pair(x, t, std, *, epochs, batch_size, lr, seed, backend) -> dict:
    """Train the plain and the BatchNorm net for one std; train accuracy after each epoch."""
    plain, bn = build_net(std, False), build_net(std, True)
    _, p_plain = plain.init(seed, (-1, x.shape[1]))
    _, p_bn = bn.init(seed, (-1, x.shape[1]))
    # The pipelines differ in length, so the same seed would give different weights.
    p_bn = models.with_dense_weights(p_bn, models.dense_weights(p_plain))
    out = {}
    for name, net, params in (("plain", plain, p_plain), ("batchnorm", bn, p_bn)):
        start = time.perf_counter()
        _, _, hist = train.fit(
            net, train.to_backend(params, backend), (x, t), optimizer=optim.sgd(lr), epochs=epochs,
            batch_size=batch_size, seed=seed, progress=False,
            stop_if_diverged=False,  # the plain net at std 1 diverges: that is the point
        )  # fmt: skip
        out[name] = {
            "train_acc": np.asarray(hist.train_acc),
            "loss": np.asarray(hist.epoch_loss),
            "seconds": time.perf_counter() - start,
        }
    return out


def run(
    data_dir=None,
    stds=DEFAULT_STDS,
    epochs: int = 20,
    train_size: int = 1000,
    batch_size: int = 100,
    lr: float = 0.01,
    backend: str = "jax",
    seed: int = 0,
    data=None,
) -> dict:
    """``{"stds": [...], "results": {std: {"plain"|"batchnorm": {"train_acc": per-epoch
    array, "loss": per-epoch mean loss, "seconds"}}}}``.  ``data`` (``load_mnist``'s return
    value) skips loading."""
    (x_train, t_train), _ = data if data is not None else load_mnist(data_dir)
    x, t = x_train[:train_size], t_train[:train_size]
    results = {
        float(s): train_pair(
            x,
            t,
            float(s),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            backend=backend,
        )
        for s in stds
    }
    return {"stds": [float(s) for s in stds], "results": results}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder with the four MNIST files")
    ap.add_argument("--stds", type=float, nargs="+", default=list(DEFAULT_STDS))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--backend", choices=["numpy", "jax"], default="jax")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(
        f"784-[100×5]-10 on the first {args.train_size} training images, SGD lr {args.lr}, "
        f"batch {args.batch}, {args.epochs} epochs, backend {args.backend}, seed {args.seed}"
    )
    r = run(
        args.data_dir, args.stds, args.epochs, args.train_size, args.batch, args.lr,
        args.backend, args.seed,
    )  # fmt: skip
    for std in r["stds"]:
        pair = r["results"][std]
        series = {"BatchNorm": pair["batchnorm"]["train_acc"], "plain": pair["plain"]["train_acc"]}
        print(
            plot.lines(
                series,
                f"W init std {std:g}: train accuracy",
                xlabel="epoch",
                ylabel="accuracy",
                height=14,
                ylim=(0.0, 1.0),
            )
        )
    marks = sorted({min(m, args.epochs) for m in (1, 5, 10, args.epochs)})
    head = "".join(f"{'ep ' + str(m):>8}" for m in marks)
    print(f"train accuracy (%) after each epoch count\n{'std':<8}{'net':<11}{head}   mean")
    for std in r["stds"]:
        for name in ("plain", "batchnorm"):
            acc = r["results"][std][name]["train_acc"]
            cells = "".join(f"{100 * acc[m - 1]:8.1f}" for m in marks)
            print(f"{std:<8g}{name:<11}{cells}  {100 * acc.mean():5.1f}")
    res = r["results"]
    faster = sum(
        res[s]["batchnorm"]["train_acc"].mean() > res[s]["plain"]["train_acc"].mean()
        for s in r["stds"]
    )
    n = len(r["stds"])
    print(f"BatchNorm's mean train accuracy over the epochs is higher for {faster} of {n} stds")
    return r


if __name__ == "__main__":
    run_script(main)
