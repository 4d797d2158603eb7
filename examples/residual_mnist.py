"""A small residual convnet on MNIST, built from funcnet's combinators.

    python examples/residual_mnist.py --data-dir ../shared/mnist
    python examples/residual_mnist.py --data-dir ../shared/mnist --blocks 0 --epochs 2

conv 3×3 8 – Relu – [residual block] × B – max-pool 2 – Dense 10, where a residual block
is y = x + f(x) with f = conv 3×3 8 (no bias) – BatchNorm – Relu – conv 3×3 8
(``fn.residual``): its backward sends the gradient through f and, unchanged, around it.
Adam 0.001, batch 100; ``--blocks 0`` is the same net without the blocks, for comparison.
Prints the accuracy per epoch and the curves; ``--subset`` trains on the first N images.
"""

from __future__ import annotations

import argparse

import funcnet as fn
from funcnet import optim, plot, train
from funcnet.cli import run_script
from funcnet.data import load_mnist


def build_net(blocks: int = 2, width: int = 8) -> fn.Layer:
    """The net described above, with ``blocks`` residual blocks of ``width`` channels."""

    def block() -> fn.Layer:
        f = fn.pipeline(
            fn.Conv(width, 3, padding=1, bias=False), fn.BatchNorm(), fn.Relu(),
            fn.Conv(width, 3, padding=1),
        )  # fmt: skip
        return fn.residual(f)

    blocks_ = [block() for _ in range(blocks)]
    return fn.pipeline(
        fn.Conv(width, 3, padding=1), fn.Relu(), *blocks_, fn.MaxPool(2), fn.Flatten(),
        fn.Dense(10),
    )  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder with the four MNIST files")
    ap.add_argument("--blocks", type=int, default=2, help="residual blocks (0: none)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--subset", type=int, default=0, help="first N training images (0: all)")
    ap.add_argument("--backend", choices=["numpy", "jax"], default="jax")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-plot", action="store_true", help="print the numbers only")
    args = ap.parse_args(argv)
    if args.blocks < 0 or args.epochs < 1 or args.subset < 0:
        ap.error("--blocks and --subset must be >= 0, --epochs >= 1")
    (x, t), test = load_mnist(args.data_dir, flatten=False)
    if args.subset:
        x, t = x[: args.subset], t[: args.subset]
    net = build_net(args.blocks)
    _, params = net.init(args.seed, (-1, 1, 28, 28))
    print(f"{net.name}\n{len(x)} training images, Adam 0.001, batch 100, {args.epochs} epochs")

    def report(epoch, h):
        print(f"epoch {epoch}: train {100 * h.train_acc[-1]:.2f}%  test "
              f"{100 * h.test_acc[-1]:.2f}%  {h.epoch_time[-1]:.1f} s", flush=True)  # fmt: skip

    _, _, hist = train.fit(
        net, train.to_backend(params, args.backend), (x, t), test,
        optimizer=optim.adam(0.001), epochs=args.epochs, seed=args.seed, on_epoch=report,
    )  # fmt: skip
    if not args.no_plot:
        series = {"train": hist.train_acc, "test": hist.test_acc}
        print(plot.lines(series, "accuracy", xlabel="epoch", ylabel="accuracy"))
    return 0


if __name__ == "__main__":
    run_script(main)
