"""``funcnet profile``: where a training step's time goes, layer by layer, as bars."""

from __future__ import annotations

from ._flags import (
    BACKEND,
    BATCH,
    HIDDEN,
    MODEL,
    NO_COLOR,
    REPEATS,
    add_command,
    default_task_setting,
)


def _models() -> tuple[str, ...]:
    from ..models import MODELS

    return tuple(n for n, m in MODELS.items() if m.input_shape is not None)


FLAGS = (
    MODEL.but(help="the network to time", default="deep", choices=_models, per_task=False),
    HIDDEN.but(default=default_task_setting("hidden"), per_task=False),
    BACKEND.but(
        help="numpy: the eager layers; jax: each layer's forward and backward jitted on its own",
        choices=(*BACKEND.choices, "both"), default="both",
    ),
    BATCH.but(help="images per step", default=100, per_task=False),
    REPEATS,
    NO_COLOR,
)  # fmt: skip


def add_parser(subparsers) -> None:
    add_command(subparsers, "profile", FLAGS).set_defaults(run=run)


def run(args) -> int:
    from .. import models, plot
    from ..profile import profile

    backends = ["numpy", "jax"] if args.backend == "both" else [args.backend]
    net, shape = models.by_name(args.model, hidden=args.hidden)
    print(
        f"{net.name}: median forward (train mode) and backward time of every layer over "
        f"{args.repeats} steps of batch {args.batch}, after one warm-up step"
    )
    color = False if args.no_color else None
    for backend in backends:
        times = profile(
            lambda wrap: models.by_name(args.model, hidden=args.hidden, wrap=wrap)[0],
            shape, batch=args.batch, backend=backend, repeats=args.repeats,
        )  # fmt: skip
        total = sum(t.forward + t.backward for t in times)
        where = "NumPy" if backend == "numpy" else "JAX, each layer's programs on their own"
        print(f"\n{where}: {1e3 * total:.1f} ms per step in the layers\n")
        labels = [f"{i:>2} {t.name}" for i, t in enumerate(times)]
        series = {
            "forward": [1e3 * t.forward for t in times],
            "backward": [1e3 * t.backward for t in times],
        }
        print(plot.bars(labels, series, unit=" ms", color=color))
        top = max(times, key=lambda t: t.forward + t.backward)
        share = (top.forward + top.backward) / total if total else 0.0
        print(f"\nslowest: {top.name}, {100 * share:.0f}% of the step")
    return 0
