"""The download and preprocess stages on archives and folders built here, and on the shared FSDD mirror."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from spokenwords.data.processed_splits import load_split
from spokenwords.data.sources import DIGITS, read_list, speaker_disjoint, speaker_of, write_labels
from spokenwords.paths import SPLIT_NAMES
from tests.helpers import FSDD_ARCHIVE, stage, tone, write_params, write_wav


def make_tree(root: Path, names: list[str], rate: int = 16000) -> None:
    """Short tones at ``root/<name>``; the pitch depends on the file so every clip differs."""
    for index, name in enumerate(names):
        write_wav(root / name, tone(200 + index % 50 * 10, rate, 0.3), rate)


def tar_gz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def speech_commands_names(words: tuple[str, ...], speakers: list[str], takes: int = 2) -> list[str]:
    return [f"{word}/{speaker}_nohash_{take}.wav" for word in words for speaker in speakers for take in range(takes)]


def raw_files(root: Path) -> list[str]:
    return sorted(path.relative_to(root / "data/raw").as_posix() for path in (root / "data/raw").rglob("*.wav"))


def test_speaker_disjoint_split_is_disjoint_stable_and_never_empty():
    speakers = [f"s{index:03d}" for index in range(97)]
    validation, test = speaker_disjoint(speakers)
    assert validation.isdisjoint(test) and len(validation) == len(test) == 10
    assert speaker_disjoint(reversed(speakers)) == (validation, test)
    small_validation, small_test = speaker_disjoint(["a", "b", "c"])
    assert len(small_validation) == len(small_test) == 1 and small_validation != small_test


def test_speech_commands_layout_from_a_file_url_keeps_the_digits_and_official_lists(tmp_path):
    tree = tmp_path / "mirror" / "speech_commands_v0.02"
    names = speech_commands_names((*DIGITS, "yes", "marvin"), ["aaaa1111", "bbbb2222", "cccc3333", "dddd4444"])
    make_tree(tree, names)
    make_tree(tree / "_background_noise_", ["noise.wav"])
    (tree / "validation_list.txt").write_text("".join(f"{n}\n" for n in names if "bbbb2222" in n))
    (tree / "testing_list.txt").write_text("".join(f"{n}\n" for n in names if "cccc3333" in n))
    archive = tar_gz(tree, tmp_path / "mirror" / "sc.tar.gz")
    write_params(tmp_path, data={"source": "speech-commands", "url": archive.as_uri()})

    result = stage("download", tmp_path)

    assert f"fetching {archive.as_uri()}" in result.stderr or str(archive) in result.stderr
    digits = [name for name in names if name.split("/")[0] in DIGITS]
    assert raw_files(tmp_path) == sorted(digits)
    assert read_list(tmp_path / "data/raw", "validation") == {n for n in digits if "bbbb2222" in n}
    assert read_list(tmp_path / "data/raw", "test") == {n for n in digits if "cccc3333" in n}
    assert sorted(path.name for path in (tmp_path / "data").iterdir()) == ["raw"], "no temporary files left"


def fsdd_tree(root: Path, speakers: list[str], takes: int = 12) -> Path:
    recordings = root / "free-spoken-digit-dataset-1.0.10" / "recordings"
    make_tree(recordings, [f"{d}_{s}_{n}.wav" for d in range(10) for s in speakers for n in range(takes)], rate=8000)
    (recordings.parent / "README.md").write_text("FSDD\n")
    return recordings.parent


def test_fsdd_layout_is_renamed_and_split_by_its_documented_rule(tmp_path):
    archive = tar_gz(fsdd_tree(tmp_path / "mirror", ["george", "jackson", "theo"]), tmp_path / "fsdd.tar.gz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    write_params(tmp_path, data={"source": "fsdd", "url": str(archive), "sha256": digest})

    stage("download", tmp_path)

    files = raw_files(tmp_path)
    assert len(files) == 360 and "seven/theo_nohash_11.wav" in files
    test, validation = read_list(tmp_path / "data/raw", "test"), read_list(tmp_path / "data/raw", "validation")
    assert test == {f for f in files if int(f.split("_")[-1][:-4]) < 5}
    assert validation == {f for f in files if 5 <= int(f.split("_")[-1][:-4]) < 10}
    source = tmp_path / "mirror/free-spoken-digit-dataset-1.0.10/recordings/7_theo_11.wav"
    assert (tmp_path / "data/raw/seven/theo_nohash_11.wav").read_bytes() == source.read_bytes()


def test_synthetic_training_clips_join_only_the_training_split_of_a_recorded_source(tmp_path):
    archive = tar_gz(fsdd_tree(tmp_path / "mirror", ["george", "jackson", "theo"]), tmp_path / "fsdd.tar.gz")
    write_params(
        tmp_path, data={"source": "fsdd", "url": str(archive), "synthetic_train_clips": 20, "split": "loso", "fold": 1}
    )

    assert "plus 20 synthetic training clips" in stage("download", tmp_path).stderr
    raw = tmp_path / "data/raw"
    synthetic = [name for name in raw_files(tmp_path) if name.startswith("synthetic_train/")]
    assert len(synthetic) == 20 and len(raw_files(tmp_path)) == 360 + 20
    listed = read_list(raw, "validation") | read_list(raw, "test")
    assert listed and not any(name.startswith("synthetic_train/") for name in listed)

    result = stage("preprocess", tmp_path)
    assert "not a digit label" not in result.stderr
    splits = {name: load_split(tmp_path / f"data/processed/{name}.pt") for name in SPLIT_NAMES}
    assert set(splits["test"]["speakers"]) == {"jackson"}, "the fold still counts the recorded speakers only"
    in_train = [path for path in splits["train"]["paths"] if path.startswith("synthetic_train/")]
    assert sorted(in_train) == synthetic
    for name in ("validation", "test"):
        assert not any(path.startswith("synthetic_train/") for path in splits[name]["paths"])
    labels = dict(zip(splits["train"]["paths"], splits["train"]["labels"].tolist(), strict=True))
    names = splits["train"]["label_names"]
    assert all(names[labels[path]] == path.split("/")[1] for path in in_train)
    report = json.loads((tmp_path / "data/processed/report.json").read_text())
    assert report["synthetic_train_clips"] == 20
    assert report["splits"]["train"]["clips"] == 240 - 100 + 20  # george and theo, less their validation takes 5-9


def test_tiny_speech_commands_tests_on_its_validation_list_and_carves_a_speaker_disjoint_validation(tmp_path):
    tree = tmp_path / "TinySpeechCommands"
    speakers = [f"{index:08x}" for index in range(12)]
    names = speech_commands_names(DIGITS, speakers, takes=1)
    make_tree(tree / "train", names)
    (tree / "train" / "validation_list.txt").write_text("".join(f"{n}\n" for n in names if speakers[0] in n))
    write_params(tmp_path, data={"source": "tiny-speech-commands", "url": str(tree)})

    stage("download", tmp_path)

    raw = tmp_path / "data/raw"
    test, validation = read_list(raw, "test"), read_list(raw, "validation")
    assert test == {n for n in names if speakers[0] in n}
    train = set(raw_files(tmp_path)) - test - validation
    assert validation and train
    assert {speaker_of(n) for n in validation}.isdisjoint(speaker_of(n) for n in train | test)


def test_digest_mismatch_fails_cleanly_and_leaves_no_raw_data(tmp_path):
    archive = tar_gz(fsdd_tree(tmp_path / "mirror", ["george", "jackson", "theo"], takes=1), tmp_path / "f.tar.gz")
    write_params(tmp_path, data={"source": "fsdd", "url": archive.as_uri(), "sha256": "0" * 64})
    result = stage("download", tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "0" * 64 in result.stderr and hashlib.sha256(archive.read_bytes()).hexdigest() in result.stderr
    assert not (tmp_path / "data/raw").exists()
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("member", ["../escaped.wav", "/tmp/absolute-escape.wav", "link"])
def test_malicious_archive_is_refused_by_the_stage_and_writes_nothing(tmp_path, member):
    archive = tmp_path / "evil.tar.gz"
    payload = tmp_path / "payload.wav"
    payload.write_bytes(b"RIFF")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(payload, arcname="recordings/0_george_0.wav")
        if member == "link":
            info = tarfile.TarInfo("recordings/1_george_0.wav")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info = tarfile.TarInfo(member)  # set directly: tar.add() would strip a leading "/"
            info.size = len(payload.read_bytes())
            tar.addfile(info, io.BytesIO(payload.read_bytes()))
    write_params(tmp_path, data={"source": "fsdd", "url": str(archive)})
    result = stage("download", tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "evil.tar.gz" in result.stderr
    assert not (tmp_path / "data/raw").exists()
    assert not (tmp_path / "escaped.wav").exists() and not Path("/tmp/absolute-escape.wav").exists()


def test_synthetic_source_refuses_a_url(tmp_path):
    write_params(tmp_path, data={"url": "https://example.invalid/x.tar.gz"})
    result = stage("download", tmp_path, check=False)
    assert result.returncode == 1 and "data.url must be empty for data.source 'synthetic'" in result.stderr


def write_raw(root: Path, speakers: list[str]) -> list[str]:
    names = speech_commands_names(DIGITS, speakers)
    make_tree(root / "data/raw", names, rate=16000)
    write_labels(root / "data/raw", DIGITS)
    (root / "data/raw/validation_list.txt").write_text("".join(f"{n}\n" for n in names if speakers[1] in n))
    (root / "data/raw/testing_list.txt").write_text("".join(f"{n}\n" for n in names if speakers[2] in n))
    return names


def test_preprocess_writes_fixed_length_splits_and_reports_bad_input(tmp_path):
    names = write_raw(tmp_path, ["s0", "s1", "s2", "s3"])
    raw = tmp_path / "data/raw"
    (raw / "zero/s0_nohash_7.wav").write_bytes(b"")
    (raw / "one/s0_nohash_8.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    write_wav(raw / "two/s0_nohash_9.wav", np.zeros(0, dtype=np.float32), 8000)
    make_tree(raw / "banana", ["s0_nohash_0.wav"])
    write_params(tmp_path, preprocess={"sample_rate": 8000, "clip_seconds": 1.0})

    result = stage("preprocess", tmp_path)

    splits = {split: load_split(tmp_path / f"data/processed/{split}.pt") for split in ("train", "validation", "test")}
    assert {split: len(data["paths"]) for split, data in splits.items()} == {"train": 40, "validation": 20, "test": 20}
    for data in splits.values():
        assert data["waveforms"].shape == (len(data["paths"]), 1, 8000) and data["waveforms"].dtype == torch.float32
        assert data["label_names"] == list(DIGITS) and data["sample_rate"] == 8000
        assert [data["label_names"][label] for label in data["labels"]] == [p.split("/")[0] for p in data["paths"]]
        assert data["speakers"] == [speaker_of(p) for p in data["paths"]]
    assert set(splits["test"]["speakers"]) == {"s2"} and set(splits["validation"]["speakers"]) == {"s1"}
    assert sorted(splits["train"]["paths"] + splits["validation"]["paths"] + splits["test"]["paths"]) == sorted(names)
    report = json.loads((tmp_path / "data/processed/report.json").read_text())
    assert report["skipped_files"] == 3 and report["skipped_folders"] == ["banana"]
    assert report["skipped_by_reason"] == {"not readable audio": 2, "zero-length audio": 1}
    assert "warning: skipped zero/s0_nohash_7.wav" in result.stderr


def test_preprocess_fails_clearly_on_an_empty_split_or_a_missing_label(tmp_path):
    write_raw(tmp_path, ["s0", "s1", "s2"])
    write_params(tmp_path)
    (tmp_path / "data/raw/testing_list.txt").write_text("")
    result = stage("preprocess", tmp_path, check=False)
    assert result.returncode == 1 and "the test split is empty" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data/processed").exists()

    write_raw(tmp_path, ["s0", "s1", "s2"])
    for path in (tmp_path / "data/raw/four").glob("s0_*"):
        path.unlink()
    result = stage("preprocess", tmp_path, check=False)
    assert result.returncode == 1 and "no training clip for label(s) four" in result.stderr
    assert not (tmp_path / "data/processed").exists()


@pytest.mark.skipif(not FSDD_ARCHIVE.exists(), reason="the shared FSDD mirror (../shared/datasets) is absent")
def test_shared_fsdd_mirror_through_download_and_preprocess(tmp_path):
    write_params(tmp_path, data={"source": "fsdd", "url": str(FSDD_ARCHIVE)})
    stage("download", tmp_path)
    stage("preprocess", tmp_path)
    report = json.loads((tmp_path / "data/processed/report.json").read_text())
    assert report["splits"] == {
        "train": {"clips": 2400, "speakers": 6},
        "validation": {"clips": 300, "speakers": 6},
        "test": {"clips": 300, "speakers": 6},
    }
    assert report["skipped_files"] == 0
