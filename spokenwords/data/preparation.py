"""Decode every raw clip once into fixed-length (padded) waveforms per split, the processed split files."""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from spokenwords.audio.torch_shaping import prepare_many
from spokenwords.cli import UserError
from spokenwords.data.processed_splits import WAVEFORM_DTYPE, save_metadata, waveform_file, waveform_path
from spokenwords.data.sources import (
    LIST_FILES,
    SYNTHETIC_TRAIN,
    clip_paths,
    label_of,
    read_labels,
    read_list,
    speaker_of,
    synthetic_train_paths,
    unknown_folders,
)
from spokenwords.data.splits import assign_splits
from spokenwords.fileio import ensure_space
from spokenwords.params import PreprocessParams
from spokenwords.paths import RAW, split_file


def scan(raw: Path) -> tuple[list[str], list[str]]:
    """Relative paths of candidate clips under ``raw``, and the folders skipped as unknown labels."""
    if not raw.is_dir():
        raise UserError(f"{raw} is missing: run `dvc repro download` first")
    unknown = unknown_folders(raw)
    for name in unknown:
        print(f"warning: skipped folder {raw / name}: '{name}' is not a label in {raw}/labels.txt", file=sys.stderr)
    return clip_paths(raw), unknown


def preprocess(config: PreprocessParams, out: Path, rule: str = "official", fold: int = 0) -> dict:
    """Write the three split files into ``out``, shared by ``rule`` (see ``assign_splits``); return the report."""
    clips, skipped_folders = scan(RAW)
    label_names = read_labels(RAW)
    lists = {name: read_list(RAW, name) for name in LIST_FILES}
    samples = round(config.sample_rate * config.clip_seconds)
    splits = assign_splits(clips, lists, rule, fold)
    synthetic = [f"{SYNTHETIC_TRAIN}/{path}" for path in synthetic_train_paths(RAW)]
    splits["train"] += synthetic
    clips += synthetic
    # the split files' size if every clip decodes, refused now rather than after decoding until the disk is full
    ensure_space(out, len(clips) * samples * WAVEFORM_DTYPE.itemsize)
    split_of = {path: split for split, paths in splits.items() for path in paths}
    kept: dict[str, list[str]] = {split: [] for split in splits}
    skipped = []
    results = prepare_many([RAW / path for path in clips], config.sample_rate, config.clip_seconds)
    progress = tqdm(results, total=len(clips), desc="preprocess", unit="clip")
    with contextlib.ExitStack() as files:
        rows = {
            split: files.enter_context(waveform_file(waveform_path(split_file(split, out)), samples))
            for split in splits
        }
        # Each split's clips come in the order of its list (assign_splits keeps the order of `clips`), so appending
        # as they come gives the rows that order, skipped files left out.
        for relpath, (waveform, reason) in zip(clips, progress, strict=True):
            if waveform is None:
                print(f"warning: skipped {relpath}: {reason}", file=sys.stderr)
                skipped.append({"path": relpath, "reason": reason})
                continue
            rows[split_of[relpath]].append(waveform)
            kept[split_of[relpath]].append(relpath)

    counts = {}
    for split, names in kept.items():
        if not names:
            raise UserError(f"the {split} split is empty after preprocessing {RAW}; check the data and its split lists")
        labels = torch.tensor([label_names.index(label_of(path.removeprefix(f"{SYNTHETIC_TRAIN}/"))) for path in names])
        save_metadata(
            split_file(split, out),
            {
                "labels": labels,
                "speakers": [speaker_of(path) for path in names],
                "paths": names,
                "label_names": label_names,
                "sample_rate": config.sample_rate,
            },
        )
        counts[split] = {"clips": len(names), "speakers": len({speaker_of(path) for path in names})}
        if split == "train":
            missing = [name for index, name in enumerate(label_names) if not (labels == index).any()]
            if missing:
                raise UserError(f"no training clip for label(s) {', '.join(missing)} in {RAW}")
    return {
        "split_rule": f"loso fold {fold}" if rule == "loso" else rule,
        "splits": counts,
        "synthetic_train_clips": len(synthetic),
        "skipped_files": len(skipped),
        "skipped_by_reason": dict(Counter(item["reason"].split(" (")[0] for item in skipped)),
        "skipped_folders": skipped_folders,
        "skipped": skipped,
    }
