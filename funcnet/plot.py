"""Terminal plots (plotext) that return strings, so callers decide where they go and tests
can read them.  Colour only when writing to a terminal (and ``NO_COLOR`` is unset)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence

import numpy as np
import plotext as plt

_SHADES = " .:-=+*#%@"


def _use_color(color: bool | None) -> bool:
    if color is not None:
        return color
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _start(title: str, xlabel: str, ylabel: str, width: int, height: int) -> None:
    plt.clf()
    plt.theme("clear")
    plt.plotsize(width, height)
    plt.title(title)
    plt.xlabel(xlabel)
    plt.ylabel(ylabel)


def _finish(color: bool | None) -> str:
    out = plt.build()
    plt.clf()
    return out if _use_color(color) else plt.uncolorize(out)


def lines(
    series: Mapping[str, Sequence[float] | tuple[Sequence[float], Sequence[float]]],
    title: str = "",
    *,
    xlabel: str = "",
    ylabel: str = "",
    width: int = 72,
    height: int = 18,
    ylim: tuple[float, float] | None = None,
    color: bool | None = None,
) -> str:
    """One line per entry: ``{"train": ys}`` (x = 1, 2, ...) or ``{"train": (xs, ys)}``."""
    _start(title, xlabel, ylabel, width, height)
    for label, data in series.items():
        if isinstance(data, tuple) and len(data) == 2:
            xs, ys = (np.asarray(d, dtype=float).tolist() for d in data)
        else:
            ys = np.asarray(data, dtype=float).tolist()
            xs = list(range(1, len(ys) + 1))
        plt.plot(xs, ys, label=label, marker="braille")
    if ylim is not None:
        plt.ylim(*ylim)
    return _finish(color)


_MARKERS = ("•", "x", "+", "o", "*", "#")


def loss_comparison(result, mark_every: int = 500, window: int = 20) -> str:
    """An ``experiments.Comparison`` as text: its loss curves (block means) on one plot, then
    the mean loss of the ``window`` steps up to every ``mark_every``-th step (or the last)."""
    losses = result.losses
    steps = len(next(iter(losses.values())))
    marks = list(range(mark_every, steps + 1, mark_every)) or [steps]
    rows = [
        lines(
            result.smoothed,
            f"training loss (mean of every {result.every} iterations)",
            xlabel="iteration",
            ylabel="loss",
        ),
        f"mean loss of the {window} iterations up to:",
        f"{'iteration':<10}" + "".join(f"{name:>10}" for name in losses),
    ]
    for m in marks:
        cells = "".join(f"{v[max(0, m - window) : m].mean():10.4f}" for v in losses.values())
        rows.append(f"{m:<10}{cells}")
    return "\n".join(rows)


def path(
    points,
    title: str = "",
    *,
    labels: tuple[str, str] = ("x1", "x2"),
    width: int = 60,
    height: int = 22,
    color: bool | None = None,
) -> str:
    """2-D paths as dots joined in order, with the start and the minimum (0, 0) marked.

    ``points`` is one path of shape (steps, 2), or a mapping of names to such paths; each
    gets its own marker so they stay apart without colour.
    """
    _start(title, labels[0], labels[1], width, height)
    paths = dict(points) if isinstance(points, Mapping) else {"path": points}
    for (name, p), marker in zip(paths.items(), _MARKERS * len(paths), strict=False):
        p = np.asarray(p, dtype=float)
        plt.plot(p[:, 0].tolist(), p[:, 1].tolist(), label=name, marker=marker)
    first = np.asarray(next(iter(paths.values())), dtype=float)
    plt.scatter([first[0, 0]], [first[0, 1]], marker="S", label="start")
    plt.scatter([0.0], [0.0], marker="X", label="minimum (0, 0)")
    return _finish(color)


def image_text(img, width: int = 28) -> list[str]:
    """A greyscale image (values in [0, 1]) as text rows, two pixel rows per text row."""
    img = np.asarray(img, dtype=float).reshape(-1, width)
    if img.shape[0] % 2:
        img = np.vstack([img, np.zeros((1, width))])
    pairs = (img[0::2] + img[1::2]) / 2
    idx = np.clip((pairs * (len(_SHADES) - 1)).round().astype(int), 0, len(_SHADES) - 1)
    return ["".join(_SHADES[i] for i in row) for row in idx]


def images(imgs, captions: Sequence[str], *, per_row: int | None = None, width: int = 28) -> str:
    """Several images side by side (as many as fit the terminal), each with a caption."""
    if per_row is None:
        per_row = max(1, (shutil.get_terminal_size((120, 24)).columns + 2) // (width + 2))
    blocks = [image_text(im, width) for im in imgs]
    out = []
    for start in range(0, len(blocks), per_row):
        chunk = blocks[start : start + per_row]
        caps = captions[start : start + per_row]
        for r in range(len(chunk[0])):
            out.append("  ".join(b[r] for b in chunk).rstrip())
        out.append("  ".join(c.center(width)[:width] for c in caps).rstrip())
        out.append("")
    return "\n".join(out)


def filters(W, *, per_row: int | None = None) -> str:
    """Convolution filters (C_out, C_in, kh, kw) as text, the first input channel of each,
    scaled to its own [min, max]; one text row per pixel row, two characters per pixel."""
    W = np.asarray(W, dtype=float)[:, 0]
    lo = W.min(axis=(1, 2), keepdims=True)
    span = np.maximum(W.max(axis=(1, 2), keepdims=True) - lo, 1e-12)
    idx = np.rint((W - lo) / span * (len(_SHADES) - 1)).astype(int)
    blocks = [["".join(_SHADES[i] * 2 for i in row) for row in f] for f in idx]
    width = 2 * W.shape[2]
    if per_row is None:
        per_row = max(1, (shutil.get_terminal_size((120, 24)).columns + 1) // (width + 1))
    out = []
    for start in range(0, len(blocks), per_row):
        chunk = blocks[start : start + per_row]
        out += [" ".join(b[r] for b in chunk) for r in range(len(chunk[0]))] + [""]
    return "\n".join(out)


__all__ = ["filters", "image_text", "images", "lines", "loss_comparison", "path"]
