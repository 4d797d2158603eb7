"""``funcnet eval``: a saved model on the MNIST test set: accuracy, confusion matrix, the
digits it got wrong."""

from __future__ import annotations

import sys

import numpy as np

from . import one_line


def run(args) -> int:
    from .. import models, plot
    from ..checkpoints import load_params
    from ..data import MNISTError, load_mnist
    from ..train import predict

    convnet = args.model == "convnet"
    net = models.simple_convnet() if convnet else models.two_layer_net(args.hidden)
    like = net.init(0, (-1, 1, 28, 28) if convnet else (-1, 784))[1]
    try:
        params = load_params(args.load, like)
    except ValueError as e:
        print(f"funcnet eval: {e} (is it a --model {args.model} checkpoint?)", file=sys.stderr)
        return 1
    try:
        _, (x_test, t_test) = load_mnist(args.data_dir, flatten=not convnet)
    except MNISTError as e:
        print(f"funcnet eval: {one_line(e)}", file=sys.stderr)
        return 2
    preds = predict(net, params, x_test)
    right = preds == t_test
    print(f"{net.name} from {args.load}")
    print(f"test accuracy {100 * right.mean():.2f}% on all {len(x_test)} test images")
    counts = np.zeros((10, 10), dtype=np.int64)
    np.add.at(counts, (t_test, preds), 1)
    color = False if args.no_color else None
    print("\nconfusion matrix (rows: true digit, columns: predicted):\n")
    print(plot.confusion(counts, color=color))
    wrong = np.flatnonzero(~right)
    if not args.no_plot and len(wrong):
        shown = wrong[: args.show]
        print(f"\n{len(wrong)} misclassified; the first {len(shown)}:\n")
        captions = [f"{preds[i]} (is {t_test[i]})" for i in shown]
        print(plot.images(x_test[shown], captions))
    return 0
