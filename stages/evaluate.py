"""Stage `evaluate`: score the trained model on the held-out test split."""

from __future__ import annotations

import sys

import torch.nn.functional as F

from spokenwords import params
from spokenwords.audio.shaping import shift_step
from spokenwords.cli import run
from spokenwords.data.processed_splits import check_fits, load_split
from spokenwords.evaluation.scores import classification_report, confusion_csv, open_set_scores
from spokenwords.fileio import write_json, write_text
from spokenwords.inference.scoring import shifted_probabilities
from spokenwords.models.checkpoint import load_checkpoint
from spokenwords.params import EvaluateParams
from spokenwords.paths import CONFUSION, EVAL_METRICS, MODEL, split_file
from spokenwords.runtime import select_device


def main() -> None:
    config = params.load(EvaluateParams)
    device = select_device(config.device)
    model, checkpoint = load_checkpoint(MODEL, device)
    test = load_split(split_file("test"))
    label_names = checkpoint["label_names"]
    check_fits(MODEL, checkpoint, split_file("test"), test)
    waveforms, actual = test["waveforms"].to(device), test["labels"]
    step = shift_step(config.shift_step_ms, checkpoint["audio"]["sample_rate"])
    shifts = config.test_time_shifts
    copies = shifted_probabilities(model, waveforms, config.batch_size, shifts, step).cpu()
    probabilities, one_pass = copies.mean(dim=0), copies[shifts]
    predicted = probabilities.argmax(dim=1)
    report = classification_report(predicted, actual, label_names)
    metrics = {
        "accuracy": report["accuracy"],
        # the same model scored without test-time shifts: what the averaging adds
        "one_pass_accuracy": (one_pass.argmax(dim=1) == actual).float().mean().item(),
        "loss": F.nll_loss(probabilities.clamp_min(1e-12).log(), actual).item(),
        "macro_f1": report["macro_f1"],
        **open_set_scores(predicted, actual, label_names),
        "clips": len(actual),
        "correct": int((predicted == actual).sum()),
        "per_class": report["per_class"],
    }
    write_json(EVAL_METRICS, metrics)
    write_text(CONFUSION, confusion_csv(predicted, actual, label_names))
    print(
        f"test accuracy {metrics['accuracy']:.4f} on {metrics['clips']} clips, loss {metrics['loss']:.4f}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run(main)
