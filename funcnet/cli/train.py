"""``funcnet train``: the two-layer net, SimpleConvNet or the deep convnet on MNIST, with
terminal plots; on
one device, or data parallel over many devices and processes (``funcnet.scale``)."""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from . import one_line

# The settings a resumed run must share with the run it continues, by their flags.
FLAGS = {
    "model": "--model",
    "hidden": "--hidden",
    "optimizer": "--optimizer",
    "lr": "--lr",
    "average": "--average",
    "batch": "--batch",
    "seed": "--seed",
    "subset": "--subset",
    "augment": "--augment",
    "lr_schedule": "--lr-schedule",
}


def settings(args) -> dict:
    """The run's settings with every default resolved: what a --checkpoint records."""
    images = args.model != "mlp"
    name = args.optimizer or ("adam" if images else "sgd")
    average = 0.999 if args.model == "convnet" else 0.0
    return {
        "model": args.model,
        "hidden": None if images else args.hidden,
        "optimizer": name,
        "lr": args.lr if args.lr is not None else (0.001 if name == "adam" else 0.1),
        "average": args.average if args.average is not None else average,
        "batch": args.batch,
        "seed": args.seed,
        "subset": args.subset,
        "augment": args.augment,
        "lr_schedule": args.lr_schedule,
    }


def resume_problem(args) -> str | None:
    """Why ``--resume`` cannot continue with these flags (None when it can): a file that
    is no run checkpoint, other settings (other batches or steps), no epoch left to run."""
    from ..checkpoints import run_info

    try:
        done, meta = run_info(args.resume)
    except ValueError as e:
        return str(e).split(": ", 1)[1]
    for key, value in settings(args).items():
        # Checkpoints from before a setting existed ran with its default.
        if meta.get(key, {"augment": 0, "lr_schedule": "constant"}.get(key)) != value:
            return f"it was written with {FLAGS[key]} {meta.get(key)}, this run has {value}"
    if done >= args.epochs:
        return f"{done} epochs are done already; ask for more with --epochs"
    return None


def run(args) -> int:
    mesh, main = None, True
    if args.devices or args.coordinator or args.cluster:
        from .. import scale

        # Before any JAX computation: the host device count, then the processes.
        if args.devices:
            scale.use_cpu_devices(args.devices)
        if args.coordinator or args.cluster:
            try:
                scale.initialize(
                    args.coordinator, args.num_processes, args.process_id,
                    timeout=args.peer_timeout,
                )  # fmt: skip
            except (ValueError, RuntimeError) as e:  # no cluster found, no peer in time
                hint = " (--cluster: is this a SLURM or Open MPI job?)" if args.cluster else ""
                print(f"funcnet train: cannot start the processes: {one_line(e)}{hint}",
                      file=sys.stderr)  # fmt: skip
                return 1
        try:
            mesh = scale.data_mesh(args.devices)
        except ValueError as e:
            print(f"funcnet train: {e}", file=sys.stderr)
            return 1
        main = scale.is_main()
    # Process 0 alone prints; the others compute the same and keep quiet (errors still show).
    quiet = open(os.devnull, "w") if not main else None  # closed below
    try:
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
            return _train(args, mesh, main)
    finally:
        if quiet:
            quiet.close()


def _train(args, mesh, main: bool) -> int:
    from .. import models, optim, plot
    from ..augment import random_shift
    from ..checkpoints import load_run, save_params, save_run
    from ..core import trainable
    from ..data import MNISTError, load_mnist
    from ..experiments import block_means
    from ..train import Interrupted, accuracy, fit, predict, scored_params, to_backend

    images = args.model != "mlp"
    try:
        (x_train, t_train), (x_test, t_test) = load_mnist(args.data_dir, flatten=not images)
    except MNISTError as e:
        print(f"funcnet train: {one_line(e)}", file=sys.stderr)
        return 2
    # The sizes are known only once the files are read: a cut beyond them is refused, not
    # quietly made smaller.
    for flag, n, have in [("--subset", args.subset, len(x_train)),
                          ("--test-subset", args.test_subset, len(x_test))]:  # fmt: skip
        if n > have:
            print(f"funcnet train: {flag} {n} is more than the {have} images there are",
                  file=sys.stderr)  # fmt: skip
            return 2
    if args.subset:
        x_train, t_train = x_train[: args.subset], t_train[: args.subset]
    if args.test_subset:
        x_test, t_test = x_test[: args.test_subset], t_test[: args.test_subset]
    scored = f"the first {len(x_test)}" if args.test_subset else f"all {len(x_test)}"
    net, _ = models.by_name(args.model, hidden=args.hidden, weight_std=args.weight_std)
    _, params = net.init(args.seed, (-1, *x_train.shape[1:]))
    config = settings(args)
    name, lr, decay = config["optimizer"], config["lr"], config["average"]
    rate = lr
    if args.lr_schedule == "cosine":
        rate = optim.cosine_decay(lr, args.epochs * (len(x_train) // args.batch))
    optimizer = optim.by_name(name, rate)
    if decay:
        optimizer = optim.with_average(optimizer, decay)
    opt_state, done = None, 0
    if args.resume:
        try:
            saved = load_run(args.resume, params, optimizer.init(trainable(params)))
        except ValueError as e:
            print(f"funcnet train: {e}", file=sys.stderr)
            return 1
        params, opt_state, done = saved.params, saved.opt_state, saved.epoch
    if mesh is None:  # JAX arrays: fit compiles the step; a mesh places them itself
        params, opt_state = to_backend((params, opt_state), args.backend)

    def local(tree):  # what is printed and saved: one copy, read with no collective
        if mesh is None:
            return tree
        from .. import scale

        return scale.local_copy(tree)

    where = ""
    if mesh is not None:
        import jax

        procs = jax.process_count()
        where = f" on {mesh.size} {mesh.devices.flat[0].platform} devices" + (
            f" in {procs} processes" if procs > 1 else ""
        )
    print(
        f"{net.name}\n{len(x_train)} training / {len(x_test)} test images, batch {args.batch}, "
        f"{name} lr {lr}{' (cosine decay to 0)' if args.lr_schedule == 'cosine' else ''}, "
        f"{args.epochs} epoch{'s' if args.epochs != 1 else ''}, "
        f"seed {args.seed}, backend {args.backend}{where}"
        + (" (whole epoch in lax.scan)" if args.scan else "")
        + (f", images shifted by up to {args.augment} pixels" if args.augment else "")
        + (f"\nresuming {args.resume} after epoch {done}" if done else "")
        + (
            f"\naccuracies and --save use the moving average of the params (decay {decay}); "
            "--average 0 turns it off"
            if decay
            else ""
        )
    )
    if images and not args.no_plot:
        print(f"the {len(params[0]['W'])} first-layer filters before training:\n")
        print(plot.filters(params[0]["W"]))

    def report(epoch, h):
        print(
            f"epoch {epoch:>3}/{args.epochs}  loss {h.epoch_loss[-1]:.4f}  "
            f"train {100 * h.train_acc[-1]:6.2f}%  test {100 * h.test_acc[-1]:6.2f}%  "
            f"{h.epoch_time[-1]:6.2f} s",
            flush=True,
        )

    def checkpoint(epoch, params, opt_state):
        if main and args.checkpoint:
            save_run(args.checkpoint, params, opt_state, epoch, config)

    try:
        # A diverging run is reported below in one line; NumPy's overflow warnings would
        # only repeat it.
        with np.errstate(over="ignore", invalid="ignore"):
            last, opt_state, hist = fit(
                net, params, (x_train, t_train), (x_test, t_test),
                optimizer=optimizer, epochs=args.epochs, batch_size=args.batch,
                seed=args.seed, scan=args.scan, on_epoch=report, mesh=mesh,
                initial_epoch=done, opt_state=opt_state, checkpoint=checkpoint,
                progress=None if main else False,
                augment=random_shift(args.augment) if args.augment else None,
            )  # fmt: skip
    except Interrupted as stop:
        kept = ""
        if args.save and stop.epochs_done > done:
            if main:  # process 0 writes for all
                save_params(args.save, scored_params(*local((stop.params, stop.opt_state))))
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
    if not main:
        return 0  # the rest is printing and saving: process 0's
    last, opt_state = local((last, opt_state))
    params = scored_params(last, opt_state)  # what fit scored
    note = ""
    if decay:
        plain = 100 * accuracy(net, last, x_test, t_test)
        note = f" (averaged params; the last iterate itself: {plain:.2f}%)"
    print(f"test accuracy {100 * hist.test_acc[-1]:.2f}% on {scored} test images{note}")
    if args.save:
        save_params(args.save, params)
        print(f"params saved to {args.save}")
    if args.checkpoint:
        print(f"run checkpoint (epoch {args.epochs}) in {args.checkpoint}; --resume it to go on")
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
        if images:
            print("the filters after training:\n")
            print(plot.filters(np.asarray(params[0]["W"])))
        preds = predict(net, params, x_test)
        wrong = np.flatnonzero(preds != t_test)
        if len(wrong):  # as the book's chapter 8 shows them
            shown = wrong[:12]
            among = f" of the first {len(x_test)}" if args.test_subset else ""
            print(f"{len(wrong)}{among} test digits misclassified; the first {len(shown)}, as "
                  "prediction (is label):\n")  # fmt: skip
            captions = [f"{preds[i]} (is {t_test[i]})" for i in shown]
            print(plot.images(x_test[shown], captions))
        else:
            print(f"{scored} test digits classified right")
    return 0
