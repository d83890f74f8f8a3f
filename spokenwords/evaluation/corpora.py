"""Whole other corpora scored by a trained model, to measure how it does on voices it never met."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import torch

from spokenwords.audio.torch_shaping import prepare_many
from spokenwords.cli import UserError
from spokenwords.data.sources import Vocabulary, clip_paths, label_of, obtain
from spokenwords.evaluation.scores import classification_report, confusion_counts, open_set_scores
from spokenwords.inference.scoring import shifted_probabilities
from spokenwords.params import UNKNOWN


def missing_local_path(location: str) -> bool:
    """A plain local path (not a URL) that does not exist: the set is skipped, not an error."""
    return bool(location) and not urlsplit(location).scheme and not Path(location).exists()


@dataclass(frozen=True)
class Scoring:
    """How every set is scored: where, in batches of what size, and with which test-time shifts."""

    device: torch.device
    batch_size: int
    shifts: int
    step: int


def target_of(word: str, label_names: list[str]) -> int | None:
    """The class a corpus' word should get: its own label, else ``_unknown_`` where the model has it, else none."""
    if word in label_names:
        return label_names.index(word)
    return label_names.index(UNKNOWN) if UNKNOWN in label_names else None


def score_set(name: str, location: str, model: torch.nn.Module, checkpoint: dict, scoring: Scoring) -> dict:
    """Fetch one corpus into a temporary folder, prepare every clip of the model's words (and, for a model with
    ``_unknown_``, of the corpus' other words), and score them all.
    """
    audio, label_names = checkpoint["audio"], checkpoint["label_names"]
    clip_seconds = audio["samples"] / audio["sample_rate"]
    with tempfile.TemporaryDirectory(prefix="transfer-") as work:
        root = Path(work, "raw")
        root.mkdir()
        words = obtain(name, location, "", root, Vocabulary())
        paths = [path for path in clip_paths(root) if target_of(label_of(path), label_names) is not None]
        if not paths:
            return {"skipped": f"none of its words ({', '.join(words)}) is a label of the model"}
        prepared = list(prepare_many([root / path for path in paths], audio["sample_rate"], clip_seconds))
    kept = [(path, clip) for path, (clip, _) in zip(paths, prepared, strict=True) if clip is not None]
    if not kept:
        raise UserError(f"transfer set '{name}' ({location}) has no readable clip")
    waveforms = torch.stack([clip for _, clip in kept]).to(scoring.device)
    actual = torch.tensor([target_of(label_of(path), label_names) for path, _ in kept])
    copies = shifted_probabilities(model, waveforms, scoring.batch_size, scoring.shifts, scoring.step).cpu()
    predicted = copies.mean(dim=0).argmax(dim=1)
    report = classification_report(predicted, actual, label_names)
    return {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        **open_set_scores(predicted, actual, label_names),
        "clips": len(kept),
        "skipped_files": len(paths) - len(kept),
        "confusion": confusion_counts(predicted, actual, label_names),
    }
