"""Gradient descent on f(x) = x1² + x2² from (-3, 4), lr 0.1, 20 steps (chapter 4).

The same as ``funcnet demo``: plots f over the steps and the path on the (x1, x2) plane.

    python examples/gradient_descent.py                 # numerical gradient (h = 1e-4)
    python examples/gradient_descent.py --grad jax      # jax.grad, compared with numerical
    python examples/gradient_descent.py --lr 0.9 --steps 40 --x0 2 -1
"""

import sys

from funcnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
