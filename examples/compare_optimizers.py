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

from funcnet import experiments, models, optim, plot, train
from funcnet.cli import run_script
from funcnet.data import load_mnist

BOOK_RATES = {"SGD": 0.01, "Momentum": 0.01, "AdaGrad": 0.01, "Adam": 0.001}


def optimizers(rates: dict[str, float] | None = None) -> dict[str, optim.GradientTransformation]:
    """The book's four optimizers (Momentum with β 0.9) at its learning rates or ``rates``."""
    return {name: optim.by_name(name, lr) for name, lr in {**BOOK_RATES, **(rates or {})}.items()}


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
) -> experiments.Comparison:
    """Train one net per optimizer.  ``data`` (``load_mnist``'s return value) skips loading.
    Returns an ``experiments.Comparison``."""
    (x_train, t_train), (x_test, t_test) = data if data is not None else load_mnist(data_dir)
    net = models.multilayer_net((100,) * 4, "he_normal")
    params0 = train.to_backend(net.init(seed, (-1, x_train.shape[1]))[1], backend)
    variants = {name: (net, params0, opt) for name, opt in optimizers(rates).items()}
    idx = experiments.sample_batches(
        len(x_train), batch_size, iters, seed
    )  # same for every optimizer
    return experiments.compare(
        variants, (x_train, t_train), (x_test[:test_size], t_test[:test_size]), idx,
        every=every,
    )  # fmt: skip


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
    print(plot.loss_comparison(r))
    for name, lr in BOOK_RATES.items():
        print(
            f"{name:<9} lr {lr:<6g} final loss {r.final[name]:.4f}   "
            f"test accuracy {100 * r.test_acc[name]:6.2f}%   {r.seconds[name]:5.1f} s"
        )
    return r


if __name__ == "__main__":
    run_script(main)
