"""`data.split`: the source's lists, a hashed speaker-disjoint split, and leave-one-speaker-out folds."""

from __future__ import annotations

import json

import pytest

from spokenwords.cli import UserError
from spokenwords.data.processed_splits import load_split
from spokenwords.data.sources import DIGITS, speaker_of, write_labels
from spokenwords.data.splits import assign_splits
from tests.helpers import stage, tone, write_params, write_wav

SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
PATHS = sorted(f"{digit}/{speaker}_nohash_{take}.wav" for digit in DIGITS for speaker in SPEAKERS for take in range(12))


def take(path: str) -> int:
    return int(path.rsplit("_", 1)[1].split(".")[0])


# FSDD's documented rule: takes 0-4 test, 5-9 validation, the rest train, so every speaker is in every split.
LISTS = {
    "validation": {path for path in PATHS if 5 <= take(path) <= 9},
    "test": {path for path in PATHS if take(path) < 5},
}


def speakers(paths: list[str]) -> set[str]:
    return {speaker_of(path) for path in paths}


def test_official_split_follows_the_sources_lists():
    splits = assign_splits(PATHS, LISTS, "official", 0)
    assert set(splits["test"]) == LISTS["test"] and set(splits["validation"]) == LISTS["validation"]
    assert speakers(splits["train"]) == speakers(splits["test"]) == set(SPEAKERS)


def test_speaker_split_is_disjoint_and_covers_every_clip():
    splits = assign_splits(PATHS, LISTS, "speaker", 0)
    train, validation, test = (speakers(splits[name]) for name in ("train", "validation", "test"))
    assert train and validation and test
    assert train.isdisjoint(validation) and train.isdisjoint(test) and validation.isdisjoint(test)
    assert sorted(path for split in splits.values() for path in split) == PATHS
    assert assign_splits(list(reversed(PATHS)), LISTS, "speaker", 0)["test"] == list(reversed(splits["test"]))


def test_each_loso_fold_tests_one_unseen_speaker_and_the_folds_cover_all():
    tested = []
    for fold in range(len(SPEAKERS)):
        splits = assign_splits(PATHS, LISTS, "loso", fold)
        assert speakers(splits["test"]) == {SPEAKERS[fold]}
        assert SPEAKERS[fold] not in speakers(splits["train"]) | speakers(splits["validation"])
        assert speakers(splits["train"]) == set(SPEAKERS) - {SPEAKERS[fold]}, "every other speaker still trains"
        assert set(splits["validation"]) == LISTS["validation"] - set(splits["test"])
        assert sorted(path for split in splits.values() for path in split) == PATHS
        tested += splits["test"]
    assert sorted(tested) == PATHS
    with pytest.raises(UserError, match=r"data.fold must be < 6"):
        assign_splits(PATHS, LISTS, "loso", 6)


def test_preprocess_applies_the_split_from_params(tmp_path):
    raw = tmp_path / "data/raw"
    names = [path for path in PATHS if take(path) in (0, 5, 10)]
    for index, name in enumerate(names):
        write_wav(raw / name, tone(200 + 10 * index, 8000, 0.3), 8000)
    write_labels(raw, DIGITS)
    (raw / "validation_list.txt").write_text("".join(f"{n}\n" for n in names if take(n) == 5))
    (raw / "testing_list.txt").write_text("".join(f"{n}\n" for n in names if take(n) == 0))
    write_params(tmp_path, data={"split": "loso", "fold": 2})
    stage("preprocess", tmp_path)
    test = load_split(tmp_path / "data/processed/test.pt")
    assert set(test["speakers"]) == {"lucas"} and len(test["paths"]) == 30
    report = json.loads((tmp_path / "data/processed/report.json").read_text())
    assert report["split_rule"] == "loso fold 2"
    assert report["splits"]["train"] == {"clips": 100, "speakers": 5}, "the other speakers' test takes train"
    assert report["splits"]["validation"] == {"clips": 50, "speakers": 5}

    write_params(tmp_path, data={"split": "loso", "fold": 9})
    result = stage("preprocess", tmp_path, check=False)
    assert result.returncode == 1 and "data.fold must be < 6" in result.stderr and "Traceback" not in result.stderr
