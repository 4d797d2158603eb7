"""The ``funcnet`` command: ``check`` (gradient table), ``demo`` (gradient descent),
``train`` (MNIST with terminal plots)."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _cmd_check(args) -> int:
    from .gradcheck import builtin_checks

    reports = builtin_checks(args.seed)
    head = (
        f"{'layer / loss':<44} {'input shape':<18} {'rel err vs jax':>14} "
        f"{'vs numerical':>13}  result"
    )
    print(head)
    print("-" * len(head))
    for r in reports:
        name = r.name if len(r.name) <= 44 else r.name[:41] + "..."
        print(
            f"{name:<44} {r.in_shapes:<18} {r.max_jax_rel:>14.2e} {r.max_num_rel:>13.2e}  "
            f"{'pass' if r.ok else 'FAIL'}"
        )
    failed = [r for r in reports if not r.ok]
    for r in failed:
        print("\n" + str(r))
    print(f"\n{len(reports) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def square(x):
    """f(x) = x1² + x2² (the book's function_2), for NumPy or JAX arrays."""
    return x[0] ** 2 + x[1] ** 2


def _cmd_demo(args) -> int:
    from . import plot
    from .numerical import gradient_descent

    x0 = np.array(args.x0, dtype=np.float64)
    grad = None
    if args.grad == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)  # compare in float64, like the numerical path
        grad = jax.grad(square)
    x, hist = gradient_descent(square, x0, lr=args.lr, steps=args.steps, grad=grad)
    points = np.stack(hist.points)
    print(
        f"gradient descent on f(x) = x1² + x2² from ({x0[0]:g}, {x0[1]:g}), "
        f"lr {args.lr}, {args.steps} steps"
    )
    print(f"gradient: {'jax.grad' if grad else 'numerical (central differences, h=1e-4)'}")
    print(f"final x = ({x[0]:.4f}, {x[1]:.4f})   f(x) = {hist.values[-1]:.7f}")
    if args.grad == "jax":
        x_num, h_num = gradient_descent(square, x0, lr=args.lr, steps=args.steps)
        diff = float(np.max(np.abs(points - np.stack(h_num.points))))
        print(
            f"numerical-gradient run: x = ({x_num[0]:.4f}, {x_num[1]:.4f}); "
            f"max |Δ| between the two paths {diff:.1e}"
        )
    if not args.no_plot:
        print(
            plot.lines(
                {"f(x)": (np.arange(len(hist.values)), hist.values)},
                "f over the steps",
                xlabel="step",
                ylabel="f",
            )
        )
        print(plot.path(points, "path on the (x1, x2) plane"))
    return 0


def _cmd_train(args) -> int:
    from . import models, optim, plot
    from .data import MNISTError, load_mnist
    from .train import accuracy, fit, predict, save_params

    convnet = args.model == "convnet"
    try:
        (x_train, t_train), (x_test, t_test) = load_mnist(args.data_dir, flatten=not convnet)
    except MNISTError as e:
        print(f"funcnet train: {e}", file=sys.stderr)
        return 2
    if args.subset:
        x_train, t_train = x_train[: args.subset], t_train[: args.subset]
    if convnet:
        net = models.simple_convnet(W_init=args.weight_std or 0.01)
    else:
        net = models.two_layer_net(args.hidden, args.weight_std or 0.01)
    _, params = net.init(args.seed, (-1, *x_train.shape[1:]))
    name = args.optimizer or ("adam" if convnet else "sgd")
    lr = args.lr if args.lr is not None else (0.001 if name == "adam" else 0.1)
    optimizer = optim.by_name(name, lr)
    decay = args.average if args.average is not None else (0.999 if convnet else 0.0)
    if decay:
        optimizer = optim.with_average(optimizer, decay)
    print(
        f"{net.name}\n{len(x_train)} training / {len(x_test)} test images, batch {args.batch}, "
        f"{name} lr {lr}, {args.epochs} epochs, seed {args.seed}, backend {args.backend}"
        + (" (whole epoch in lax.scan)" if args.scan else "")
        + (
            f"\naccuracies and --save use the moving average of the params (decay {decay}); "
            "--average 0 turns it off"
            if decay
            else ""
        )
    )
    if convnet and not args.no_plot:
        print("the 30 first-layer filters before training:\n")
        print(plot.filters(params[0]["W"]))

    def report(epoch, h):
        print(
            f"epoch {epoch:>3}/{args.epochs}  loss {h.epoch_loss[-1]:.4f}  "
            f"train {100 * h.train_acc[-1]:6.2f}%  test {100 * h.test_acc[-1]:6.2f}%  "
            f"{h.epoch_time[-1]:6.2f} s",
            flush=True,
        )

    last, opt_state, hist = fit(
        net, params, (x_train, t_train), (x_test, t_test),
        optimizer=optimizer, epochs=args.epochs, batch_size=args.batch,
        seed=args.seed, backend=args.backend, scan=args.scan, on_epoch=report,
    )  # fmt: skip
    # What fit scored: the averaged params when averaging, else the last iterate.
    params = optim.averaged(opt_state, last)
    note = ""
    if decay:
        plain = 100 * accuracy(net, last, x_test, t_test)
        note = f" (averaged params; the last iterate itself: {plain:.2f}%)"
    print(f"test accuracy {100 * hist.test_acc[-1]:.2f}% on all {len(x_test)} test images{note}")
    if args.save:
        save_params(args.save, params)
        print(f"params saved to {args.save}")
    if not args.no_plot:
        # ≤ 200 points: plotext draws braille cells, not data points
        smooth = plot.block_means(hist.step_loss, max(1, len(hist.step_loss) // 200))
        print(plot.lines({"loss": smooth}, "training loss", xlabel="step", ylabel="loss"))
        print(
            plot.lines(
                {"train": hist.train_acc, "test": hist.test_acc},
                "accuracy",
                xlabel="epoch",
                ylabel="accuracy",
            )
        )
        if convnet:
            print("the filters after training:\n")
            print(plot.filters(np.asarray(params[0]["W"])))
        shown = x_test[:12]
        preds = predict(net, params, shown)
        captions = [
            f"{p} ok" if p == t else f"{p} (is {t})"
            for p, t in zip(preds.tolist(), t_test[:12].tolist(), strict=True)
        ]
        print("first test digits and their predictions:\n")
        print(plot.images(shown, captions))
    return 0


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
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("demo", help="gradient descent on x1² + x2² with terminal plots")
    p.add_argument("--x0", type=float, nargs=2, default=[-3.0, 4.0], metavar=("X1", "X2"))
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--grad", choices=["numerical", "jax"], default="numerical")
    p.add_argument("--no-plot", action="store_true")
    p.set_defaults(func=_cmd_demo)

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
    p.set_defaults(func=_cmd_train)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
