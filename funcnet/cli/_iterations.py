"""``funcnet train`` for a task with a trainer of its own, counted in iterations
(``tasks.Task.train``; tiny Shakespeare's GPT): the header, a line per evaluation, the run
checkpoint at each one, Ctrl-C that keeps the last finished iteration, the final line and the
train/validation loss plot."""

from __future__ import annotations

import time

import numpy as np

from . import _flags as flag
from . import _settings, _setup
from ._setup import Stop


def counted_in_iterations(args) -> bool:
    from ..tasks import TASKS

    return TASKS[args.task].loop == "iterations"


def train(args) -> int:
    from .. import models
    from ..gpt import Interrupted
    from ..tasks import TASKS

    task = TASKS[args.task]
    data = _setup.data(args, task)
    net = models.build(args.model, **{**vars(args), **data.model_args})
    first = _done(args.resume) if args.resume else 0
    print(header(args, net, data, task.unit, first))
    config = _settings.settings(args)
    restore = _restore(args.resume) if args.resume else None
    try:
        # A diverging run is reported below in one line; NumPy's warnings would repeat it.
        with np.errstate(over="ignore", invalid="ignore"):
            result = task.train(
                vars(args), data, restore=restore, on_eval=_report(args, config), progress=None
            )
    except Interrupted as stop:
        raise Stop(130, _interrupted(args, stop, first, config, data)) from None
    except FloatingPointError as e:
        raise Stop(1, f"{e} ({flag.LR} {args.lr}: try a smaller one)") from None
    it, _, val = result.history[-1]
    # A --save that went elsewhere (full disk, read-only folder) says where, and exits 1.
    where = _save(args.save, result.params, it, config, data) if args.save else None
    print(f"val loss {val:.4f} after {it} iterations")
    if where:
        print(f"params saved to {where}")
    if args.checkpoint:
        print(f"run checkpoint (iteration {it}) in {args.checkpoint}")
    if not args.no_plot:
        print(_plot(args, result, first))
    return 0 if where == args.save else 1


def header(args, net, data, unit: str, first: int) -> str:
    """The net, the data and every setting that shapes the run."""
    from ..tasks import gpt_recipe

    r = gpt_recipe(vars(args))
    every = f"every {r.eval_every} iterations and after the last" if r.eval_every else "at the end"
    return (
        f"{net.name}\n{len(data.train[0])} training / {len(data.test[0])} validation {unit}; "
        f"{r.iters} iterations of {r.batch} random windows of {r.context}, {args.optimizer} lr "
        f"{r.lr} (warm-up {r.warmup}, cosine decay to {r.min_lr:g}), weight decay "
        f"{r.weight_decay}, dropout {r.dropout}; validation loss (every window of {r.context}) "
        f"{every}; seed {args.seed}, backend {args.backend}"
        + (f"\nresuming {args.resume} after iteration {first}" if first else "")
    )


def _done(path: str) -> int:
    from ..checkpoints import run_info

    return run_info(path)[0]  # readable: --resume was checked before any work


def _restore(path: str):
    """``restore(params, opt_state)`` for the trainer: the run checkpoint's, checked against
    the fresh structures."""

    def restore(params, opt_state):
        from ..checkpoints import load_run

        try:
            run = load_run(path, params, opt_state)
        except ValueError as e:
            raise Stop(1, str(e)) from None
        return run.params, run.opt_state, run.epoch

    return restore


def _report(args, config: dict):
    """``on_eval(row, params, opt_state)``: the run checkpoint, then one line."""
    from ..checkpoints import save_run

    start = time.perf_counter()
    width = len(str(args.iters))

    def on_eval(row, params, opt_state):
        it, train_loss, val = row
        if args.checkpoint:
            save_run(args.checkpoint, params, opt_state, it, config)
        print(
            f"iter {it:>{width}}/{args.iters}  train loss {train_loss:.4f}  val loss {val:.4f}  "
            f"{time.perf_counter() - start:7.1f} s",
            flush=True,
        )

    return on_eval


def _save(path: str, params, iterations: int, config: dict, data) -> str | None:
    """The trained params with what ``funcnet sample`` rebuilds the model from: the settings
    and the vocabulary, as the file's JSON metadata (``checkpoints.save_run``, no optimizer
    state).  Where the file went: ``path``, a fallback when that write failed, or None."""
    from ..checkpoints import save_or_fallback, save_run

    meta = {**config, **data.model_args, "saved": "params"}
    return save_or_fallback(
        lambda p: save_run(p, params, (), iterations, meta), path, "the params", "funcnet train"
    )


def _interrupted(args, stop, first: int, config: dict, data) -> str:
    """Ctrl-C: the params (and the run checkpoint) of the last finished iteration kept; the
    line that says so."""
    from ..checkpoints import save_run_or_fallback

    n, kept = stop.iterations, ""
    if n > first and args.save:
        where = _save(args.save, stop.params, n, config, data) or "nowhere"
        kept += f"; the params of iteration {n} are saved to {where}"
    if n > first and args.checkpoint:
        where = save_run_or_fallback(
            args.checkpoint, stop.params, stop.opt_state, n, config, "funcnet train"
        )
        kept += f"; the run checkpoint of iteration {n} is in {where or 'nowhere'}"
    if n == first and (args.save or args.checkpoint):
        kept = "; no iteration had finished, nothing saved"
    return f"interrupted after {n} iteration(s){kept}"


def _plot(args, result, first: int) -> str:
    """The training loss (means of blocks of iterations) and the validation loss."""
    from .. import plot
    from ..experiments import block_means

    every = max(1, len(result.losses) // 200)  # ≤ 200 points: plotext draws braille cells
    xs, ys = block_means(result.losses, every)
    its, _, vals = zip(*result.history, strict=True)
    label = f"train (mean of every {every})" if every > 1 else "train"
    return plot.lines(
        {label: (xs + first, ys), "validation": (list(its), list(vals))},
        "loss per character",
        xlabel="iteration",
        ylabel="loss",
        color=False if args.no_color else None,
    )
