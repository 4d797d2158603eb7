"""``funcnet train``: the two-layer net or SimpleConvNet on MNIST, with terminal plots."""

from __future__ import annotations

import sys

import numpy as np

from . import one_line


def run(args) -> int:
    from .. import models, optim, plot
    from ..checkpoints import save_params
    from ..data import MNISTError, load_mnist
    from ..experiments import block_means
    from ..train import Interrupted, accuracy, fit, predict, scored_params, to_backend

    convnet = args.model == "convnet"
    try:
        (x_train, t_train), (x_test, t_test) = load_mnist(args.data_dir, flatten=not convnet)
    except MNISTError as e:
        print(f"funcnet train: {one_line(e)}", file=sys.stderr)
        return 2
    if args.subset:
        x_train, t_train = x_train[: args.subset], t_train[: args.subset]
    if convnet:
        net = models.simple_convnet(W_init=args.weight_std)
    else:
        net = models.two_layer_net(args.hidden, args.weight_std)
    _, params = net.init(args.seed, (-1, *x_train.shape[1:]))
    params = to_backend(params, args.backend)  # JAX arrays: fit compiles the step
    name = args.optimizer or ("adam" if convnet else "sgd")
    lr = args.lr if args.lr is not None else (0.001 if name == "adam" else 0.1)
    optimizer = optim.by_name(name, lr)
    decay = args.average if args.average is not None else (0.999 if convnet else 0.0)
    if decay:
        optimizer = optim.with_average(optimizer, decay)
    print(
        f"{net.name}\n{len(x_train)} training / {len(x_test)} test images, batch {args.batch}, "
        f"{name} lr {lr}, {args.epochs} epoch{'s' if args.epochs != 1 else ''}, "
        f"seed {args.seed}, backend {args.backend}"
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

    try:
        # A diverging run is reported below in one line; NumPy's overflow warnings would
        # only repeat it.
        with np.errstate(over="ignore", invalid="ignore"):
            last, opt_state, hist = fit(
                net, params, (x_train, t_train), (x_test, t_test),
                optimizer=optimizer, epochs=args.epochs, batch_size=args.batch,
                seed=args.seed, scan=args.scan, on_epoch=report,
            )  # fmt: skip
    except Interrupted as stop:
        kept = ""
        if args.save and stop.epochs_done:
            save_params(args.save, scored_params(stop.params, stop.opt_state))
            kept = f"; the params of epoch {stop.epochs_done} are saved to {args.save}"
        elif args.save:
            kept = "; no epoch had finished, nothing saved"
        print(
            f"funcnet train: interrupted after {stop.epochs_done} epoch(s){kept}", file=sys.stderr
        )
        return 130
    except FloatingPointError as e:
        print(f"funcnet train: {e} (--lr {lr}: try a smaller one)", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"funcnet train: {e}", file=sys.stderr)
        return 1
    params = scored_params(last, opt_state)  # what fit scored
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
        smooth = block_means(hist.step_loss, max(1, len(hist.step_loss) // 200))
        color = False if args.no_color else None
        print(
            plot.lines({"loss": smooth}, "training loss", xlabel="step", ylabel="loss", color=color)
        )
        print(
            plot.lines(
                {"train": hist.train_acc, "test": hist.test_acc},
                "accuracy",
                xlabel="epoch",
                ylabel="accuracy",
                color=color,
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
