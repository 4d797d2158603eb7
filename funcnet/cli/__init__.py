"""The ``funcnet`` command: ``check`` (gradient table), ``demo`` (gradient descent),
``train`` (MNIST with terminal plots).  One module per command in this package; a new
command goes in its own module and gets its parser here."""

from __future__ import annotations

import argparse
import importlib
import sys


def _decay(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="funcnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="check every built-in layer and loss against jax.vjp")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(command_module="check")

    p = sub.add_parser("demo", help="gradient descent on x1² + x2² with terminal plots")
    p.add_argument("--x0", type=float, nargs=2, default=[-3.0, 4.0], metavar=("X1", "X2"))
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--grad", choices=["numerical", "jax"], default="numerical")
    p.add_argument("--no-plot", action="store_true")
    p.set_defaults(command_module="demo")

    p = sub.add_parser("train", help="train on MNIST: the two-layer net or SimpleConvNet")
    p.add_argument("--model", choices=["mlp", "convnet"], default="mlp")
    p.add_argument("--hidden", type=int, default=100, help="mlp hidden units")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], default=None,
                   help="default: sgd for mlp, adam for convnet")  # fmt: skip
    p.add_argument("--lr", type=float, default=None, help="default: 0.1 for sgd, 0.001 adam")
    p.add_argument(
        "--average", type=_decay, default=None, metavar="DECAY",
        help="score and save a moving average of the params (optim.with_average); "
        "0 turns it off (default: 0.999 for convnet, off for mlp)",
    )  # fmt: skip
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--weight-std", type=float, default=None, help="weights N(0, std²) (default 0.01)"
    )
    p.add_argument("--backend", choices=["numpy", "jax"], default="numpy")
    p.add_argument("--scan", action="store_true", help="jax: run each epoch as one lax.scan")
    p.add_argument("--data-dir", default=None, help="folder with the four MNIST files")
    p.add_argument("--subset", type=int, default=0, help="use only the first N training images")
    p.add_argument("--save", default=None, help="write the trained params to this .npz")
    p.add_argument("--no-plot", action="store_true")
    p.set_defaults(command_module="train")

    args = parser.parse_args(argv)
    if args.command_module == "train" and args.scan and args.backend != "jax":
        parser.error("--scan compiles each epoch with JAX: add --backend jax")
    # Each command imports only what it needs: `funcnet demo` never loads JAX or MNIST code.
    command = importlib.import_module(f".{args.command_module}", __name__)
    return command.run(args)


if __name__ == "__main__":
    sys.exit(main())
