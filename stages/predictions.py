"""What both predictors share, torch-free: the test-time shift options and the per-file answers they print.

``stages/predict.py`` (the PyTorch checkpoint) and ``stages/predict_onnx.py`` (the exported model, no torch) differ
only in how a file becomes a clip and a clip a ranking; one loop here keeps their output and exit codes the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from stages import params
from stages.clips import BadAudio, NoSpeech
from stages.params import EvaluateParams

Clip = TypeVar("Clip")
Ranking = list[tuple[str, float]]


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--json`` and the test-time shift options, defaulting to params.yaml's ``evaluate`` section when there is
    one, so a prediction matches what was scored.
    """
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    scored = params.load(EvaluateParams) if params.PARAMS_FILE.is_file() else EvaluateParams()
    parser.add_argument(
        "--test-time-shifts",
        type=int,
        default=scored.test_time_shifts,
        metavar="N",
        help="average over 2N+1 shifted copies (default: evaluate.test_time_shifts, %(default)s)",
    )
    parser.add_argument(
        "--shift-step-ms",
        type=float,
        default=scored.shift_step_ms,
        metavar="MS",
        help="the shift between copies (default: evaluate.shift_step_ms, %(default)s)",
    )


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``, refusing negative shift counts and non-positive steps."""
    args = parser.parse_args(argv)
    if args.test_time_shifts < 0 or args.shift_step_ms <= 0:
        parser.error("--test-time-shifts must be >= 0 and --shift-step-ms > 0")
    return args


def answer(files: list[Path], prepare: Callable[[Path], Clip], rank: Callable[[Clip], Ranking], as_json: bool) -> int:
    """Print each file's answer (ranking, "no speech found" or its error line) and return how many failed."""
    failures = 0
    for path in files:
        try:
            clip = prepare(path)
        except NoSpeech as silence:  # a readable file with no word in it: an answer, not a failure
            if as_json:
                print(json.dumps({"file": str(path), "label": None, "no_speech": True, "reason": str(silence)}))
            else:
                print(f"{path}: {silence}")
            continue
        except BadAudio as error:
            failures += 1
            if as_json:
                print(json.dumps({"file": str(path), "error": str(error)}))
            print(f"error: {path}: {error}", file=sys.stderr)
            continue
        ranking = rank(clip)
        if as_json:
            top3 = [{"label": label, "probability": round(p, 6)} for label, p in ranking]
            print(
                json.dumps(
                    {"file": str(path), "label": ranking[0][0], "probability": round(ranking[0][1], 6), "top3": top3}
                )
            )
        else:
            alternatives = ", ".join(f"{label} {p:.3f}" for label, p in ranking)
            print(f"{path}: {ranking[0][0]} ({ranking[0][1]:.3f})  top 3: {alternatives}")
    return failures
