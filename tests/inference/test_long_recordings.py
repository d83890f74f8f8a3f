"""The long-recording benchmark: which FSDD clips it hides, how it hides them, and its grid record."""

from __future__ import annotations

import tarfile

import numpy as np
import torch

from benchmarks.long_recordings import compare, fsdd_clips, hide
from benchmarks.run import SPEAKERS, Run, long_clips
from spokenwords.data.sources import DIGITS
from spokenwords.models.architectures import build_model
from spokenwords.models.checkpoint import save_checkpoint
from tests.helpers import tone, write_wav


def fsdd_folder(root, names: list[str]):
    """An FSDD-like tree: ``<name>.wav`` tones in free-spoken-digit-dataset-1.0.10/recordings."""
    folder = root / "free-spoken-digit-dataset-1.0.10" / "recordings"
    for index, name in enumerate(names):
        write_wav(folder / f"{name}.wav", tone(200 + 50 * index, 8000, 0.5), 8000)
    return root


def test_the_clips_are_all_the_official_test_split_or_one_speakers(tmp_path):
    root = fsdd_folder(tmp_path, ["0_george_0", "0_george_7", "1_jackson_4", "2_jackson_12"])
    assert [path.stem for path in fsdd_clips(root, "all")] == [
        "0_george_0",
        "0_george_7",
        "1_jackson_4",
        "2_jackson_12",
    ]
    assert [path.stem for path in fsdd_clips(root, "test")] == ["0_george_0", "1_jackson_4"]
    assert [path.stem for path in fsdd_clips(root, "jackson")] == ["1_jackson_4", "2_jackson_12"]


def test_a_hidden_clip_sits_whole_in_a_longer_noisy_recording():
    clip = tone(440, 8000, 0.6).astype(np.float32)
    for seed in range(5):
        recording = hide(clip, 8000, np.random.default_rng(seed))
        assert 8000 <= recording.size <= 80000 and recording.size >= clip.size + 4000
        # the squared misfit of the clip at every offset: window energy - 2 * correlation + clip energy
        energy = np.convolve(recording.astype(np.float64) ** 2, np.ones(clip.size), mode="valid")
        misfit = energy - 2 * np.correlate(recording, clip, mode="valid") + np.sum(clip.astype(np.float64) ** 2)
        noise_rms = np.sqrt(np.mean(clip**2)) / 10 ** (30 / 20)
        assert np.sqrt(max(misfit.min(), 0) / clip.size) < 1.5 * noise_rms


def test_each_grid_column_hides_the_clips_its_model_never_trained_on():
    def run(column: str, *overrides: str) -> Run:
        return Run(row="embedding", column=column, key="k", name="n", overrides=overrides)

    assert long_clips(run("synthetic", "data.source=synthetic")) == "all"
    assert long_clips(run("official", "data.split=official")) == "test"
    assert long_clips(run("loso", "data.split=loso", "data.fold=3")) == SPEAKERS[3] == "nicolas"


def test_compare_scores_the_clips_as_given_and_hidden(tmp_path):
    names = [f"{digit}_theo_{n}" for digit in range(3) for n in range(2)]
    archive = tmp_path / "fsdd.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(fsdd_folder(tmp_path / "tree", names), arcname=".")
    torch.manual_seed(0)
    model = build_model({"name": "m5"}, n_output=len(DIGITS))
    save_checkpoint(tmp_path / "model.pt", model, {"name": "m5"}, list(DIGITS), {"sample_rate": 8000, "samples": 8000})
    result = compare(tmp_path / "model.pt", archive, clips="test")
    assert result["clips"] == len(names)  # recordings 0 and 1 of each digit are all in the test split
    assert 0 <= result["given"] <= 1 and 0 <= result["long"] <= 1
    assert set(result["lost"]) <= {f"{name}.wav" for name in names}
    assert compare(tmp_path / "model.pt", archive, clips="theo") == result  # the same clips, the same placements
