"""Train the book's SimpleConvNet on MNIST with terminal plots and pictures of its filters.

The same as ``funcnet train --model convnet``: Conv(30 filters 5×5) – Relu – MaxPool 2×2 –
Dense 100 – Relu – Dense 10, weights N(0, 0.01²), Adam lr 0.001, batch 100, 20 epochs;
prints per-epoch loss and accuracies, the 30 first-layer filters before and after
training, the loss and accuracy curves, and a few test digits with their predictions.

    python examples/train_convnet.py --data-dir ../shared/mnist --backend jax --scan
    python examples/train_convnet.py --epochs 2 --subset 6000    # a quick look on NumPy
"""

import sys

from funcnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "--model", "convnet", *sys.argv[1:]]))
