"""Predict the spoken word of audio files: ``python -m spokenwords.predict FILE.wav [FILE ...] [--json]``.

Any sample rate and channel count is accepted and prepared exactly as the preprocess stage does: the spoken word is
found in a recording of any length (up to its first minute) and the window is centred on it; a file with no speech
gets "no speech found" as its answer. Test-time shifts
default to the ``evaluate`` section of ``params.yaml`` when there is one, so a prediction matches what was scored.
A file that cannot be read is reported on its own line; the others are still predicted. Many files are read on one
worker process per core and scored in batches (``--batch``, ``--workers``; ``stages/predictor.py``), with the same
answers as one at a time, printed in the order given. ``spokenwords/predict_onnx.py`` does the same with the exported
ONNX model and no torch; this one takes only a checkpoint written by ``train`` (``--model``), never an ONNX file.

Exit codes: 0 when every file got an answer (a word, or "no speech found"); 1 when any file could not be read (each
on its own ``error:`` line) or the model could not be loaded (one line, nothing predicted); 2 for a bad command
line; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spokenwords.audio import torch_shaping
from spokenwords.audio.shaping import shift_step
from spokenwords.cli import run
from spokenwords.inference import predictor
from spokenwords.inference.scoring import shifted_probabilities
from spokenwords.models.checkpoint import load_checkpoint
from spokenwords.paths import MODEL


def prepare(path: Path, sample_rate: int, clip_seconds: float) -> np.ndarray:
    """``torch_shaping.prepare`` as a ``[samples]`` NumPy array: a worker sends it back pickled in one piece (a tensor
    would take torch's shared-memory route, a segment and a file descriptor per clip).
    """
    return torch_shaping.prepare(path, sample_rate, clip_seconds)[0].numpy()


def rank(
    model: nn.Module, clips: np.ndarray, label_names: list[str], shifts: int = 0, step: int = 1, top: int = 3
) -> list[predictor.Ranking]:
    """The ``top`` most likely labels of each prepared ``[clips, samples]`` clip with their probabilities (averaged
    over ``2 * shifts + 1`` copies moved by multiples of ``step`` samples, as ``evaluate`` does).
    """
    waveforms = torch.from_numpy(clips).unsqueeze(1)
    probabilities = shifted_probabilities(model, waveforms, len(clips), shifts, step).mean(dim=0)
    values, indices = probabilities.topk(min(top, len(label_names)), dim=-1)
    return [
        [(label_names[index], value) for index, value in zip(row, scores, strict=True)]
        for row, scores in zip(indices.tolist(), values.tolist(), strict=True)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spokenwords.predict", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="audio files (WAV, FLAC, OGG)")
    parser.add_argument("--model", type=Path, default=MODEL, help=f"checkpoint (default: {MODEL})")
    predictor.add_options(parser)
    args = predictor.parse(parser, argv)
    if args.workers:  # before the model is built, so no thread pool runs when the workers are forked
        predictor.one_thread()
        torch.set_num_threads(1)
    model, checkpoint = load_checkpoint(args.model)
    rate, label_names = checkpoint["audio"]["sample_rate"], checkpoint["label_names"]
    step = shift_step(args.shift_step_ms, rate)
    failures = predictor.answer(
        args.files,
        functools.partial(prepare, sample_rate=rate, clip_seconds=checkpoint["audio"]["samples"] / rate),
        lambda clips: rank(model, clips, label_names, args.test_time_shifts, step),
        args.json,
        args.batch,
        args.workers,
    )
    if failures:
        sys.exit(1)


def console() -> None:
    """The console script (``spokenwords-predict``): ``main`` with one-line errors and exit codes."""
    run(main)


if __name__ == "__main__":
    console()
