"""Predict the spoken digit of audio files: ``python -m stages.predict FILE.wav [FILE ...] [--json]``.

Any sample rate and channel count is accepted and prepared exactly as the preprocess stage does: the spoken word is
found in a recording of any length (up to its first minute) and the window is centred on it; a file with no speech
gets "no speech found" as its answer. Test-time shifts
default to the ``evaluate`` section of ``params.yaml`` when there is one, so a prediction matches what was scored.
A file that cannot be read is reported on its own; the others are still predicted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from stages import params
from stages.audio import BadAudio, NoSpeech, prepare
from stages.cli import run
from stages.models import load_checkpoint
from stages.runtime import shift_step, shifted_probabilities

MODEL = Path("models/model.pt")


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
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    scored = params.load("evaluate") if params.PARAMS_FILE.is_file() else params.validate({}, "evaluate")
    parser.add_argument(
        "--test-time-shifts",
        type=int,
        default=scored["test_time_shifts"],
        metavar="N",
        help="average over 2N+1 shifted copies (default: evaluate.test_time_shifts, %(default)s)",
    )
    parser.add_argument(
        "--shift-step-ms",
        type=float,
        default=scored["shift_step_ms"],
        metavar="MS",
        help="the shift between copies (default: evaluate.shift_step_ms, %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.test_time_shifts < 0 or args.shift_step_ms <= 0:
        parser.error("--test-time-shifts must be >= 0 and --shift-step-ms > 0")
    model, checkpoint = load_checkpoint(args.model)
    audio = checkpoint["audio"]
    step = shift_step(args.shift_step_ms, audio["sample_rate"])
    failures = 0
    for path in args.files:
        try:
            waveform = prepare(path, audio["sample_rate"], audio["samples"] / audio["sample_rate"])
        except NoSpeech as silence:  # a readable file with no word in it: an answer, not a failure
            if args.json:
                print(json.dumps({"file": str(path), "label": None, "no_speech": True, "reason": str(silence)}))
            else:
                print(f"{path}: {silence}")
            continue
        except BadAudio as error:
            failures += 1
            if args.json:
                print(json.dumps({"file": str(path), "error": str(error)}))
            print(f"error: {path}: {error}", file=sys.stderr)
            continue
        ranking = predict(model, waveform, checkpoint["label_names"], shifts=args.test_time_shifts, step=step)
        if args.json:
            top3 = [{"label": label, "probability": round(p, 6)} for label, p in ranking]
            print(
                json.dumps(
                    {"file": str(path), "label": ranking[0][0], "probability": round(ranking[0][1], 6), "top3": top3}
                )
            )
        else:
            alternatives = ", ".join(f"{label} {p:.3f}" for label, p in ranking)
            print(f"{path}: {ranking[0][0]} ({ranking[0][1]:.3f})  top 3: {alternatives}")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    run(main)
