"""Stage `transfer`: score the trained model on whole other corpora, to measure how it does on voices it never met.

Each entry of ``transfer.sets`` names a recorded source and where to find it (an archive, a URL or a folder). All of
its clips are prepared as ``predict`` prepares a file (the word located and centred) and scored as ``evaluate``
scores the test split, test-time shifts included. ``metrics/transfer.json`` gets one entry per set: accuracy,
macro-F1, clip count and confusion counts, so ``dvc metrics diff`` shows synthetic-to-real transfer from commit to
commit. A set whose local path does not exist (such as the FSDD mirror in ``../shared`` on a machine without it) is
skipped and recorded as skipped, with the path; anything else wrong with a set stops the stage with a message.
A set whose location is null is turned off and left out of the metrics: `dvc exp run -S transfer.sets={}` cannot
empty the mapping (DVC merges an override into the section), but `-S transfer.sets.fsdd=null` turns FSDD off.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import torch

from stages import params
from stages.audio import prepare_many
from stages.cli import UserError, run
from stages.evaluate import classification_report, open_set_scores
from stages.fileio import write_json
from stages.inference import shift_step, shifted_probabilities
from stages.models import load_checkpoint
from stages.params import UNKNOWN, EvaluateParams, TransferParams
from stages.paths import MODEL, TRANSFER_METRICS
from stages.runtime import select_device
from stages.sources import Vocabulary, clip_paths, label_of, obtain


def missing_local_path(location: str) -> bool:
    """A plain local path (not a URL) that does not exist: the set is skipped, not an error."""
    return bool(location) and not urlsplit(location).scheme and not Path(location).exists()


def confusion_counts(predicted: torch.Tensor, actual: torch.Tensor, label_names: list[str]) -> dict:
    """``{actual: {predicted: count}}``, zero counts left out."""
    counts: dict[str, dict[str, int]] = {name: {} for name in label_names}
    for truth, guess in zip(actual.tolist(), predicted.tolist(), strict=True):
        row = counts[label_names[truth]]
        row[label_names[guess]] = row.get(label_names[guess], 0) + 1
    return counts


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


def main() -> None:
    config = params.load(TransferParams)
    evaluate = params.load(EvaluateParams)
    device = select_device(config.device)
    model, checkpoint = load_checkpoint(MODEL, device)
    scoring = Scoring(
        device,
        config.batch_size,
        evaluate.test_time_shifts,
        shift_step(evaluate.shift_step_ms, checkpoint["audio"]["sample_rate"]),
    )
    metrics = {}
    for name, location in config.sets.items():
        if location is None:
            continue
        if missing_local_path(location):
            print(f"warning: transfer set '{name}' skipped: {location} does not exist", file=sys.stderr)
            metrics[name] = {"skipped": f"{location} does not exist"}
            continue
        metrics[name] = score_set(name, location, model, checkpoint, scoring)
        if "skipped" in metrics[name]:
            print(f"warning: transfer set '{name}' skipped: {metrics[name]['skipped']}", file=sys.stderr)
        else:
            print(f"transfer {name}: accuracy {metrics[name]['accuracy']:.4f} on {metrics[name]['clips']} clips")
    write_json(TRANSFER_METRICS, metrics)


if __name__ == "__main__":
    run(main)
