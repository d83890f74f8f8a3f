"""The plot stage's figures fit any number of classes; ten keep the layout of the committed PNGs."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from spokenwords.evaluation.figures import confusion_matrix, examples

WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"]


def split(label_names: list[str]) -> dict:
    """A test split with two clips per class."""
    labels = torch.arange(len(label_names)).repeat_interleave(2)
    return {
        "label_names": label_names,
        "labels": labels,
        "waveforms": torch.randn(len(labels), 1, 800, generator=torch.Generator().manual_seed(0)),
        "sample_rate": 8000,
        "speakers": [f"s{index}" for index in range(len(labels))],
    }


def grid(figure: Figure) -> list[tuple[int, int, str]]:
    """(row, column, title) of each drawn subplot."""
    return [
        (axis.get_subplotspec().rowspan.start, axis.get_subplotspec().colspan.start, axis.get_title())
        for axis in figure.axes
    ]


def test_ten_classes_keep_the_two_by_five_grid() -> None:
    figure = examples(split(WORDS[:10]))
    assert tuple(figure.get_size_inches()) == (14, 5)
    assert grid(figure) == [(index // 5, index % 5, word) for index, word in enumerate(WORDS[:10])]


def test_twelve_classes_get_a_third_row() -> None:
    figure = examples(split(WORDS))
    assert tuple(figure.get_size_inches()) == (14, 7.5)
    assert grid(figure) == [(index // 5, index % 5, word) for index, word in enumerate(WORDS)]
    assert all(line.get_ydata().size for axis in figure.axes for line in axis.get_lines())
    figure.canvas.draw()
    # time ticks under every column's lowest plot: the third row's two, and the second row's last three above the gap
    lowest = [
        axis for axis in figure.axes if axis.get_subplotspec().rowspan.start == 2 or axis.get_title() in WORDS[7:10]
    ]
    assert len(lowest) == 5 and all(any(tick.get_visible() for tick in axis.get_xticklabels()) for axis in lowest)
    assert not any(tick.get_visible() for tick in figure.axes[0].get_xticklabels())


def test_confusion_matrix_names_every_class_and_grows_beyond_ten() -> None:
    rows = [{"actual": word, "predicted": WORDS[(index + 1) % len(WORDS)]} for index, word in enumerate(WORDS)]
    figure = confusion_matrix(rows, WORDS)
    counts = figure.axes[0]
    assert [label.get_text() for label in counts.get_xticklabels()] == WORDS
    assert [label.get_text() for label in counts.get_yticklabels()] == WORDS
    assert tuple(figure.get_size_inches()) == pytest.approx((15.6, 6.6))  # 12/10 of the ten-class figure
    ten = [{"actual": word, "predicted": word} for word in WORDS[:10]]
    assert tuple(confusion_matrix(ten, WORDS[:10]).get_size_inches()) == (13, 5.5)
