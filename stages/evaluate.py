"""Stage `evaluate`: score the trained model on the held-out test split."""

from __future__ import annotations

import csv
import io
import sys

import torch
import torch.nn.functional as F

from stages import params
from stages.cli import run
from stages.fileio import write_json, write_text
from stages.inference import shift_step, shifted_probabilities
from stages.models import load_checkpoint
from stages.params import SILENCE, UNKNOWN, EvaluateParams
from stages.paths import CONFUSION, EVAL_METRICS, MODEL, split_file
from stages.processed import check_fits, load_split
from stages.runtime import select_device


def classification_report(predicted: torch.Tensor, actual: torch.Tensor, label_names: list[str]) -> dict:
    """Accuracy, macro-F1 and per-class precision, recall, F1 and support."""
    per_class = {}
    for index, name in enumerate(label_names):
        true_positive = ((predicted == index) & (actual == index)).sum().item()
        predicted_count = (predicted == index).sum().item()
        support = (actual == index).sum().item()
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return {
        "accuracy": (predicted == actual).float().mean().item(),
        "macro_f1": sum(item["f1"] for item in per_class.values()) / len(per_class),
        "per_class": per_class,
    }


def open_set_scores(predicted: torch.Tensor, actual: torch.Tensor, label_names: list[str]) -> dict[str, float]:
    """For a model with ``_unknown_`` or ``_silence_``: accuracy on the vocabulary's words alone, and the share of
    other words (``_unknown_`` clips) taken for one of the words, the false accepts a keyword spotter must avoid.
    """
    extras = [label_names.index(name) for name in (UNKNOWN, SILENCE) if name in label_names]
    if not extras:
        return {}
    is_word = ~torch.isin(actual, torch.tensor(extras))
    scores = {"words_accuracy": (predicted[is_word] == actual[is_word]).float().mean().item() if is_word.any() else 0.0}
    if UNKNOWN in label_names:
        unknown = actual == label_names.index(UNKNOWN)
        if unknown.any():
            scores["unknown_false_accept"] = (
                (~torch.isin(predicted[unknown], torch.tensor(extras))).float().mean().item()
            )
    return scores


def confusion_csv(predicted: torch.Tensor, actual: torch.Tensor, label_names: list[str]) -> str:
    """One row per clip: the actual and predicted label, then their indices, by which DVC's confusion template
    (``.dvc/plots/confusion_labels.json``) orders its axes as the model orders its labels.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["actual", "predicted", "actual_index", "predicted_index"])
    writer.writerows(
        (label_names[a], label_names[p], a, p) for a, p in zip(actual.tolist(), predicted.tolist(), strict=True)
    )
    return buffer.getvalue()


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
