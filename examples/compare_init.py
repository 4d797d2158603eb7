"""The book's weight_init_compare.py: three weight initializations on MNIST.

The 5-layer net 784-100-100-100-100-10 (four Dense(100) + Relu), SGD lr 0.01, mini-batches
of 128 drawn at random, 2,000 iterations, weights from N(0, 0.01²), "Xavier" (the book's:
std 1/√n, ``initializers.lecun_normal``) or He (std √(2/n)).  All three see the same
batches.  The book's result: with std 0.01 the activations shrink layer by layer, the
gradients vanish and the loss stays near ln 10 ≈ 2.30; He learns fastest, Xavier close
behind.  Prints the three loss curves on one plot and the final losses.

    python examples/compare_init.py --data-dir ../shared/mnist
    python examples/compare_init.py --data-dir ../shared/mnist --iters 300 --backend numpy

(The numpy backend on a busy machine: set OPENBLAS_NUM_THREADS=1, or OpenBLAS's threads
wait on each other for most of each step.)
"""

from __future__ import annotations

import argparse

from funcnet import experiments, initializers, models, optim, plot, train
from funcnet.cli import run_script
from funcnet.data import load_mnist


def inits() -> dict[str, initializers.Initializer]:
    return {
        "std=0.01": initializers.normal(0.01),
        "Xavier": initializers.lecun_normal(),
        "He": initializers.he_normal(),
    }


def run(
    data_dir=None,
    iters: int = 2000,
    batch_size: int = 128,
    lr: float = 0.01,
    backend: str = "jax",
    seed: int = 0,
    every: int = 20,
    data=None,
    test_size: int | None = None,
) -> experiments.Comparison:
    """Train one net per initialization.  ``data`` (``load_mnist``'s return value) skips
    loading.  Returns an ``experiments.Comparison``."""
    (x_train, t_train), (x_test, t_test) = data if data is not None else load_mnist(data_dir)
    variants = {}
    for name, init in inits().items():
        net = models.multilayer_net((100,) * 4, init)
        params = train.to_backend(net.init(seed, (-1, x_train.shape[1]))[1], backend)
        variants[name] = (net, params, optim.sgd(lr))
    idx = experiments.sample_batches(len(x_train), batch_size, iters, seed)  # same for every init
    return experiments.compare(
        variants, (x_train, t_train), (x_test[:test_size], t_test[:test_size]), idx,
        every=every,
    )  # fmt: skip


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder with the four MNIST files")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--backend", choices=["numpy", "jax"], default="jax")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=20, help="iterations per plotted mean")
    ap.add_argument("--test-size", type=int, default=None, help="first N test images only")
    args = ap.parse_args(argv)
    print(
        f"784-[100×4]-10, SGD lr {args.lr}, batch {args.batch}, {args.iters} iterations, "
        f"backend {args.backend}, seed {args.seed}"
    )
    r = run(
        args.data_dir, args.iters, args.batch, args.lr, args.backend, args.seed, args.every,
        test_size=args.test_size,
    )  # fmt: skip
    print(plot.loss_comparison(r))
    for name in r.losses:
        print(
            f"{name:<9} final loss {r.final[name]:.4f}   "
            f"test accuracy {100 * r.test_acc[name]:6.2f}%   {r.seconds[name]:5.1f} s"
        )
    return r


if __name__ == "__main__":
    run_script(main)
