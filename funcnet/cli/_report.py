"""What a ``funcnet train`` run prints: the header, a line per epoch, the final line and
the plots.  Each function returns text or prints one thing; none decides the run."""

from __future__ import annotations

import numpy as np

from ._flags import AVERAGE, RESUME, SAVE


def _scored(args, data) -> str:
    n = len(data.test[0])
    return f"the first {n}" if args.test_subset else f"all {n}"


def header(args, net, data, mesh, done: int, unit: str) -> str:
    """The net, the data, every setting that shapes the run, and where it runs."""
    where = ""
    if mesh is not None:
        import jax

        procs = jax.process_count()
        where = f" on {mesh.size} {mesh.devices.flat[0].platform} devices" + (
            f" in {procs} processes" if procs > 1 else ""
        )
    cosine = " (cosine decay to 0)" if args.lr_schedule == "cosine" else ""
    return (
        f"{net.name}\n{len(data.train[0])} training / {len(data.test[0])} test {unit}, "
        f"batch {args.batch}, {args.optimizer} lr {args.lr}{cosine}, "
        f"{args.epochs} epoch{'s' if args.epochs != 1 else ''}, "
        f"seed {args.seed}, backend {args.backend}{where}"
        + (" (whole epoch in lax.scan)" if args.scan else "")
        + (f", images shifted by up to {args.augment} pixels" if args.augment else "")
        + (f", gradients clipped to norm {args.clip}" if getattr(args, "clip", None) else "")
        + (", questions read backwards" if getattr(args, "reverse", None) else "")
        + (f"\nresuming {args.resume} after epoch {done}" if done else "")
        + (
            f"\naccuracies and {SAVE} use the moving average of the params (decay "
            f"{args.average}); {AVERAGE} 0 turns it off"
            if args.average
            else ""
        )
    )


def filters(params, when: str) -> str | None:
    """The first layer's filters drawn, when the net starts with a convolution."""
    first = params[0] if isinstance(params, list | tuple) and len(params) else None
    if not isinstance(first, dict) or np.ndim(first.get("W")) != 4:
        return None
    from .. import plot

    count = f" {len(first['W'])} first-layer" if when == "before" else ""
    return f"the{count} filters {when} training:\n\n{plot.filters(np.asarray(first['W']))}"


def epoch_line(epochs: int):
    """``report(epoch, history)`` for ``fit``'s ``on_epoch``: one line per epoch."""

    def report(epoch, h):
        print(
            f"epoch {epoch:>3}/{epochs}  loss {h.epoch_loss[-1]:.4f}  "
            f"train {100 * h.train_acc[-1]:6.2f}%  test {100 * h.test_acc[-1]:6.2f}%  "
            f"{h.epoch_time[-1]:6.2f} s",
            flush=True,
        )

    return report


def summary(args, net, last, hist, data, unit: str, saved_to: str | None = None) -> str:
    """The final line: the test accuracy of what was scored (with the last iterate's beside
    it when the params are averaged), then where the run was kept."""
    note = ""
    if args.average:
        from ..tasks import TASKS

        plain = 100 * TASKS[args.task].metrics["accuracy"](net, last, *data.test)
        note = f" (averaged params; the last iterate itself: {plain:.2f}%)"
    scored = f"{100 * hist.test_acc[-1]:.2f}% on {_scored(args, data)} test {unit}"
    lines = [f"test accuracy {scored}{note}"]
    if saved_to:  # args.save, or where the params went when that write failed
        lines.append(f"params saved to {saved_to}")
    if args.checkpoint:
        lines.append(
            f"run checkpoint (epoch {args.epochs}) in {args.checkpoint}; {RESUME} it to go on"
        )
    return "\n".join(lines)


def plots(args, net, params, hist, data, task) -> str:
    """The loss and accuracy curves, the filters after training and the task's examples."""
    from .. import plot
    from ..experiments import block_means

    # ≤ 200 points: plotext draws braille cells, not data points
    smooth = block_means(hist.step_loss, max(1, len(hist.step_loss) // 200))
    color = False if args.no_color else None
    parts = [
        plot.lines({"loss": smooth}, "training loss", xlabel="step", ylabel="loss", color=color),
        plot.lines(
            {"train": hist.train_acc, "test": hist.test_acc}, "accuracy", xlabel="epoch",
            ylabel="accuracy", color=color,
        ),
        filters(params, "after"),
    ]  # fmt: skip
    if task.show is not None:
        partial = bool(args.test_subset)
        parts.append(
            task.show(net, params, data.test, partial=partial, color=color,
                      model_args=data.model_args)
        )  # fmt: skip
    return "\n".join(p for p in parts if p is not None)
