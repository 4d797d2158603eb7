"""Terminal plots (plotext) that return strings, so callers decide where they go and tests
can read them.

Every series has its own marker, so plots read without colour; the legend is a line under
the canvas (marker, name), so it never covers data.  Colour comes on at a terminal, or with
``FORCE_COLOR``; ``NO_COLOR`` or ``color=False`` turns it off.  x values that are all
integers (epochs, steps) get integer ticks.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import plotext as plt

MARKERS = ("•", "x", "+", "o", "*", "#", "%", "@")
COLORS = ("blue", "red", "green", "magenta", "cyan", "orange", "gray", "yellow")
_SHADES = " .:-=+*#%@"


def use_color(color: bool | None = None, stream=None) -> bool:
    """``color`` if given; else off with ``NO_COLOR``, on with ``FORCE_COLOR``, and else on
    when ``stream`` (stdout) is a terminal (https://no-color.org, https://force-color.org)."""
    if color is not None:
        return color
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return (stream or sys.stdout).isatty()


def _start(title: str, xlabel: str, ylabel: str, width: int, height: int) -> None:
    plt.clf()
    plt.theme("clear")
    plt.plotsize(width, height)
    plt.title(title)
    plt.xlabel(xlabel)
    plt.ylabel(ylabel)


def _legend(entries: Sequence[tuple[str, str, str]], color: bool) -> str:
    """The legend as one line under the canvas: ``marker name`` per entry."""
    cells = [
        (plt.colorize(marker, hue) if color else marker) + " " + name
        for marker, hue, name in entries
    ]
    return "  " + "   ".join(cells)


def _finish(color: bool | None, legend: Sequence[tuple[str, str, str]]) -> str:
    on = use_color(color)
    out = plt.build()
    plt.clf()
    out = out if on else plt.uncolorize(out)
    return out + ("\n" + _legend(legend, on) if legend else "")


def _integer_ticks(xs_all: list[float], most: int = 10) -> None:
    """Integer ticks for integer x values (epochs, steps): never 1.0 5.8 10.5."""
    lo, hi = int(min(xs_all)), int(max(xs_all))
    step = max(1, math.ceil((hi - lo + 1) / most))
    nice = next((n * 10**k for k in range(12) for n in (1, 2, 5) if n * 10**k >= step), step)
    first = -(-lo // nice) * nice if lo % nice else lo
    ticks = sorted({lo, *range(first, hi + 1, nice), hi})
    plt.xticks(ticks, [str(t) for t in ticks])


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
    """One line per entry, ``{"train": ys}`` (x = 1, 2, ...) or ``{"train": (xs, ys)}``, each
    with its own marker and colour.  Non-finite points are left out (and counted in the
    legend); with one point per series there is no line to draw, and the values are listed
    instead."""
    data = {}
    for label, values in series.items():
        if isinstance(values, tuple) and len(values) == 2:
            xs, ys = (np.asarray(v, dtype=float).ravel() for v in values)
        else:
            ys = np.asarray(values, dtype=float).ravel()
            xs = np.arange(1, len(ys) + 1, dtype=float)
        keep = np.isfinite(xs) & np.isfinite(ys)
        data[label] = (xs[keep], ys[keep], int((~keep).sum()))
    if max((len(d[0]) for d in data.values()), default=0) <= 1:
        shown = ", ".join(
            f"{label} {ys[0]:.6g} at {xlabel or 'x'} {xs[0]:g}" if len(xs) else f"{label} (none)"
            for label, (xs, ys, _) in data.items()
        )
        return f"{title}: {shown} (one point each: nothing to draw a line through)"
    _start(title, xlabel, ylabel, width, height)
    legend = []
    for (label, (xs, ys, dropped)), marker, hue in zip(
        data.items(), MARKERS * len(data), COLORS * len(data), strict=False
    ):
        if len(xs):
            plt.plot(xs.tolist(), ys.tolist(), marker=marker, color=hue)
        legend.append(
            (marker, hue, label + (f" ({dropped} non-finite left out)" if dropped else ""))
        )
    every_x = [x for xs, _, _ in data.values() for x in xs.tolist()]
    if every_x and all(float(x).is_integer() for x in every_x):
        _integer_ticks(every_x)
    if ylim is not None:
        plt.ylim(*ylim)
    return _finish(color, legend)


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


def _contours(f: Callable, box, levels, width: int, height: int) -> tuple[list, list]:
    """Points where f crosses one of ``levels`` on a grid of the canvas's resolution."""
    (x0, x1), (y0, y1) = box
    gx, gy = np.meshgrid(np.linspace(x0, x1, 2 * width), np.linspace(y0, y1, 4 * height))
    values = np.vectorize(lambda a, b: float(f(np.array([a, b]))))(gx, gy)
    xs, ys = [], []
    for level in levels:
        side = values > level
        edge = np.zeros_like(side)
        edge[:, 1:] |= side[:, 1:] != side[:, :-1]
        edge[1:, :] |= side[1:, :] != side[:-1, :]
        xs += gx[edge].tolist()
        ys += gy[edge].tolist()
    return xs, ys


def path(
    points,
    title: str = "",
    *,
    labels: tuple[str, str] = ("x1", "x2"),
    f: Callable | None = None,
    minimum: tuple[float, float] | None = (0.0, 0.0),
    width: int = 60,
    height: int = 22,
    color: bool | None = None,
) -> str:
    """2-D paths, each with its own marker, their start (S) and end (E) drawn over them, the
    ``minimum`` (X), and with ``f`` given, contour rings of f at f(start)/4ᵏ, as the book
    draws them.

    ``points`` is one path of shape (steps, 2), or a mapping of names to such paths.
    """
    paths = dict(points) if isinstance(points, Mapping) else {"path": points}
    paths = {name: np.asarray(p, dtype=float).reshape(-1, 2) for name, p in paths.items()}
    finite = [p[np.isfinite(p).all(axis=1)] for p in paths.values()]
    every = np.concatenate([*finite, np.zeros((0, 2))])
    if minimum is not None:
        every = np.vstack([every, [minimum]])
    if not len(every):
        return f"{title}: no finite point to draw"
    lo, hi = every.min(axis=0), every.max(axis=0)
    pad = np.maximum((hi - lo) * 0.08, 1e-9)
    box = ((lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1]))
    _start(title, labels[0], labels[1], width, height)
    plt.xlim(*box[0])
    plt.ylim(*box[1])
    legend = []
    start = finite[0][0] if len(finite[0]) else None
    if f is not None and start is not None:
        top = float(f(start))
        if np.isfinite(top) and top > 0:
            rx, ry = _contours(f, box, [top / 4**k for k in range(6)], width, height)
            plt.scatter(rx, ry, marker="·", color="gray")
            legend.append(("·", "gray", "f = f(start)/4ᵏ"))
    for (name, p), marker, hue in zip(
        zip(paths, finite, strict=True), MARKERS * len(paths), COLORS * len(paths), strict=False
    ):
        if len(p):
            plt.plot(p[:, 0].tolist(), p[:, 1].tolist(), marker=marker, color=hue)
        legend.append((marker, hue, name))
    # Drawn last, so that no path hides them.
    if minimum is not None:
        plt.scatter([minimum[0]], [minimum[1]], marker="X", color="black")
    ends = [p[-1] for p in finite if len(p)]
    if ends:  # over the minimum: where a run ends is what it reached
        plt.scatter([e[0] for e in ends], [e[1] for e in ends], marker="E", color="red")
    if start is not None:
        plt.scatter([start[0]], [start[1]], marker="S", color="green")
    legend += [("S", "green", "start"), ("E", "red", "end")]
    if minimum is not None:
        legend.append(("X", "black", f"minimum ({minimum[0]:g}, {minimum[1]:g})"))
    return _finish(color, legend)


def confusion(counts, labels: Sequence[str] | None = None, *, color: bool | None = None) -> str:
    """A confusion matrix (rows: true class, columns: predicted) as a text heatmap: each count
    with a shade of its share of the row (``_SHADES``), on a coloured background where colour
    is on.  The diagonal is what was right."""
    counts = np.asarray(counts, dtype=np.int64)
    k = counts.shape[0]
    labels = [str(i) for i in range(k)] if labels is None else list(labels)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    on = use_color(color)
    width = max(5, len(str(counts.max())) + 2)
    head = "true \\ pred " + "".join(f"{lab:>{width + 1}}" for lab in labels)
    rows = [head]
    for i in range(k):
        cells = []
        for j in range(k):
            shade = _SHADES[min(len(_SHADES) - 1, int(share[i, j] * (len(_SHADES) - 1) + 0.5))]
            cell = f"{counts[i, j]:>{width}}{shade}"
            if on and counts[i, j]:
                cell = plt.colorize(cell, "green" if i == j else "red")
            cells.append(cell)
        rows.append(f"{labels[i]:>11} " + "".join(cells))
    return "\n".join(rows)


def colored(text: str, hue: str, color: bool | None = None) -> str:
    """``text`` in colour ``hue`` where colour is on (``use_color``), else as it is."""
    return plt.colorize(text, hue) if use_color(color) else text


def heatmap(values, row_labels: Sequence[str], col_labels: Sequence[str], *,
            top: float | None = None, color: bool | None = None) -> str:  # fmt: skip
    """A matrix of values ≥ 0 as text: each cell two shade characters (``_SHADES``, blank
    for 0 up to ``@`` for ``top``, by default the largest value), a row label on the left
    and a column label over each cell; with colour on, each row's largest cell in red.
    Reads without colour."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"heatmap: values of shape {values.shape} for {len(row_labels)} row and "
            f"{len(col_labels)} column labels"
        )
    if top is None:
        top = float(values.max()) if values.size and values.max() > 0 else 1.0
    levels = np.clip(np.rint(values / top * (len(_SHADES) - 1)), 0, len(_SHADES) - 1)
    on = use_color(color)
    pad = max((len(str(r)) for r in row_labels), default=0)
    out = [" " * (pad + 1) + "".join(f"{c!s:>2}" for c in col_labels)]
    for label, row, vals in zip(row_labels, levels.astype(int), values, strict=True):
        cells = [_SHADES[k] * 2 for k in row]
        if on and len(cells):
            j = int(vals.argmax())
            cells[j] = plt.colorize(cells[j], "red")
        out.append(f"{label!s:>{pad}} " + "".join(cells))
    out.append(f"shades {_SHADES!r}: 0 .. {top:.2f}")
    return "\n".join(out)


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


def bars(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    unit: str = "",
    width: int | None = None,
    color: bool | None = None,
) -> str:
    """Horizontal stacked bars, one row per label: each series' share drawn with its own
    marker (and colour where colour is on), the row's total at its end, the legend under it.
    Values are lengths (times, counts): non-negative and finite."""
    names = list(series)
    values = np.asarray([series[n] for n in names], dtype=float).reshape(len(names), len(labels))
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("bars: values must be finite and >= 0")
    totals = values.sum(axis=0)
    label_w = max(map(len, labels), default=0)
    cols = width or shutil.get_terminal_size((100, 24)).columns
    bar_w = max(10, cols - label_w - 14 - len(unit))
    scale = bar_w / max(totals.max(initial=0.0), 1e-300)
    on = use_color(color)
    rows = []
    for j, label in enumerate(labels):
        cells, edge = [], 0.0
        for i in range(len(names)):
            # Cumulative rounding: the segments add up to the rounded total.
            end = edge + values[i, j] * scale
            seg = MARKERS[i % len(MARKERS)] * (round(end) - round(edge))
            cells.append(plt.colorize(seg, COLORS[i % len(COLORS)]) if on and seg else seg)
            edge = end
        rows.append(f"{label:<{label_w}} |{''.join(cells)} {totals[j]:.3g}{unit}")
    legend = "   ".join(f"{MARKERS[i % len(MARKERS)]} {n}" for i, n in enumerate(names))
    return "\n".join([*rows, " " * label_w + "  " + legend])


__all__ = [
    "COLORS",
    "MARKERS",
    "bars",
    "colored",
    "confusion",
    "filters",
    "heatmap",
    "image_text",
    "images",
    "lines",
    "loss_comparison",
    "path",
    "use_color",
]
