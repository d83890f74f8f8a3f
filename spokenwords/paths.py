"""Every file and folder the stages read and write, as ``dvc.yaml`` declares them, in one place.

``tests/test_paths.py`` checks that this module and ``dvc.yaml`` name the same data paths. The last three are not
DVC outputs: per-run timings and a stopped run's state, git-ignored, so a rerun leaves ``git status`` clean.
"""

from __future__ import annotations

from pathlib import Path

RAW = Path("data/raw")
PROCESSED = Path("data/processed")
EMBEDDED = Path("data/embedded")
MODEL = Path("models/model.pt")
ONNX_MODEL = Path("models/model.onnx")
INT8_MODEL = Path("models/model.int8.onnx")
TRAIN_METRICS = Path("metrics/train.json")
EVAL_METRICS = Path("metrics/eval.json")
TRANSFER_METRICS = Path("metrics/transfer.json")
EXPORT_METRICS = Path("metrics/export.json")
HISTORY = Path("plots/train_history.csv")
CONFUSION = Path("plots/confusion.csv")
IMAGES = Path("plots/images")
IMAGE_NAMES = ("learning_curves", "confusion_matrix", "kernels", "waveforms")
SPLIT_NAMES = ("train", "validation", "test")  # each a file in data/processed and data/embedded (split_file)

TRAIN_TIMING = Path("logs/train_timing.json")
EXPORT_LATENCY = Path("logs/export_latency.json")
TRAIN_STATE = Path("checkpoints/train_state.pt")


def split_file(split: str, folder: Path = PROCESSED) -> Path:
    """The metadata file of one split (``train``, ``validation``, ``test``) of ``data/processed`` or
    ``data/embedded``; a processed split keeps its waveforms beside it
    (``spokenwords.data.processed_splits.waveform_path``).
    """
    return folder / f"{split}.pt"


def member_state(name: str) -> Path:
    """The resumable state of one ensemble member's training, beside ``TRAIN_STATE``: a finished member's state
    stays until the whole ensemble is written, so a stopped run trains again only what it had not finished.
    """
    return TRAIN_STATE.with_name(f"{TRAIN_STATE.stem}.{name}{TRAIN_STATE.suffix}")


def image(name: str) -> Path:
    """One of the plot stage's figures, ``IMAGE_NAMES``."""
    return IMAGES / f"{name}.png"
