"""Split rules: which raw clips are training, validation and test data (``data.split``, ``data.fold``)."""

from __future__ import annotations

from spokenwords.cli import UserError
from spokenwords.data.sources import speaker_disjoint, speaker_of
from spokenwords.paths import SPLIT_NAMES


def split_of(relpath: str, lists: dict[str, set[str]]) -> str:
    """The split a raw clip belongs to: a list it is on, or training."""
    for split, paths in lists.items():
        if relpath in paths:
            return split
    return "train"


def assign_splits(paths: list[str], lists: dict[str, set[str]], split: str, fold: int) -> dict[str, list[str]]:
    """Share raw clips among train, validation and test by the rule ``data.split`` names.

    ``official``: the source's documented lists. ``speaker``: validation and test speakers chosen by hash, as
    ``speaker_disjoint`` does for Speech Commands. ``loso``: leave one speaker out, speaker number ``fold`` in
    sorted order is the test split; the other speakers' clips on the validation list are validation, the rest
    train, so every remaining speaker still trains and the test voice is never heard in training.
    """
    speakers = sorted({speaker_of(path) for path in paths})
    if split == "official":
        chosen = {path: split_of(path, lists) for path in paths}
    elif split == "speaker":
        validation_speakers, test_speakers = speaker_disjoint(speakers)
        held_out = {**dict.fromkeys(validation_speakers, "validation"), **dict.fromkeys(test_speakers, "test")}
        chosen = {path: held_out.get(speaker_of(path), "train") for path in paths}
    else:
        if not fold < len(speakers):
            raise UserError(f"params.yaml: data.fold must be < {len(speakers)}, the number of speakers, got {fold}")
        validation = lists["validation"]
        chosen = {
            path: "test" if speaker_of(path) == speakers[fold] else "validation" if path in validation else "train"
            for path in paths
        }
    return {name: [path for path in paths if chosen[path] == name] for name in SPLIT_NAMES}
