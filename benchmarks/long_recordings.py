"""Word localisation benchmark: FSDD clips as given, and the same clips hidden at random places in long noisy files.

    .venv/bin/python -m benchmarks.long_recordings [--model models/model.pt] [--seed 0]

Each of FSDD's 3,000 recordings is scored twice by the trained model, through ``prepare`` as ``predict`` does:
as it is, and placed at a random offset in a 1 to 10 s file (at least 0.5 s longer than the clip) of background
noise 30 dB below the clip's level, white or brown, which also runs over the clip. The two accuracies should be
within 2 points. Prints both, and the clips that only the long version got wrong.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch

from stages.audio import prepare
from stages.inference import shift_step, shifted_probabilities
from stages.models import load_checkpoint
from stages.sources import DIGITS
from tools.project import FSDD_ARCHIVE

NOISE_DB = 30.0


def hide(clip: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """``clip`` at a random offset in a 1 to 10 s recording with background noise throughout."""
    length = max(int(rng.uniform(1.0, 10.0) * rate), clip.size + rate // 2)
    start = int(rng.integers(0, length - clip.size + 1))
    noise = rng.standard_normal(length)
    if rng.random() < 0.5:
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(rate // 10) / (rate // 10), mode="same")  # brown, without drift
    level = np.sqrt(np.mean(clip**2)) / 10 ** (NOISE_DB / 20)
    recording = noise * level / noise.std()
    recording[start : start + clip.size] += clip
    return recording.astype(np.float32)


def score(model: torch.nn.Module, files: list[Path], audio: dict, shifts: int, step: int) -> torch.Tensor:
    """Predicted label index of every file, prepared as ``predict`` prepares it."""
    seconds = audio["samples"] / audio["sample_rate"]
    waveforms = torch.stack([prepare(path, audio["sample_rate"], seconds) for path in files])
    return shifted_probabilities(model, waveforms, 64, shifts, step).mean(dim=0).argmax(dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--archive", type=Path, default=FSDD_ARCHIVE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-time-shifts", type=int, default=0)
    args = parser.parse_args()
    if not args.archive.is_file():
        sys.exit(f"skipped: the FSDD mirror {args.archive} is absent")
    model, checkpoint = load_checkpoint(args.model)
    label_names = checkpoint["label_names"]
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as work:
        with tarfile.open(args.archive) as archive:
            archive.extractall(work, filter="data")
        given = sorted(Path(work).rglob("recordings/*.wav"))
        long_dir = Path(work, "long")
        long_dir.mkdir()
        hidden = []
        for path in given:
            clip, rate = soundfile.read(path, dtype="float32")
            hidden.append(long_dir / path.name)
            soundfile.write(hidden[-1], hide(clip, rate, rng), rate, subtype="FLOAT")
        actual = torch.tensor([label_names.index(DIGITS[int(path.name[0])]) for path in given])
        step = shift_step(25.0, checkpoint["audio"]["sample_rate"])
        as_given = score(model, given, checkpoint["audio"], args.test_time_shifts, step)
        in_long = score(model, hidden, checkpoint["audio"], args.test_time_shifts, step)
    accuracy_given = (as_given == actual).float().mean().item()
    accuracy_long = (in_long == actual).float().mean().item()
    print(f"FSDD clips as given:           {100 * accuracy_given:.1f} % of {len(given)}")
    print(f"hidden in 1-10 s noisy files:  {100 * accuracy_long:.1f} %")
    print(f"difference:                    {100 * (accuracy_long - accuracy_given):+.1f} points")
    lost = [path.name for path, a, b, t in zip(given, as_given, in_long, actual, strict=True) if a == t and b != t]
    print(f"right as given, wrong when hidden: {len(lost)} ({', '.join(lost[:10])}{' …' if len(lost) > 10 else ''})")


if __name__ == "__main__":
    main()
