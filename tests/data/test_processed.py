"""Processed splits on disk: streamed into memory-mapped float32 ``.npy`` files, bitwise the decoded clips, and a
preprocess whose memory does not grow with the number of clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spokenwords.audio.torch_shaping import prepare
from spokenwords.data.processed_splits import load_split, save_split
from spokenwords.data.sources import DIGITS, write_labels
from spokenwords.paths import SPLIT_NAMES
from tests.helpers import tone, write_params, write_wav
from tools.project import measure

RATE = 16000
SPEAKERS = ("s0", "s1", "s2")


def write_corpus(root: Path, takes: int) -> list[str]:
    """``takes`` tone clips per digit and speaker (s1 validation, s2 test), each a different pitch and length."""
    raw = root / "data/raw"
    names = [f"{digit}/{speaker}_nohash_{n}.wav" for digit in DIGITS for speaker in SPEAKERS for n in range(takes)]
    for index, name in enumerate(names):
        write_wav(raw / name, tone(100 + index % 300 * 7, RATE, 0.3 + index % 7 * 0.1), RATE)
    write_labels(raw, DIGITS)
    for split, speaker in (("validation_list", "s1"), ("testing_list", "s2")):
        (raw / f"{split}.txt").write_text("".join(f"{name}\n" for name in names if f"/{speaker}_" in name))
    write_params(root, preprocess={"sample_rate": RATE, "clip_seconds": 1.0})
    return names


def preprocess(root: Path):
    result = measure("stages.preprocess", root)
    assert result.returncode == 0, result.output
    return result


def mapped_from(path: Path, tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s memory lies in a mapping of the file ``path`` in this process."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and Path(fields[5]) == path.resolve():
            start, end = (int(bound, 16) for bound in fields[0].split("-"))
            if start <= address < end:
                return True
    return False


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux's /proc")
def test_preprocess_streams_bitwise_clips_into_memory_mapped_files_and_skips_bad_ones(tmp_path):
    names = write_corpus(tmp_path, takes=2)
    raw = tmp_path / "data/raw"
    bad = ["zero/s0_nohash_7.wav", "five/s1_nohash_8.wav", "nine/s2_nohash_9.wav"]
    (raw / bad[0]).write_bytes(b"")
    (raw / bad[1]).write_bytes(np.random.default_rng(0).bytes(3000))
    write_wav(raw / bad[2], np.zeros(0, dtype=np.float32), RATE)

    preprocess(tmp_path)

    processed = tmp_path / "data/processed"
    splits = {split: load_split(processed / f"{split}.pt") for split in SPLIT_NAMES}
    assert sorted(path for data in splits.values() for path in data["paths"]) == sorted(names)
    for split, data in splits.items():
        decoded = torch.stack([prepare(raw / path, RATE, 1.0) for path in data["paths"]])
        waveforms = data["waveforms"]
        assert waveforms.dtype == torch.float32 and waveforms.shape == decoded.shape
        assert torch.equal(waveforms.view(torch.int32), decoded.view(torch.int32)), "not bitwise the decoded clips"
        assert mapped_from(processed / f"{split}.npy", waveforms), "the waveforms were read into memory"


def test_a_split_saved_from_memory_loads_back_the_same_and_writes_the_same_bytes(tmp_path):
    waveforms = torch.randn(5, 1, 80)
    split = {"waveforms": waveforms, "labels": torch.arange(5), "label_names": list(DIGITS), "sample_rate": 80}
    for folder in ("a", "b"):
        save_split(tmp_path / folder / "train.pt", split)
    loaded = load_split(tmp_path / "a/train.pt")
    assert torch.equal(loaded["waveforms"], waveforms) and torch.equal(loaded["labels"], split["labels"])
    assert np.load(tmp_path / "a/train.npy").shape == (5, 1, 80)
    for name in ("train.pt", "train.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_preprocess_memory_does_not_grow_with_the_clips(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    write_corpus(small, takes=8)  # 240 clips, 15 MB of float32 output
    write_corpus(large, takes=32)  # 960 clips, 61 MB
    output_growth_mb = 720 * RATE * 4 / 2**20
    growth_mb = preprocess(large).main_rss_mb - preprocess(small).main_rss_mb
    # Holding a split in memory would add the whole output growth (46 MB) to the main process, where the workers'
    # clips arrive; streaming them to the file adds a few path strings.
    assert growth_mb < output_growth_mb / 3, f"peak RSS grew {growth_mb:.1f} MB for {output_growth_mb:.0f} MB of output"
