"""Train the book's two-layer net (784-100-10) on MNIST with terminal plots.

The same as ``funcnet train``: weights N(0, 0.01²), batch 100, SGD lr 0.1, 20 epochs;
prints per-epoch loss and accuracies, the loss and accuracy curves, and a few test digits.

    python examples/train_mnist.py --data-dir ../shared/mnist
    python examples/train_mnist.py --backend jax --epochs 5 --hidden 50
"""

import sys

from funcnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
