"""``funcnet train``: a model of ``models.MODELS`` on a task of ``tasks.TASKS`` (MNIST:
the two-layer net, SimpleConvNet or the deep convnet; tiny Shakespeare: the character GPT),
with terminal plots; on one device, or data parallel over many devices and processes
(``funcnet.parallel``).

This module runs the steps in order; ``_settings`` resolves and checks the flags,
``_setup`` builds what the run starts from, ``_report`` writes what it prints.  A task with
a trainer of its own (counted in iterations) runs through ``_iterations``."""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from .. import _signals
from . import _flags as flag
from . import _iterations, _report, _settings, _setup
from ._flags import add_command
from ._process import one_line
from ._setup import Stop, local

FLAGS = (
    flag.TASK, flag.MODEL, flag.HIDDEN, flag.WORDVEC, flag.REVERSE, flag.CLIP, flag.EPOCHS,
    flag.OPTIMIZER, flag.LR, flag.LR_SCHEDULE,
    flag.AUGMENT, flag.AVERAGE, flag.BATCH, flag.SEED, flag.WEIGHT_STD, flag.BACKEND, flag.SCAN,
    flag.DATA_DIR, flag.SUBSET, flag.TEST_SUBSET, flag.SAVE, flag.CHECKPOINT, flag.RESUME,
    flag.NO_PLOT, flag.NO_COLOR,
    flag.ITERS, flag.EVAL_EVERY, flag.LAYERS, flag.HEADS, flag.WIDTH, flag.CONTEXT, flag.DROPOUT,
    flag.DEVICES, flag.COORDINATOR, flag.NUM_PROCESSES, flag.PROCESS_ID, flag.CLUSTER,
    flag.PEER_TIMEOUT,
)  # fmt: skip


def add_parser(subparsers) -> None:
    add_command(subparsers, "train", FLAGS).set_defaults(run=run)


def run(args) -> int:
    args = _settings.check(_settings.resolved(args))  # refusals: before any work
    mesh, main = None, True
    if args.devices or args.coordinator or args.cluster:
        from .. import parallel

        # Before any JAX computation: the host device count, then the processes.
        if args.devices:
            parallel.use_cpu_devices(args.devices)
        if args.coordinator or args.cluster:
            try:
                parallel.initialize(
                    args.coordinator, args.num_processes, args.process_id,
                    timeout=args.peer_timeout, name="funcnet train",
                )  # fmt: skip
                same = ("epochs", "devices", "scan", "weight_std", "num_processes")
                parallel.check_same_settings(
                    {**_settings.settings(args), **{k: getattr(args, k) for k in same}},
                    args.peer_timeout,
                )
            except (ValueError, RuntimeError) as e:  # no cluster found, no peer in time
                hint = (
                    f" ({flag.CLUSTER}: is this a SLURM or Open MPI job?)" if args.cluster else ""
                )
                print(f"funcnet train: cannot start the processes: {one_line(e)}{hint}",
                      file=sys.stderr)  # fmt: skip
                return 1
        try:
            mesh = parallel.data_mesh(args.devices)
        except ValueError as e:
            print(f"funcnet train: {e}", file=sys.stderr)
            return 1
        main = parallel.is_main()
    # Process 0 alone prints; the others compute the same and keep quiet (errors still show).
    quiet = open(os.devnull, "w") if not main else None  # closed below
    try:
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
            if _iterations.counted_in_iterations(args):
                return _iterations.train(args)
            return _train(args, mesh, main)
    except Stop as stop:
        print(f"funcnet train: {stop}", file=sys.stderr)
        return stop.code
    finally:
        if quiet:
            quiet.close()


def _train(args, mesh, main: bool) -> int:
    from ..augment import random_shift
    from ..checkpoints import save_run_or_fallback
    from ..losses import softmax_cross_entropy
    from ..tasks import TASKS
    from ..train import Interrupted, Resume, fit, scored_params, to_backend

    task = TASKS[args.task]
    data = _setup.data(args, task)
    (x_train, t_train), (x_test, t_test) = data.train, data.test
    net, params = _setup.model(args, data)
    optimizer = _setup.optimizer(args, len(x_train) // args.batch)
    params, opt_state, done = _setup.restored(args, params, optimizer)
    if mesh is None:  # JAX arrays: fit compiles the step; a mesh places them itself
        params, opt_state = to_backend((params, opt_state), args.backend)
    print(_report.header(args, net, data, mesh, done, task.unit))
    drawn = None if args.no_plot else _report.filters(params, "before")
    if drawn:
        print(drawn)
    report = _report.epoch_line(args.epochs)
    if args.backend == "numpy":  # BLAS threads for these products on this machine's load
        from .._threads import fitted_blas

        blas, line = fitted_blas(params, x_train, args.batch), report

        def report(epoch, hist):
            blas.refit()
            line(epoch, hist)

    config = _settings.settings(args)

    def checkpoint(epoch, params, opt_state):
        if main and args.checkpoint:
            save_run_or_fallback(args.checkpoint, params, opt_state, epoch, config, "funcnet train")

    try:
        # A diverging run is reported below in one line; NumPy's overflow warnings would
        # only repeat it.
        with np.errstate(over="ignore", invalid="ignore"):
            last, opt_state, hist = fit(
                net, params, (x_train, t_train), (x_test, t_test),
                loss=task.loss or softmax_cross_entropy, metrics=task.metrics,
                optimizer=optimizer, epochs=args.epochs, batch_size=args.batch,
                seed=args.seed, scan=args.scan, on_epoch=report, mesh=mesh,
                resume=Resume(done, opt_state), checkpoint=checkpoint,
                progress=None if main else False,
                augment=random_shift(args.augment) if args.augment else None,
            )  # fmt: skip
    except Interrupted as stop:
        kept = ""
        if args.save and stop.epochs_done > done and not main:  # process 0 writes for all
            kept = f"; process 0 saves the params of epoch {stop.epochs_done} to {args.save}"
        elif args.save and stop.epochs_done > done:
            kept_params = scored_params(*local(mesh, (stop.params, stop.opt_state)))
            where = _save(args.save, kept_params, stop.epochs_done, config, data) or "nowhere"
            kept = f"; the params of epoch {stop.epochs_done} are saved to {where}"
        elif args.save:
            kept = "; no epoch had finished, nothing saved"
        raise Stop(130, f"interrupted after {stop.epochs_done} epoch(s){kept}") from None
    except FloatingPointError as e:
        raise Stop(1, f"{e} ({flag.LR} {args.lr}: try a smaller one)") from None
    except (ValueError, MemoryError) as e:
        raise Stop(1, str(e)) from None
    if not main:
        return 0  # the rest is printing and saving: process 0's
    try:
        # Training is over: a signal now waits until the params are written.
        with _signals.deferred():
            last, opt_state = local(mesh, (last, opt_state))
            params = scored_params(last, opt_state)  # what fit scored
            # A --save that went elsewhere (full disk, read-only folder) says where, exits 1.
            where = _save(args.save, params, args.epochs, config, data) if args.save else None
    except KeyboardInterrupt:
        kept = f"; the params are saved to {where or 'nowhere'}" if args.save else ""
        raise Stop(130, f"interrupted after all {args.epochs} epoch(s){kept}") from None
    print(_report.summary(args, net, last, hist, data, task.unit, where))
    if not args.no_plot:
        print(_report.plots(args, net, params, hist, data, task))
    return 0 if where == args.save else 1


def _save(path: str, params, epochs: int, config: dict, data) -> str | None:
    """``--save``: the params; for a task whose net is built from its data (a vocabulary),
    with what ``funcnet eval`` needs to rebuild it, the run's settings and the data's
    ``model_args``, as the file's JSON metadata (``checkpoints.save_run``, no optimizer
    state).  Where the file went: ``path``, a fallback when that write failed, or None."""
    from ..checkpoints import save_or_fallback, save_params, save_run

    if data.model_args:
        meta = {**config, **data.model_args, "saved": "params"}
        write = lambda p: save_run(p, params, (), epochs, meta)  # noqa: E731
    else:
        write = lambda p: save_params(p, params)  # noqa: E731
    return save_or_fallback(write, path, "the params", "funcnet train")
