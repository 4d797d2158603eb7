"""The ``funcnet`` command: ``check`` (gradient table), ``demo`` (gradient descent),
``train`` (MNIST with terminal plots).  One module per command in this package; a new
command goes in its own module and gets its parser here."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, exit status 2 (argparse's convention), instead of the usage block."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default, except where there is none to show (None, a flag's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _number(kind, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def _decay(text: str) -> float:
    value = _number(float, text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _positive(kind):
    def parse(text: str):
        value = _number(kind, text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _finite(text: str) -> float:
    value = _number(float, text)
    if abs(value) > 1e100:  # x1² + x2² would overflow to inf
        raise argparse.ArgumentTypeError(f"must be within ±1e100, got {text}")
    return value


def _existing_file(text: str) -> str:
    if not os.path.isfile(text):
        what = "is a directory" if os.path.isdir(text) else "does not exist"
        raise argparse.ArgumentTypeError(f"{text} {what}")
    return text


def _address(text: str) -> str:
    """``HOST:PORT`` of the coordinator (process 0), the port in 1..65535."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, port 1..65535, got {text!r}")
    return text


def _save_path(text: str) -> str:
    """A file the run can write at the end: checked before any work, so that a finished run
    is never lost to a bad path found late."""
    path = os.path.abspath(text)
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"folder {folder} is not writable")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="funcnet",
        description="funcnet: check (gradient table), demo (gradient descent), "
        "train (MNIST with terminal plots), eval (saved models, an ensemble), profile "
        "(time per layer).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = {"formatter_class": _Help}

    p = sub.add_parser(
        "check", help="check every built-in layer, loss and node against jax.vjp", **fmt
    )
    p.add_argument("--seed", type=_non_negative_int, default=0, help="cotangents and samples")
    p.set_defaults(command_module="check")

    p = sub.add_parser("demo", help="gradient descent on x1² + x2² with terminal plots", **fmt)
    p.add_argument("--x0", type=_finite, nargs=2, default=[-3.0, 4.0], metavar=("X1", "X2"),
                   help="the starting point")  # fmt: skip
    p.add_argument("--lr", type=_positive(float), default=0.1, help="learning rate")
    p.add_argument("--steps", type=_non_negative_int, default=20, help="gradient steps")
    p.add_argument("--grad", choices=["numerical", "jax"], default="numerical",
                   help="central differences (h=1e-4) or jax.grad")  # fmt: skip
    p.add_argument("--no-plot", action="store_true", help="print the numbers only")
    p.add_argument("--no-color", action="store_true", help="plots without colour")
    p.set_defaults(command_module="demo")

    p = sub.add_parser("train", help="train on MNIST: the two-layer net or SimpleConvNet", **fmt)
    p.add_argument("--model", choices=["mlp", "convnet", "deep"], default="mlp",
                   help="784-H-10, the book's SimpleConvNet (chapter 7) or its deep "
                   "convnet (chapter 8)")  # fmt: skip
    p.add_argument("--hidden", type=_positive(int), default=100, help="mlp hidden units")
    p.add_argument("--epochs", type=_positive(int), default=20, help="passes over the data")
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], default=None,
                   help="None: sgd for mlp, adam for convnet and deep")  # fmt: skip
    p.add_argument("--lr", type=_positive(float), default=None,
                   help="None: 0.1 for sgd and momentum, 0.001 for adam")  # fmt: skip
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="cosine: the rate decays from --lr to 0 over the run's steps")  # fmt: skip
    p.add_argument("--augment", type=_non_negative_int, default=0, metavar="PIXELS",
                   help="convnet, deep: shift every training image by up to PIXELS in each "
                   "direction, at random (augment.random_shift); 0: off")  # fmt: skip
    p.add_argument(
        "--average", type=_decay, default=None, metavar="DECAY",
        help="score and save a moving average of the params (optim.with_average); "
        "0 turns it off; None: 0.999 for convnet, off for mlp and deep (as the book)",
    )  # fmt: skip
    p.add_argument("--batch", type=_positive(int), default=100, help="mini-batch size")
    p.add_argument("--seed", type=_non_negative_int, default=0,
                   help="initial weights, shuffling and dropout")  # fmt: skip
    p.add_argument("--weight-std", type=_positive(float), default=0.01,
                   help="mlp, convnet: initial weights N(0, std²); deep: He's")  # fmt: skip
    p.add_argument("--backend", choices=["numpy", "jax"], default=None,
                   help="numpy: eager steps; jax: a jitted step; None: numpy, or jax with "
                   "--devices, --coordinator or --cluster")  # fmt: skip
    p.add_argument("--scan", action="store_true", help="jax: run each epoch as one lax.scan")
    p.add_argument("--data-dir", default=None,
                   help="folder with the four MNIST files; None: $FUNCNET_DATA, then "
                   "~/.cache/funcnet/mnist, downloading there if missing")  # fmt: skip
    p.add_argument("--subset", type=_non_negative_int, default=0,
                   help="use only the first N training images (0: all)")  # fmt: skip
    p.add_argument("--test-subset", type=_non_negative_int, default=0, metavar="N",
                   help="score every epoch and the final line on only the first N test "
                   "images (0: all)")  # fmt: skip
    p.add_argument("--save", type=_save_path, default=None, metavar="FILE.npz",
                   help="write the trained params here (also on Ctrl-C, those of the last "
                   "finished epoch)")  # fmt: skip
    p.add_argument("--checkpoint", type=_save_path, default=None, metavar="RUN.npz",
                   help="after every epoch, write what --resume needs: the last params, "
                   "the optimizer state, the epoch count and the settings")  # fmt: skip
    p.add_argument("--resume", type=_existing_file, default=None, metavar="RUN.npz",
                   help="continue a run from its --checkpoint file, on the batches it would "
                   "have seen (same settings; any device count)")  # fmt: skip
    p.add_argument("--no-plot", action="store_true", help="print the numbers only")
    p.add_argument("--no-color", action="store_true", help="plots without colour")
    group = p.add_argument_group(
        "many devices and processes", "data parallel: each batch split over the devices, "
        "params replicated, gradients all-reduced (docs/scale.md); these imply --backend jax",
    )  # fmt: skip
    group.add_argument("--devices", type=_positive(int), default=None, metavar="N",
                       help="devices of each process to split every batch over (on a CPU-only "
                       "machine, N host devices); None: 1, or all of them with "
                       "--coordinator/--cluster")  # fmt: skip
    group.add_argument("--coordinator", type=_address, default=None, metavar="HOST:PORT",
                       help="process 0's address: start one process per host (or per GPU) "
                       "with --num-processes and its --process-id")  # fmt: skip
    group.add_argument("--num-processes", type=_positive(int), default=None, metavar="P",
                       help="processes in the run (with --coordinator)")  # fmt: skip
    group.add_argument("--process-id", type=_non_negative_int, default=None, metavar="I",
                       help="this process's index, 0..P-1; 0 prints and saves")  # fmt: skip
    group.add_argument("--cluster", action="store_true",
                       help="let JAX read the processes from the cluster's environment "
                       "(SLURM, Open MPI, ...) instead of --coordinator")  # fmt: skip
    group.add_argument("--peer-timeout", type=_positive(int), default=120, metavar="SECONDS",
                       help="how long a process waits for a peer to join or to answer; "
                       "a process that dies makes the others stop within about this "
                       "time")  # fmt: skip
    p.set_defaults(command_module="train")

    p = sub.add_parser(
        "eval", help="saved models on the MNIST test set; several: their ensemble", **fmt
    )
    p.add_argument("--load", type=_existing_file, required=True, nargs="+", metavar="FILE.npz",
                   help="params saved by funcnet train --save; with several files, the "
                   "ensemble that averages their softmax outputs is scored too")  # fmt: skip
    p.add_argument("--model", choices=["mlp", "convnet", "deep"], default="mlp",
                   help="the network the files were saved from")  # fmt: skip
    p.add_argument("--hidden", type=_positive(int), default=100, help="mlp hidden units")
    p.add_argument("--data-dir", default=None, help="folder with the four MNIST files")
    p.add_argument("--show", type=_non_negative_int, default=12,
                   help="misclassified digits to draw")  # fmt: skip
    p.add_argument("--no-plot", action="store_true", help="print the numbers only")
    p.add_argument("--no-color", action="store_true", help="plots without colour")
    p.set_defaults(command_module="evaluate")

    p = sub.add_parser(
        "profile", help="where a step's time goes: forward and backward time per layer", **fmt
    )
    p.add_argument("--model", choices=["mlp", "convnet", "deep"], default="deep",
                   help="the network to time")  # fmt: skip
    p.add_argument("--hidden", type=_positive(int), default=100, help="mlp hidden units")
    p.add_argument("--backend", choices=["numpy", "jax", "both"], default="both",
                   help="numpy: the eager layers; jax: each layer's forward and backward "
                   "jitted on its own")  # fmt: skip
    p.add_argument("--batch", type=_positive(int), default=100, help="images per step")
    p.add_argument("--repeats", type=_positive(int), default=5,
                   help="timed steps (medians) after one warm-up step")  # fmt: skip
    p.add_argument("--no-color", action="store_true", help="plots without colour")
    p.set_defaults(command_module="profile")

    args = parser.parse_args(argv)
    if args.command_module == "train":
        _check_train(sub.choices["train"], args)
    # Each command imports only what it needs: `funcnet demo` never loads JAX or MNIST code.
    command = importlib.import_module(f".{args.command_module}", __name__)
    try:
        return command.run(args)
    except KeyboardInterrupt:  # outside training (which says more): one line, no traceback
        print(f"funcnet {args.command}: interrupted", file=sys.stderr)
        return 130


def _check_train(train: _Parser, args) -> None:
    """The checks of ``funcnet train`` that involve several flags (exit 2, before any work);
    sets ``args.backend`` when it was left to follow the scale-out flags."""
    scaled = [f for f, on in [("--devices", args.devices), ("--coordinator", args.coordinator),
              ("--cluster", args.cluster)] if on]  # fmt: skip
    if args.backend == "numpy" and scaled:
        train.error(f"{scaled[0]} runs the step on JAX devices: drop --backend numpy")
    args.backend = args.backend or ("jax" if scaled else "numpy")
    if args.scan and args.backend != "jax":
        train.error("--scan compiles each epoch with JAX: add --backend jax")
    if args.augment and args.model == "mlp":
        train.error("--augment shifts images: use it with --model convnet or deep")
    if args.augment >= 14:
        train.error(f"--augment {args.augment} would shift a 28x28 digit out of sight (< 14)")
    if args.subset and args.batch > args.subset:
        train.error(f"--batch {args.batch} is larger than --subset {args.subset}")
    given = [f for f, v in [("--num-processes", args.num_processes),
             ("--process-id", args.process_id)] if v is not None]  # fmt: skip
    if args.cluster and (args.coordinator or given):
        other = "--coordinator" if args.coordinator else given[0]
        train.error(f"--cluster reads the processes from the environment: drop {other}")
    if args.coordinator and len(given) < 2:
        train.error("--coordinator needs --num-processes and --process-id")
    if given and not args.coordinator:
        train.error(f"{given[0]} needs --coordinator HOST:PORT")
    if args.coordinator and args.process_id >= args.num_processes:
        train.error(
            f"--process-id {args.process_id} must be below --num-processes {args.num_processes}"
        )
    if args.devices:
        n = args.devices * (args.num_processes or 1)
        if args.batch % n:
            train.error(
                f"--batch {args.batch} does not split evenly over {n} devices (use a multiple "
                f"of {n})"
            )
    if args.resume:
        from .train import resume_problem

        problem = resume_problem(args)
        if problem:
            train.error(f"--resume {args.resume}: {problem}")


def run_script(main, name: str | None = None) -> None:
    """Run an example script's ``main()`` the way the ``funcnet`` commands run: missing
    data or a bad value is one line on stderr (exit 1), Ctrl-C one line (exit 130); never a
    traceback for those."""
    name = name or os.path.basename(sys.argv[0])
    try:
        main()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)
    except (ValueError, FloatingPointError) as e:  # MNISTError is a ValueError
        print(f"{name}: {one_line(e)}", file=sys.stderr)
        sys.exit(1)


def one_line(error: BaseException) -> str:
    """An error message on one line: its first line and, for a longer one (MNIST's list of
    searched folders), its last, which says what to do."""
    first, *rest = str(error).splitlines() or [""]
    return f"{first} {rest[-1].strip()}" if rest else first


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("funcnet")
    except PackageNotFoundError:  # run from a checkout without installing
        from .. import __version__

        return __version__


if __name__ == "__main__":
    sys.exit(main())
