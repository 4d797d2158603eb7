"""The book's optimizer_compare_mnist.py: SGD, Momentum, AdaGrad and Adam on MNIST.

A 5-layer net 784-100-100-100-100-10 (four Dense(100) + Relu, He init), mini-batches of
128 drawn at random from the 60,000 training images, 2,000 iterations, the book's rates:
SGD 0.01, Momentum 0.01 (β 0.9), AdaGrad 0.01, Adam 0.001.  Every optimizer starts from
the same weights and sees the same batches, so the curves differ only by the update rule.
The book's result: SGD learns slowest; AdaGrad and Adam end well below it.  Prints the
four loss curves (means over blocks of iterations) on one plot, the loss every 500
iterations, the final losses and the test accuracies.

    python examples/compare_optimizers.py --data-dir ../shared/mnist
    python examples/compare_optimizers.py --data-dir ../shared/mnist --iters 500 --backend numpy
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import funcnet as fn
from funcnet import optim, plot, train
from funcnet.data import load_mnist

BOOK_RATES = {"SGD": 0.01, "Momentum": 0.01, "AdaGrad": 0.01, "Adam": 0.001}


def optimizers(rates: dict[str, float] | None = None) -> dict[str, optim.GradientTransformation]:
    r = {**BOOK_RATES, **(rates or {})}
    return {
        "SGD": optim.sgd(r["SGD"]),
        "Momentum": optim.momentum(r["Momentum"], beta=0.9),
        "AdaGrad": optim.adagrad(r["AdaGrad"]),
        "Adam": optim.adam(r["Adam"]),
    }


def build_net(hidden=(100, 100, 100, 100), W_init="he_normal") -> fn.Layer:
    """The book's MultiLayerNet: (Dense + Relu) per hidden size, then Dense(10)."""
    layers = []
    for n in hidden:
        layers += [fn.Dense(n, W_init=W_init), fn.Relu()]
    return fn.pipeline(*layers, fn.Dense(10, W_init=W_init))


def batch_indices(n: int, batch_size: int, iters: int, seed: int) -> np.ndarray:
    """(iters, batch_size) indices into the training set, drawn with replacement like the
    book's ``np.random.choice(train_size, batch_size)``; shared by every optimizer."""
    return np.random.default_rng(seed).integers(0, n, size=(iters, batch_size))


def smooth(losses, every: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, mean of each block of ``every`` losses), x = the block's last iteration; a
    partial last block is dropped.  Per-batch losses are too noisy to compare by eye."""
    losses = np.asarray(losses, dtype=np.float64)
    every = max(1, min(every, len(losses)))
    blocks = losses[: len(losses) // every * every].reshape(-1, every).mean(axis=1)
    return (np.arange(len(blocks)) + 1) * every, blocks


def train_losses(net, params, opt, x, t, idx, backend: str = "jax"):
    """Run ``len(idx)`` steps; returns (params, per-step losses as a float64 array)."""
    step = train.make_step(net, optimizer=opt)
    if backend == "jax":
        import jax.numpy as jnp

        step = jax.jit(step)
        params = jax.tree_util.tree_map(jnp.asarray, params)
    state = opt.init(params)
    losses = []
    for b in idx:
        params, state, loss = step(params, state, x[b], t[b])
        losses.append(loss)
    # One conversion at the end: float() per step would make JAX wait for every step.
    return params, np.asarray(losses, dtype=np.float64)


def run(
    data_dir=None,
    iters: int = 2000,
    batch_size: int = 128,
    backend: str = "jax",
    seed: int = 0,
    every: int = 20,
    rates: dict[str, float] | None = None,
    data=None,
    test_size: int | None = None,
) -> dict:
    """Train one net per optimizer.  ``data`` (``load_mnist``'s return value) skips loading.

    Returns ``{"losses": {name: per-step losses}, "smoothed": {name: (x, block means)},
    "final": {name: mean loss of the last block}, "test_acc": {name: accuracy},
    "seconds": {name: training time}, "every": block size}``.
    """
    if backend not in ("numpy", "jax"):
        raise ValueError(f"backend must be 'numpy' or 'jax', got {backend!r}")
    (x_train, t_train), (x_test, t_test) = data if data is not None else load_mnist(data_dir)
    x_test, t_test = x_test[:test_size], t_test[:test_size]
    net = build_net()
    _, params0 = net.init(seed, (-1, x_train.shape[1]))
    idx = batch_indices(len(x_train), batch_size, iters, seed)
    forward = jax.jit(lambda p, xb: net.forward(p, xb)[0]) if backend == "jax" else None
    out = {"losses": {}, "smoothed": {}, "final": {}, "test_acc": {}, "seconds": {}}
    for name, opt in optimizers(rates).items():
        start = time.perf_counter()
        params, losses = train_losses(net, params0, opt, x_train, t_train, idx, backend)
        out["seconds"][name] = time.perf_counter() - start
        out["losses"][name] = losses
        out["smoothed"][name] = smooth(losses, every)
        out["final"][name] = float(out["smoothed"][name][1][-1])
        out["test_acc"][name] = train.accuracy(net, params, x_test, t_test, forward=forward)
    out["every"] = max(1, min(every, iters))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder with the four MNIST files")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--backend", choices=["numpy", "jax"], default="jax")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=20, help="iterations per plotted mean")
    ap.add_argument("--test-size", type=int, default=None, help="first N test images only")
    args = ap.parse_args(argv)
    print(
        f"784-[100×4]-10, He init, batch {args.batch}, {args.iters} iterations, "
        f"backend {args.backend}, seed {args.seed}"
    )
    r = run(
        args.data_dir, args.iters, args.batch, args.backend, args.seed, args.every,
        test_size=args.test_size,
    )  # fmt: skip
    print(
        plot.lines(
            r["smoothed"],
            f"training loss (mean of every {r['every']} iterations)",
            xlabel="iteration",
            ylabel="loss",
        )
    )
    marks = list(range(500, args.iters + 1, 500)) or [args.iters]
    print("mean loss of the 20 iterations up to:")
    print(f"{'iteration':<10}" + "".join(f"{name:>10}" for name in r["losses"]))
    for m in marks:
        cells = "".join(f"{v[max(0, m - 20) : m].mean():10.4f}" for v in r["losses"].values())
        print(f"{m:<10}{cells}")
    for name, lr in BOOK_RATES.items():
        print(
            f"{name:<9} lr {lr:<6g} final loss {r['final'][name]:.4f}   "
            f"test accuracy {100 * r['test_acc'][name]:6.2f}%   {r['seconds'][name]:5.1f} s"
        )
    return r


if __name__ == "__main__":
    main()
