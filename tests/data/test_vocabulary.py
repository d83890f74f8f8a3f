"""Any vocabulary (``data.words``, ``data.unknown``, ``data.silence``) through the real download and preprocess stages:
a user's folder of recordings, the Speech Commands layout with its background noise, and the errors for bad words.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spokenwords.data.processed_splits import load_split
from spokenwords.data.sources import read_labels, read_list, speaker_of
from spokenwords.paths import SPLIT_NAMES
from tests.helpers import stage, tone, write_params, write_wav

WORDS = ["lights on", "lights off", "stop"]


def recordings(root: Path, labels: list[str], names: list[str], suffix: str = ".wav") -> list[str]:
    """Tone clips at ``root/<label>/<name><suffix>``, each label a pitch of its own, at 8 kHz stereo or 44.1 kHz."""
    paths = []
    for index, label in enumerate(labels):
        for name in names:
            rate = 8000 if index % 2 else 44100
            samples = tone(300 + 120 * index, rate, 0.5)
            write_wav(
                root / label / f"{name}{suffix}", np.stack([samples, samples], axis=1) if index % 2 else samples, rate
            )
            paths.append(f"{label}/{name}{suffix}")
    return paths


def raw_tree(root: Path) -> dict[str, bytes]:
    raw = root / "data/raw"
    return {path.relative_to(raw).as_posix(): path.read_bytes() for path in sorted(raw.rglob("*")) if path.is_file()}


def test_a_folder_of_recordings_without_lists_is_hashed_by_file_and_labelled_by_its_folders(tmp_path):
    folder = tmp_path / "my recordings"
    paths = recordings(folder, WORDS, [f"take {n}" for n in range(10)], ".flac")
    (folder / "stop" / "notes.txt").write_text("not audio\n")
    write_params(tmp_path, data={"source": "folder", "url": str(folder), "words": None})

    stage("download", tmp_path)
    stage("preprocess", tmp_path)

    raw = tmp_path / "data/raw"
    assert read_labels(raw) == sorted(WORDS), "without data.words, the labels are the folder names, sorted"
    assert sorted(path for path in raw_tree(tmp_path) if path.endswith(".flac")) == sorted(paths)
    validation, test = read_list(raw, "validation"), read_list(raw, "test")
    assert len(validation) == len(test) == 3 and validation.isdisjoint(test)
    splits = {name: load_split(tmp_path / f"data/processed/{name}.pt") for name in SPLIT_NAMES}
    assert sorted(splits["test"]["paths"]) == sorted(test)
    assert sum(len(data["paths"]) for data in splits.values()) == 30
    for data in splits.values():
        assert data["label_names"] == sorted(WORDS)
        assert [data["label_names"][label] for label in data["labels"]] == [p.split("/")[0] for p in data["paths"]]


def test_a_folder_with_split_lists_keeps_them_and_data_words_sets_the_label_order(tmp_path):
    folder = tmp_path / "recordings"
    speakers = ["ann", "bob", "cy", "dee"]
    recordings(folder, WORDS, [f"{speaker}_nohash_{n}" for speaker in speakers for n in range(2)])
    (folder / "validation_list.txt").write_text("".join(f"{w}/bob_nohash_{n}.wav\n" for w in WORDS for n in range(2)))
    (folder / "testing_list.txt").write_text("".join(f"{w}/cy_nohash_{n}.wav\n" for w in WORDS for n in range(2)))
    write_params(tmp_path, data={"source": "folder", "url": str(folder), "words": WORDS})

    stage("download", tmp_path)
    stage("preprocess", tmp_path)

    test = load_split(tmp_path / "data/processed/test.pt")
    assert test["label_names"] == WORDS and set(test["speakers"]) == {"cy"} and len(test["paths"]) == 6
    assert set(load_split(tmp_path / "data/processed/validation.pt")["speakers"]) == {"bob"}


def test_a_folder_without_lists_but_with_speakers_is_split_by_speaker(tmp_path):
    folder = tmp_path / "recordings"
    speakers = [f"speaker{index}" for index in range(12)]
    recordings(folder, ["yes", "no"], [f"{speaker}_nohash_0" for speaker in speakers])
    write_params(tmp_path, data={"source": "folder", "url": str(folder), "words": ["yes", "no"]})

    stage("download", tmp_path)

    raw = tmp_path / "data/raw"
    held_out = {split: {speaker_of(path) for path in read_list(raw, split)} for split in ("validation", "test")}
    assert len(held_out["validation"]) == len(held_out["test"]) == 1
    assert held_out["validation"].isdisjoint(held_out["test"])
    assert len(read_list(raw, "test")) == 2, "both words of the test speaker"


@pytest.mark.parametrize(
    ("labels", "words", "message"),
    [
        (["Yes", "no"], None, "folder 'Yes' is mixed-case: labels are lowercase, so write 'yes'"),
        (["yes", "no", "maybe"], ["yes", "no"], "folder 'maybe' is not in data.words (yes, no)"),
        (["yes", "no"], ["yes", "no", "go"], "has no clips of 'go'"),
    ],
)
def test_bad_folder_labels_are_one_line_errors_that_change_nothing(tmp_path, labels, words, message):
    folder = tmp_path / "recordings"
    recordings(folder, labels, ["a", "b", "c"])
    write_params(tmp_path, data={"source": "folder", "url": str(folder), "words": words})

    result = stage("download", tmp_path, check=False)

    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr  # the "using local folder" line, then the error
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir()), "nothing written"


def test_a_folder_label_with_no_clips_is_refused(tmp_path):
    folder = tmp_path / "recordings"
    recordings(folder, ["yes", "no"], ["a", "b", "c"])
    (folder / "go").mkdir()
    (folder / "go" / "readme.txt").write_text("nothing yet\n")
    write_params(tmp_path, data={"source": "folder", "url": str(folder), "words": ["yes", "no", "go"]})

    result = stage("download", tmp_path, check=False)

    assert result.returncode == 1 and "folder 'go' holds no clips" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"words": []}, "words is empty"),
        ({"words": ["yes", "no", "yes"]}, "names 'yes' twice"),
        ({"words": ["yes", "No"]}, "words: 'No' is mixed-case: labels are lowercase, so write 'no'"),
        ({"words": ["r2d2", "yes"]}, "the synthesiser cannot say 'r2d2'"),
    ],
)
def test_bad_words_are_one_line_errors_that_write_nothing(tmp_path, data, message):
    write_params(tmp_path, data=data)
    result = stage("download", tmp_path, check=False)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data/raw").exists()


def test_fsdd_has_only_the_digits(tmp_path):
    recordings_folder = tmp_path / "fsdd" / "recordings"
    for digit in range(10):
        write_wav(recordings_folder / f"{digit}_theo_0.wav", tone(300 + 50 * digit, 8000, 0.4), 8000)
    write_params(tmp_path, data={"source": "fsdd", "url": str(tmp_path / "fsdd"), "words": ["one", "yes"]})
    result = stage("download", tmp_path, check=False)
    assert result.returncode == 1 and "fsdd (the ten digits) has no clips of 'yes'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "data/raw").exists()


def speech_commands(root: Path, version_words: list[str], speakers: list[str]) -> Path:
    """A Speech Commands tree as the archive has it: word folders, the two lists and ``_background_noise_``."""
    tree = root / "speech_commands"
    names = [f"{word}/{speaker}_nohash_{n}.wav" for word in version_words for speaker in speakers for n in range(2)]
    for index, name in enumerate(names):
        write_wav(tree / name, tone(200 + index % 40 * 15, 16000, 0.6), 16000)
    (tree / "validation_list.txt").write_text("".join(f"{n}\n" for n in names if speakers[1] in n))
    (tree / "testing_list.txt").write_text("".join(f"{n}\n" for n in names if speakers[2] in n))
    rng = np.random.default_rng(0)
    for name, seconds in (("white_noise", 3.5), ("running_tap", 4.0), ("doing_the_dishes", 2.2)):
        write_wav(tree / "_background_noise_" / f"{name}.wav", 0.1 * rng.standard_normal(int(16000 * seconds)), 16000)
    (tree / "_background_noise_" / "README.md").write_text("noise\n")
    return tree


def test_speech_commands_twelve_classes_take_unknown_from_other_words_and_silence_from_background(tmp_path):
    words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    others = ["bed", "bird", "cat", "dog", "happy", "marvin", "sheila", "tree", "wow", "zero", "one", "two"]
    speakers = ["aaaa1111", "bbbb2222", "cccc3333", "dddd4444", "eeee5555"]
    tree = speech_commands(tmp_path / "mirror", words + others, speakers)
    write_params(
        tmp_path,
        data={"source": "speech-commands-v0.01", "url": str(tree), "words": words, "unknown": True, "silence": True},
    )

    stage("download", tmp_path)

    raw = tmp_path / "data/raw"
    assert read_labels(raw) == [*words, "_unknown_", "_silence_"]
    files = [path for path in raw_tree(tmp_path) if path.endswith(".wav")]
    per_word = len(speakers) * 2
    assert all(sum(path.startswith(f"{word}/") for path in files) == per_word for word in words)
    unknown = [path for path in files if path.startswith("_unknown_/")]
    assert 0.4 * per_word <= len(unknown) <= 2.5 * per_word, "about one word's worth of other words"
    assert {path.split("/")[1] for path in unknown} <= set(others)
    silence = sorted(path for path in files if path.startswith("_silence_/"))
    assert len(silence) == 3 + 4 + 2, "whole seconds of each noise recording"
    assert "_silence_/doing-the-dishes_nohash_1.wav" in silence
    validation, test = read_list(raw, "validation"), read_list(raw, "test")
    assert {path for path in unknown if "bbbb2222" in path} <= validation
    assert {path for path in unknown if "cccc3333" in path} <= test
    noise_splits = [{speaker_of(p) for p in silence if p in chosen} for chosen in (validation, test)]
    assert all(len(speakers_of) == 1 for speakers_of in noise_splits) and noise_splits[0] != noise_splits[1]

    stage("preprocess", tmp_path)
    report = json.loads((tmp_path / "data/processed/report.json").read_text())
    assert report["skipped_files"] == 0
    train = load_split(tmp_path / "data/processed/train.pt")
    assert train["label_names"] == [*words, "_unknown_", "_silence_"]
    assert set(train["labels"].tolist()) == set(range(12))


def test_speech_commands_without_the_asked_extra_classes_fails_clearly(tmp_path):
    tree = speech_commands(tmp_path / "mirror", ["yes", "no"], ["a1", "b2", "c3"])
    write_params(
        tmp_path, data={"source": "speech-commands", "url": str(tree), "words": ["yes", "no"], "unknown": True}
    )
    result = stage("download", tmp_path, check=False)
    assert result.returncode == 1 and "no words outside data.words" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "data/raw").exists()
