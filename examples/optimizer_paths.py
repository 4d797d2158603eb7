"""The book's optimizer_compare_naive.py: four optimizers on f(x, y) = x²/20 + y².

From (-7, 2), 30 steps each with the book's learning rates: SGD 0.95, Momentum 0.1 (β 0.9),
AdaGrad 1.5, Adam 0.3.  f is 20 times flatter along x than along y, so SGD zig-zags in y
while crawling in x; Momentum overshoots and swings around the minimum; AdaGrad and Adam
rescale each coordinate and head almost straight for (0, 0).  The optimizers are
``funcnet.optim``'s; the gradient is written by hand, (x/10, 2y), and checked against
``jax.grad``.  Prints all four paths on one plot and the final points.

    python examples/optimizer_paths.py
    python examples/optimizer_paths.py --steps 100 --no-plot
"""

from __future__ import annotations

import argparse

import numpy as np

from funcnet import optim, plot
from funcnet.cli import run_script

START = (-7.0, 2.0)
# The book's rates, tuned by hand so that each method's path looks its best on this f.
BOOK_RATES = {"SGD": 0.95, "Momentum": 0.1, "AdaGrad": 1.5, "Adam": 0.3}


def f(p):
    """x²/20 + y², for a NumPy or JAX array p = (x, y)."""
    return p[0] ** 2 / 20.0 + p[1] ** 2


def grad_f(p: np.ndarray) -> np.ndarray:
    return np.array([p[0] / 10.0, 2.0 * p[1]])


def optimizers(rates: dict[str, float] | None = None) -> dict[str, optim.GradientTransformation]:
    """The book's four optimizers (Momentum with β 0.9) at its learning rates or ``rates``."""
    return {name: optim.by_name(name, lr) for name, lr in {**BOOK_RATES, **(rates or {})}.items()}


def descend(opt: optim.GradientTransformation, start=START, steps: int = 30) -> np.ndarray:
    """The points visited, start included: shape (steps + 1, 2)."""
    p = np.array(start, dtype=np.float64)
    state = opt.init(p)
    points = [p]
    for _ in range(steps):
        updates, state = opt.update(grad_f(p), state, p)
        p = optim.apply_updates(p, updates)
        points.append(p)
    return np.stack(points)


def run(steps: int = 30, start=START, rates: dict[str, float] | None = None) -> dict:
    """``{"paths": {name: (steps+1, 2) array}, "final": {name: (x, y)}, "f": {name: final f},
    "values": {name: f at every point}, "f_start", "grad_check": max |hand − jax.grad| over
    every visited point}``."""
    import jax

    paths = {name: descend(opt, start, steps) for name, opt in optimizers(rates).items()}
    jgrad = jax.grad(f)
    # A float32 jax.grad (the default) agrees with the float64 hand gradient to ~1e-7.
    grad_check = max(
        float(np.max(np.abs(grad_f(p) - np.asarray(jgrad(p)))))
        for pts in paths.values()
        for p in pts
    )
    return {
        "paths": paths,
        "final": {k: (float(v[-1, 0]), float(v[-1, 1])) for k, v in paths.items()},
        "f": {k: float(f(v[-1])) for k, v in paths.items()},
        "values": {k: np.array([f(q) for q in v]) for k, v in paths.items()},
        "f_start": float(f(np.asarray(start, dtype=np.float64))),
        "grad_check": grad_check,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    for name, lr in BOOK_RATES.items():
        ap.add_argument(f"--lr-{name.lower()}", type=float, default=lr, help=f"{name} rate")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    rates = {name: getattr(args, f"lr_{name.lower()}") for name in BOOK_RATES}
    r = run(args.steps, rates=rates)
    print(
        f"f(x, y) = x²/20 + y² from ({START[0]:g}, {START[1]:g}), f = {r['f_start']:.4f}; "
        f"{args.steps} steps"
    )
    if not args.no_plot:
        title = "optimizer paths on x²/20 + y²"
        print(plot.path(r["paths"], title, labels=("x", "y"), f=f, width=72))
        # log10: the four curves span five decades by the end.
        logs = {k: np.log10(np.maximum(v, 1e-300)) for k, v in r["values"].items()}
        xs = np.arange(args.steps + 1)
        series = {k: (xs, v) for k, v in logs.items()}
        print(plot.lines(series, "log10 f(x, y) per step", xlabel="step", ylabel="log10 f"))
    for name, (x, y) in r["final"].items():
        print(f"{name:<9} lr {rates[name]:<5g} final ({x:9.5f}, {y:9.5f})   f = {r['f'][name]:.3e}")
    print(f"hand gradient vs jax.grad: max |Δ| = {r['grad_check']:.1e}")
    return r


if __name__ == "__main__":
    run_script(main)
