"""Predict the spoken word of audio files: ``python -m stages.predict FILE.wav [FILE ...] [--json]``.

Any sample rate and channel count is accepted and prepared exactly as the preprocess stage does: the spoken word is
found in a recording of any length (up to its first minute) and the window is centred on it; a file with no speech
gets "no speech found" as its answer. Test-time shifts
default to the ``evaluate`` section of ``params.yaml`` when there is one, so a prediction matches what was scored.
A file that cannot be read is reported on its own; the others are still predicted. ``stages/predict_onnx.py`` does
the same with the exported ONNX model and no torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from stages import predictions
from stages.audio import prepare
from stages.cli import run
from stages.inference import shift_step, shifted_probabilities
from stages.models import load_checkpoint
from stages.paths import MODEL


def predict(
    model: nn.Module, waveform: torch.Tensor, label_names: list[str], top: int = 3, shifts: int = 0, step: int = 1
) -> list[tuple[str, float]]:
    """The ``top`` most likely labels of one prepared ``[1, samples]`` waveform, with their probabilities
    (averaged over ``2 * shifts + 1`` copies moved by multiples of ``step`` samples, as ``evaluate`` does).
    """
    probabilities = shifted_probabilities(model, waveform.unsqueeze(0), 1, shifts, step).mean(dim=0)[0]
    values, indices = probabilities.topk(min(top, len(label_names)))
    return [(label_names[index], value) for index, value in zip(indices.tolist(), values.tolist(), strict=True)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.predict", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="audio files (WAV, FLAC, OGG)")
    parser.add_argument("--model", type=Path, default=MODEL, help=f"checkpoint (default: {MODEL})")
    predictions.add_options(parser)
    args = predictions.parse(parser, argv)
    model, checkpoint = load_checkpoint(args.model)
    audio, label_names = checkpoint["audio"], checkpoint["label_names"]
    step = shift_step(args.shift_step_ms, audio["sample_rate"])
    failures = predictions.answer(
        args.files,
        lambda path: prepare(path, audio["sample_rate"], audio["samples"] / audio["sample_rate"]),
        lambda waveform: predict(model, waveform, label_names, shifts=args.test_time_shifts, step=step),
        args.json,
    )
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    run(main)
