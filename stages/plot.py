"""Stage `plot`: the figures a person looks at, as PNGs (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from spokenwords.cli import run
from spokenwords.data.processed_splits import check_fits, load_split
from spokenwords.evaluation.figures import confusion_matrix, examples, kernels, learning_curves, read_csv, save
from spokenwords.models.checkpoint import load_checkpoint
from spokenwords.paths import CONFUSION, HISTORY, MODEL, image, split_file


def main() -> None:
    model, checkpoint = load_checkpoint(MODEL)
    label_names = checkpoint["label_names"]
    test = load_split(split_file("test"))
    check_fits(MODEL, checkpoint, split_file("test"), test)
    save(learning_curves(read_csv(HISTORY)), image("learning_curves"))
    save(confusion_matrix(read_csv(CONFUSION), label_names), image("confusion_matrix"))
    save(kernels(model.first_layer.weight.detach().numpy(), checkpoint["audio"]["sample_rate"]), image("kernels"))
    save(examples(test), image("waveforms"))


if __name__ == "__main__":
    run(main)
