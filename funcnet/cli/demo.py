"""``funcnet demo``: gradient descent on f(x) = x1² + x2² with terminal plots."""

from __future__ import annotations

import sys

import numpy as np

from ._flags import GRAD, LR, NO_COLOR, NO_PLOT, STEPS, X0, add_command

FLAGS = (X0, LR.but(default=0.1, per_task=False), STEPS, GRAD, NO_PLOT, NO_COLOR)


def square(x):
    """f(x) = x1² + x2² (the book's function_2), for NumPy or JAX arrays."""
    return x[0] ** 2 + x[1] ** 2


def add_parser(subparsers) -> None:
    add_command(subparsers, "demo", FLAGS).set_defaults(run=run)


def run(args) -> int:
    from .. import plot
    from ..numerical import gradient_descent

    x0 = np.array(args.x0, dtype=np.float64)
    grad = None
    if args.grad == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)  # compare in float64, like the numerical path
        grad = jax.grad(square)
    try:
        x, hist = gradient_descent(square, x0, lr=args.lr, steps=args.steps, grad=grad)
        if args.grad == "jax":
            x_num, h_num = gradient_descent(square, x0, lr=args.lr, steps=args.steps)
    except FloatingPointError as e:
        # On x1² + x2² a step is x ← x − lr·2x = (1 − 2·lr)·x: it shrinks for 0 < lr < 1.
        print(
            f"funcnet demo: {e} (on x1² + x2² each step multiplies x by 1 − 2·lr = "
            f"{1 - 2 * args.lr:g}; {LR} below 1 converges)",
            file=sys.stderr,
        )
        return 1
    points = np.stack(hist.points)
    print(
        f"gradient descent on f(x) = x1² + x2² from ({x0[0]:g}, {x0[1]:g}), "
        f"lr {args.lr}, {args.steps} steps"
    )
    print(f"gradient: {'jax.grad' if grad else 'numerical (central differences, h=1e-4)'}")
    print(f"final x = ({x[0]:.4f}, {x[1]:.4f})   f(x) = {hist.values[-1]:.7f}")
    if args.grad == "jax":
        diff = float(np.max(np.abs(points - np.stack(h_num.points))))
        print(
            f"numerical-gradient run: x = ({x_num[0]:.4f}, {x_num[1]:.4f}); "
            f"max |Δ| between the two paths {diff:.1e}"
        )
    color = False if args.no_color else None
    if not args.no_plot:
        print(
            plot.lines(
                {"f(x)": (np.arange(len(hist.values)), hist.values)},
                "f over the steps",
                xlabel="step",
                ylabel="f",
                color=color,
            )
        )
        print(plot.path(points, "path on the (x1, x2) plane", f=square, color=color))
    return 0
