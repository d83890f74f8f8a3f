"""Word localisation benchmark: FSDD clips as given, and the same clips hidden at random places in long noisy files.

    .venv/bin/python -m benchmarks.long_recordings [--model models/model.pt] [--seed 0] [--clips all]

Each of FSDD's 3,000 recordings (or, with ``--clips``, its official test split or one speaker's, for a model trained
on the rest) is scored twice by the trained model, through ``prepare`` as ``predict`` does: as it is, and placed at a
random offset in a 1 to 10 s file (at least 0.5 s longer than the clip) of background noise 30 dB below the clip's
level, white or brown, which also runs over the clip. The two accuracies should be within 2 points. Prints both, and
the clips that only the long version got wrong. ``benchmarks.run --long`` records the same for every run of a grid.
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

from spokenwords.audio.torch_shaping import prepare
from spokenwords.data.sources import DIGITS, FSDD_PATTERN, FSDD_TEST_RECORDINGS
from spokenwords.inference.scoring import shift_step, shifted_probabilities
from spokenwords.models.checkpoint import load_checkpoint
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


def fsdd_clips(folder: Path, clips: str) -> list[Path]:
    """FSDD's ``<digit>_<speaker>_<n>.wav`` recordings under ``folder``: ``all``, the official ``test`` split
    (recordings 0 to 4 of each speaker and digit) or one speaker's.
    """
    files = [(path, FSDD_PATTERN.match(path.name)) for path in sorted(folder.rglob("recordings/*.wav"))]
    if clips == "all":
        return [path for path, _ in files]
    if clips == "test":
        return [path for path, match in files if match and int(match["n"]) < FSDD_TEST_RECORDINGS]
    return [path for path, match in files if match and match["speaker"] == clips]


def compare(model_path: Path, archive: Path, clips: str = "all", seed: int = 0, shifts: int = 0) -> dict:
    """The model's accuracy on FSDD's ``clips`` as given and hidden in long noisy files (placed by ``seed``), and
    the names of the clips right as given but wrong when hidden.
    """
    model, checkpoint = load_checkpoint(model_path)
    label_names = checkpoint["label_names"]
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as work:
        with tarfile.open(archive) as opened:
            opened.extractall(work, filter="data")
        given = fsdd_clips(Path(work), clips)
        if not given:
            raise ValueError(f"no FSDD recordings match --clips {clips!r} in {archive}")
        long_dir = Path(work, "long")
        long_dir.mkdir()
        hidden = []
        for path in given:
            clip, rate = soundfile.read(path, dtype="float32")
            hidden.append(long_dir / path.name)
            soundfile.write(hidden[-1], hide(clip, rate, rng), rate, subtype="FLOAT")
        actual = torch.tensor([label_names.index(DIGITS[int(path.name[0])]) for path in given])
        step = shift_step(25.0, checkpoint["audio"]["sample_rate"])
        as_given = score(model, given, checkpoint["audio"], shifts, step)
        in_long = score(model, hidden, checkpoint["audio"], shifts, step)
    lost = [path.name for path, a, b, t in zip(given, as_given, in_long, actual, strict=True) if a == t and b != t]
    return {
        "clips": len(given),
        "given": (as_given == actual).float().mean().item(),
        "long": (in_long == actual).float().mean().item(),
        "lost": lost,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--archive", type=Path, default=FSDD_ARCHIVE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-time-shifts", type=int, default=0)
    parser.add_argument("--clips", default="all", help="all | test (the official split's) | a speaker's name")
    args = parser.parse_args()
    if not args.archive.is_file():
        sys.exit(f"skipped: the FSDD mirror {args.archive} is absent")
    try:
        result = compare(args.model, args.archive, args.clips, args.seed, args.test_time_shifts)
    except ValueError as error:
        sys.exit(f"error: {error}")
    lost = result["lost"]
    print(f"FSDD clips as given:           {100 * result['given']:.1f} % of {result['clips']}")
    print(f"hidden in 1-10 s noisy files:  {100 * result['long']:.1f} %")
    print(f"difference:                    {100 * (result['long'] - result['given']):+.1f} points")
    print(f"right as given, wrong when hidden: {len(lost)} ({', '.join(lost[:10])}{' …' if len(lost) > 10 else ''})")


if __name__ == "__main__":
    main()
