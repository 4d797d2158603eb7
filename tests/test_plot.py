"""The terminal plots, read as text: a marker per series, a legend that covers nothing,
start and end on path plots, contour rings, integer ticks, colour only where it belongs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from funcnet import plot


def canvas(text: str) -> list[str]:
    """The rows inside the plot's frame (between │ … │ or ┤ … │)."""
    rows = []
    for line in text.splitlines():
        m = re.match(r"^[^│┤]*[│┤](.*)│$", line)
        if m:
            rows.append(m.group(1))
    return rows


def legend(text: str) -> str:
    return text.rstrip().splitlines()[-1]


FOUR = {name: np.linspace(k, 3 + k, 30) ** 1.2 for k, name in enumerate("abcd")}


def test_every_series_has_its_own_marker_drawn_and_in_the_legend():
    text = plot.lines(FOUR, "four", color=False)
    drawn = "".join(canvas(text))
    for marker, name in zip(plot.MARKERS, FOUR, strict=False):
        assert marker in drawn, marker
        assert f"{marker} {name}" in legend(text)
    assert len(set(plot.MARKERS[:4])) == 4


def test_the_legend_sits_under_the_canvas_and_covers_no_data():
    # Data in the top-left corner, where plotext puts its own legend.
    ys = {"train": [9.0, 9.0, 1.0, 1.0], "test": [8.9, 8.8, 1.2, 1.1]}
    text = plot.lines(ys, color=False)
    rows = canvas(text)
    assert "train" not in "".join(rows) and "test" not in "".join(rows)
    assert rows[0].lstrip().startswith(("•", "x"))  # the first points are visible
    assert legend(text).split() == ["•", "train", "x", "test"]


def test_epochs_and_steps_get_integer_ticks():
    text = plot.lines({"loss": np.linspace(1, 0.1, 10)}, color=False)
    ticks = text.splitlines()[-3].split()
    assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks), ticks
    assert ticks[0] == "1" and ticks[-1] == "10"
    many = plot.lines({"loss": (np.arange(1, 2001), np.ones(2000))}, color=False)
    ticks = many.splitlines()[-3].split()
    assert all(re.fullmatch(r"\d+", t) for t in ticks) and len(ticks) <= 12


def test_one_epoch_is_a_sentence_not_two_dots():
    text = plot.lines({"train": [0.9445], "test": [0.9457]}, "accuracy", xlabel="epoch")
    assert text.startswith("accuracy: train 0.9445 at epoch 1, test 0.9457 at epoch 1")


def test_non_finite_points_are_left_out_and_counted():
    text = plot.lines({"loss": [1.0, np.nan, 0.5, np.inf, 0.25]}, color=False)
    assert "(2 non-finite left out)" in legend(text)


def test_path_plot_shows_start_end_minimum_and_contour_rings():
    pts = np.array([[-3.0, 4.0], [-1.5, 2.0], [-0.6, 0.8], [-0.2, 0.3]])
    text = plot.path(pts, f=lambda p: p[0] ** 2 + p[1] ** 2, color=False)
    drawn = "".join(canvas(text))
    for mark in "SEX·":
        assert mark in drawn, mark
    assert legend(text).split()[:2] == ["·", "f"]
    assert "S start" in legend(text) and "E end" in legend(text)
    # S sits where (-3, 4) falls: the top-left part of the canvas.
    rows = canvas(text)
    row = next(i for i, r in enumerate(rows) if "S" in r)
    assert row < len(rows) / 3 and rows[row].index("S") < len(rows[row]) / 3


def test_several_paths_each_with_a_marker():
    paths = {"SGD": [[-7, 2], [-5, 1], [-3, 0.5]], "Adam": [[-7, 2], [-6, 0], [-2, 0]]}
    text = plot.path(paths, f=lambda p: p[0] ** 2 / 20 + p[1] ** 2, color=False)
    assert "• SGD" in legend(text) and "x Adam" in legend(text)


@pytest.mark.parametrize(
    ("env", "color", "coloured"),
    [({}, True, True), ({}, False, False), ({"NO_COLOR": "1"}, None, False),
     ({"FORCE_COLOR": "1"}, None, True), ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, None, False)],
)  # fmt: skip
def test_colour_follows_the_flag_then_no_color_then_force_color(monkeypatch, env, color, coloured):
    for name in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    text = plot.lines({"a": [1, 2, 3], "b": [3, 2, 1]}, color=color)
    codes = set(re.findall(r"\x1b\[38;5;(\d+)m", text))
    assert (len(codes) >= 2) == coloured, codes  # one colour per series
    assert ("\x1b[" in text) == coloured


def test_bars_stack_each_series_with_its_marker_and_total():
    chart = plot.bars(
        ["conv", "relu"], {"fwd": [2.0, 0.0], "bwd": [6.0, 1.0]}, unit=" ms", width=37, color=False
    )  # fmt: skip  (16 columns of bar: 2 per ms)
    conv, relu, legend = chart.splitlines()
    bar = conv.split("|")[1].rsplit(" ", 2)[0]
    assert bar == "•" * 4 + "x" * 12
    assert conv.endswith(" 8 ms") and relu.endswith(" 1 ms") and "•" not in relu
    assert legend.split() == ["•", "fwd", "x", "bwd"]
    with pytest.raises(ValueError, match="finite and >= 0"):
        plot.bars(["a"], {"s": [float("nan")]})
