"""The ``funcnet`` command: ``check`` (gradient table), ``demo`` (gradient descent)."""

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

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
