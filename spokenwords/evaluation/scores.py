"""Scores of a model's predictions: classification report, open-set scores and confusion, shared by ``evaluate`` and
``transfer``.
"""

from __future__ import annotations

import csv
import io

import torch

from spokenwords.params import SILENCE, UNKNOWN


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


def confusion_counts(predicted: torch.Tensor, actual: torch.Tensor, label_names: list[str]) -> dict:
    """``{actual: {predicted: count}}``, zero counts left out."""
    counts: dict[str, dict[str, int]] = {name: {} for name in label_names}
    for truth, guess in zip(actual.tolist(), predicted.tolist(), strict=True):
        row = counts[label_names[truth]]
        row[label_names[guess]] = row.get(label_names[guess], 0) + 1
    return counts
