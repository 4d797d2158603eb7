"""Linear regression with the seed's pieces: MatMul (x·W) + Bias (x + b) + mean squared error.

Synthetic data: 100 samples of 10 features, y = x·w_true + 3 + noise.  Plain gradient descent
on the pure forward/backward pair; prints the loss curve and the recovered w, b.

    python examples/linear_regression.py [--steps 200] [--lr 0.1] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

import funcnet as fn
from funcnet import plot
from funcnet.cli import run_script


def run(steps: int = 200, lr: float = 0.1, seed: int = 0, noise: float = 0.1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((100, 10))
    w_true = rng.standard_normal((10, 1))
    b_true = 3.0
    y = x @ w_true + b_true + noise * rng.standard_normal((100, 1))

    model = fn.pipeline(fn.MatMul(1), fn.Bias())
    _, params = model.init(seed, (-1, 10), dtype=np.float64)
    losses = []
    for _ in range(steps):
        pred, cache = model.forward(params, x)
        loss, lcache = fn.mean_squared_error.forward(pred, y)
        grads, _ = model.backward(cache, fn.mean_squared_error.backward(lcache), need_dx=False)
        params = tuple({k: p[k] - lr * g[k] for k in p} for p, g in zip(params, grads, strict=True))
        losses.append(float(loss))
    w, b = params[0]["W"], float(params[1]["b"][0])
    return {"losses": losses, "w": w, "b": b, "w_true": w_true, "b_true": b_true}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    r = run(args.steps, args.lr, args.seed)
    print(plot.lines({"MSE": r["losses"]}, "training loss", xlabel="step", ylabel="MSE"))
    print(f"final loss {r['losses'][-1]:.5f} (noise variance 0.01)")
    print(f"b recovered {r['b']:.4f}   true {r['b_true']:.4f}")
    print("w recovered  " + " ".join(f"{v:7.3f}" for v in r["w"].ravel()))
    print("w true       " + " ".join(f"{v:7.3f}" for v in r["w_true"].ravel()))
    print(f"max |w − w_true| = {np.max(np.abs(r['w'] - r['w_true'])):.4f}")
    return r


if __name__ == "__main__":
    run_script(main)
