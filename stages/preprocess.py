"""Stage `preprocess`: decode every raw clip once into one cached tensor file per split.

Each split file holds ``waveforms`` float32 ``[N, 1, samples]``, ``labels`` int64 ``[N]``, ``speakers`` and
``paths``, plus the ``label_names`` (zero to nine) and the ``sample_rate``. Bad files are skipped and counted in
``report.json``. Clips under ``data/raw/synthetic_train`` all go to the training split, after the split rule has
shared out the source's own clips, so they never change which speaker a LOSO fold tests.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from stages import params
from stages.audio import prepare_many
from stages.cli import UserError, run
from stages.datasets import (
    AUDIO_SUFFIXES,
    DIGITS,
    LIST_FILES,
    SYNTHETIC_TRAIN,
    assign_splits,
    clip_paths,
    read_list,
    save_split,
    speaker_of,
)
from stages.fileio import atomic_dir, write_json

RAW = Path("data/raw")
PROCESSED = Path("data/processed")
LABEL_NAMES = list(DIGITS)  # in the order people read digits, zero to nine (index = the digit)


def scan(raw: Path) -> tuple[list[str], list[str]]:
    """Relative paths of candidate clips under ``raw``, and the folders skipped as unknown labels."""
    if not raw.is_dir():
        raise UserError(f"{raw} is missing: run `dvc repro download` first")
    clips, unknown = [], []
    for folder in sorted(path for path in raw.iterdir() if path.is_dir() and not path.name.startswith(".")):
        if folder.name == SYNTHETIC_TRAIN:
            continue
        if folder.name not in DIGITS:
            print(f"warning: skipped folder {folder}: '{folder.name}' is not a digit label", file=sys.stderr)
            unknown.append(folder.name)
            continue
        clips.extend(
            path.relative_to(raw).as_posix()
            for path in sorted(folder.iterdir())
            if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES
        )
    return clips, unknown


def preprocess(config: dict, out: Path, rule: str = "official", fold: int = 0) -> dict:
    """Write the three split files into ``out``, shared by ``rule`` (see ``assign_splits``); return the report."""
    clips, unknown_folders = scan(RAW)
    lists = {name: read_list(RAW, name) for name in LIST_FILES}
    samples = round(config["sample_rate"] * config["clip_seconds"])
    splits = assign_splits(clips, lists, rule, fold)
    synthetic = [f"{SYNTHETIC_TRAIN}/{path}" for path in clip_paths(RAW / SYNTHETIC_TRAIN)]
    splits["train"] += synthetic
    clips += synthetic
    waveforms = {split: torch.zeros(len(paths), 1, samples) for split, paths in splits.items()}
    position = {path: (split, index) for split, paths in splits.items() for index, path in enumerate(paths)}
    kept = {split: torch.zeros(len(paths), dtype=torch.bool) for split, paths in splits.items()}
    skipped = []
    results = prepare_many([RAW / path for path in clips], config["sample_rate"], config["clip_seconds"])
    progress = tqdm(results, total=len(clips), desc="preprocess", unit="clip")
    for relpath, (waveform, reason) in zip(clips, progress, strict=True):
        split, index = position[relpath]
        if waveform is None:
            print(f"warning: skipped {relpath}: {reason}", file=sys.stderr)
            skipped.append({"path": relpath, "reason": reason})
            continue
        waveforms[split][index] = waveform
        kept[split][index] = True

    counts = {}
    for split, paths in splits.items():
        keep = kept[split]
        names = [path for path, ok in zip(paths, keep.tolist(), strict=True) if ok]
        if not names:
            raise UserError(f"the {split} split is empty after preprocessing {RAW}; check the data and its split lists")
        labels = torch.tensor([LABEL_NAMES.index(path.split("/")[-2]) for path in names])
        save_split(
            out / f"{split}.pt",
            {
                "waveforms": waveforms[split] if keep.all() else waveforms[split][keep],
                "labels": labels,
                "speakers": [speaker_of(path) for path in names],
                "paths": names,
                "label_names": LABEL_NAMES,
                "sample_rate": config["sample_rate"],
            },
        )
        counts[split] = {"clips": len(names), "speakers": len({speaker_of(path) for path in names})}
        if split == "train":
            missing = [name for index, name in enumerate(LABEL_NAMES) if not (labels == index).any()]
            if missing:
                raise UserError(f"no training clip for label(s) {', '.join(missing)} in {RAW}")
    return {
        "split_rule": f"loso fold {fold}" if rule == "loso" else rule,
        "splits": counts,
        "synthetic_train_clips": len(synthetic),
        "skipped_files": len(skipped),
        "skipped_by_reason": dict(Counter(item["reason"].split(" (")[0] for item in skipped)),
        "skipped_folders": unknown_folders,
        "skipped": skipped,
    }


def main() -> None:
    config = params.load("preprocess")
    data = params.load("data")
    with atomic_dir(PROCESSED) as out:
        report = preprocess(config, out, data["split"], data["fold"])
        write_json(out / "report.json", report)
    summary = ", ".join(f"{split} {count['clips']}" for split, count in report["splits"].items())
    print(f"{PROCESSED}: {summary} clips; {report['skipped_files']} files skipped", file=sys.stderr)


if __name__ == "__main__":
    run(main)
