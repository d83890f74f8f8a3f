"""The figures a person looks at, drawn with matplotlib's Agg backend: learning curves, confusion matrix, first-layer
kernels and example waveforms.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from spokenwords.fileio import atomic_path

EXAMPLE_COLUMNS = 5


def save(figure: plt.Figure, path: Path) -> None:
    """Save a PNG atomically, without metadata that would change between identical runs."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(figure)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def learning_curves(history: list[dict[str, str]]) -> plt.Figure:
    """Accuracy and loss for train and validation side by side, like the notebook's figure."""
    epochs = [int(row["epoch"]) for row in history]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for axis, metric, title in ((axes[0], "acc", "Accuracy"), (axes[1], "loss", "Loss")):
        for split, style in (("train", "-o"), ("val", "-s")):
            label = "train" if split == "train" else "validation"
            axis.plot(epochs, [float(row[f"{split}_{metric}"]) for row in history], style, label=label, markersize=4)
        axis.set(title=title, xlabel="epoch", ylabel=title.lower())
        axis.grid(alpha=0.3)
        axis.legend()
    return figure


def confusion_matrix(rows: list[dict[str, str]], label_names: list[str]) -> plt.Figure:
    """Counts and row-normalised rates (recall per class) side by side."""
    index = {name: position for position, name in enumerate(label_names)}
    counts = np.zeros((len(label_names), len(label_names)), dtype=int)
    for row in rows:
        counts[index[row["actual"]], index[row["predicted"]]] += 1
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    scale = max(1.0, len(label_names) / 10)  # beyond ten classes the figure grows, so each cell's number still fits
    figure, axes = plt.subplots(1, 2, figsize=(13 * scale, 5.5 * scale), layout="constrained")
    for axis, matrix, title, fmt in ((axes[0], counts, "Counts", "d"), (axes[1], rates, "Normalised by actual", ".2f")):
        image = axis.imshow(matrix, cmap="Blues")
        axis.set(
            title=title,
            xlabel="predicted",
            ylabel="actual",
            xticks=range(len(label_names)),
            yticks=range(len(label_names)),
            xticklabels=label_names,
            yticklabels=label_names,
        )
        axis.tick_params(axis="x", labelrotation=45)
        threshold = matrix.max() / 2
        for (row, column), value in np.ndenumerate(matrix):
            axis.text(
                column,
                row,
                format(value, fmt),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > threshold else "black",
            )
        figure.colorbar(image, ax=axis, shrink=0.8)
    return figure


def spectrogram_kernels(weights: np.ndarray) -> plt.Figure:
    """A spectrogram model's first 2-D kernels (first input channel), frequency bands by frames."""
    count = min(len(weights), 32)
    columns = 8
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(12, 1.6 * rows + 0.6), layout="constrained", squeeze=False)
    limit = np.abs(weights[:count, 0]).max()
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index < count:
            axis.imshow(weights[index, 0], cmap="RdBu_r", vmin=-limit, vmax=limit, origin="lower", aspect="auto")
    figure.suptitle("First-layer kernels on the spectrogram (rows: frequency bands, columns: frames)")
    return figure


def embedding_weights(weights: np.ndarray) -> plt.Figure:
    """The embedding head's first layer: one row of weights over the 96 embedding dimensions per hidden unit."""
    figure, axis = plt.subplots(figsize=(12, 5), layout="constrained")
    limit = np.abs(weights).max()
    image = axis.imshow(weights, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    axis.set(title="First-layer weights on the frozen speech embedding", xlabel="embedding dimension", ylabel="unit")
    figure.colorbar(image, ax=axis, label="weight")
    return figure


def kernels(weights: np.ndarray, sample_rate: int) -> plt.Figure:
    """First-layer kernels and their magnitude responses, sorted by peak frequency (the notebook's exercise).

    Only a raw-waveform model's first layer is a filter bank; a spectrogram model's kernels are drawn as images, and
    the embedding head's first layer as one weight matrix.
    """
    if weights.ndim == 4:
        return spectrogram_kernels(weights)
    if weights.ndim == 2:
        return embedding_weights(weights)
    kernels_2d = weights.reshape(weights.shape[0], -1)
    n_fft = 512
    response = 20 * np.log10(np.abs(np.fft.rfft(kernels_2d, n=n_fft, axis=1)) + 1e-6)
    order = np.argsort(response.argmax(axis=1))
    frequencies = np.fft.rfftfreq(n_fft, d=1 / sample_rate)
    figure, axes = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    limit = np.abs(kernels_2d).max()
    image = axes[0].imshow(
        kernels_2d[order],
        aspect="auto",
        cmap="RdBu_r",
        vmin=-limit,
        vmax=limit,
        extent=(0, kernels_2d.shape[1] / sample_rate * 1000, len(order) - 0.5, -0.5),
    )
    axes[0].set(title="First-layer kernels", xlabel="time (ms)", ylabel="kernel (sorted by peak frequency)")
    figure.colorbar(image, ax=axes[0], label="weight")
    image = axes[1].imshow(
        response[order], aspect="auto", cmap="magma", extent=(0, frequencies[-1], len(order) - 0.5, -0.5)
    )
    axes[1].set(title="Frequency responses", xlabel="frequency (Hz)", ylabel="kernel (sorted by peak frequency)")
    figure.colorbar(image, ax=axes[1], label="magnitude (dB)")
    return figure


def examples(test: dict) -> plt.Figure:
    """The first test waveform of each class, five to a row (ten classes keep the 2 by 5 grid of 14 by 5 inches)."""
    label_names = test["label_names"]
    columns = min(len(label_names), EXAMPLE_COLUMNS)
    rows = math.ceil(len(label_names) / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(14, 2.5 * rows), sharex=True, sharey=True, layout="constrained", squeeze=False
    )
    time_axis = np.arange(test["waveforms"].shape[-1]) / test["sample_rate"]
    for spare in range(len(label_names), rows * columns):
        axes.flat[spare].remove()
        axes.flat[spare - columns].xaxis.set_tick_params(labelbottom=True)  # shared ticks shown above a gap
    for label, axis in enumerate(axes.flat[: len(label_names)]):
        positions = (test["labels"] == label).nonzero().flatten()
        axis.set_title(label_names[label])
        if len(positions):
            position = int(positions[0])
            axis.plot(time_axis, test["waveforms"][position, 0].numpy(), linewidth=0.5)
            axis.set_xlabel(f"{test['speakers'][position]} · time (s)", fontsize=7)
    return figure
