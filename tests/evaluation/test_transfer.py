"""The `transfer` stage: a trained model scored on whole other corpora, with missing and damaged sets handled."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spokenwords.models.architectures import M5
from spokenwords.models.checkpoint import save_checkpoint
from spokenwords.params import DIGITS
from tests.helpers import FSDD_ARCHIVE, stage, tone, write_params, write_wav


def write_model(root, labels: tuple[str, ...] = DIGITS):
    torch.manual_seed(0)
    model, audio = M5(n_output=len(labels)), {"sample_rate": 8000, "samples": 8000}
    save_checkpoint(root / "models/model.pt", model, {"name": "m5"}, list(labels), audio)


def digit_recordings(folder, takes: int = 2) -> None:
    for digit in range(10):
        for take in range(takes):
            write_wav(folder / f"{digit}_anna_{take}.wav", tone(300 + 60 * digit, 8000, 0.4), 8000)


def test_a_model_of_other_words_skips_a_digit_corpus_and_one_with_unknown_scores_it_as_unknown(tmp_path):
    digit_recordings(tmp_path / "mirror" / "recordings")
    write_model(tmp_path, ("yes", "no"))
    transfer(tmp_path, {"fsdd": str(tmp_path / "mirror")})
    scores = json.loads((tmp_path / "metrics/transfer.json").read_text())["fsdd"]
    assert scores == {
        "skipped": "none of its words (eight, five, four, nine, one, seven, six, three, two, zero) is "
        "a label of the model"
    }

    write_model(tmp_path, ("yes", "one", "_unknown_"))
    transfer(tmp_path, {"fsdd": str(tmp_path / "mirror")})
    scores = json.loads((tmp_path / "metrics/transfer.json").read_text())["fsdd"]
    assert scores["clips"] == 20, "every digit: 'one' as itself, the others as _unknown_"
    assert sum(scores["confusion"]["_unknown_"].values()) == 18 and sum(scores["confusion"]["one"].values()) == 2
    assert 0 <= scores["unknown_false_accept"] <= 1 and "words_accuracy" in scores


def transfer(root, sets: dict, check: bool = True):
    write_params(root, transfer={"sets": sets, "device": "cpu"})
    return stage("transfer", root, check=check)


def test_a_folder_set_is_scored_clip_by_clip_and_a_silent_file_is_skipped(tmp_path):
    write_model(tmp_path)
    recordings = tmp_path / "mirror" / "recordings"
    rng = np.random.default_rng(0)
    for digit in range(10):
        for take in range(3):
            word = tone(300 + 60 * digit, 8000, 0.4)
            recording = np.concatenate([np.zeros(int(8000 * rng.uniform(0, 3)), np.float32), word])
            write_wav(recordings / f"{digit}_anna_{take}.wav", recording, 8000)
    write_wav(recordings / "3_anna_9.wav", np.zeros(8000, np.float32), 8000)

    result = transfer(tmp_path, {"fsdd": str(tmp_path / "mirror")})

    scores = json.loads((tmp_path / "metrics/transfer.json").read_text())["fsdd"]
    assert scores["clips"] == 30 and scores["skipped_files"] == 1
    assert sum(sum(row.values()) for row in scores["confusion"].values()) == 30
    diagonal = sum(row.get(name, 0) for name, row in scores["confusion"].items())
    assert scores["accuracy"] == pytest.approx(diagonal / 30)
    assert 0 <= scores["macro_f1"] <= 1 and "transfer fsdd: accuracy" in result.stdout


def test_a_missing_local_set_is_skipped_and_recorded(tmp_path):
    write_model(tmp_path)
    result = transfer(tmp_path, {"fsdd": "nowhere/fsdd.tar.gz"})
    assert json.loads((tmp_path / "metrics/transfer.json").read_text()) == {
        "fsdd": {"skipped": "nowhere/fsdd.tar.gz does not exist"}
    }
    assert "warning: transfer set 'fsdd' skipped" in result.stderr


def test_a_null_set_is_off_and_fetches_nothing(tmp_path):
    """Null is how `dvc exp run -S transfer.sets.fsdd=null` turns a set off; "" would fetch the source's URL."""
    write_model(tmp_path)
    transfer(tmp_path, {"fsdd": None, "tiny-speech-commands": "nowhere/tiny.tar.gz"})
    assert json.loads((tmp_path / "metrics/transfer.json").read_text()) == {
        "tiny-speech-commands": {"skipped": "nowhere/tiny.tar.gz does not exist"}
    }


def test_a_damaged_archive_is_a_clear_error_and_writes_nothing(tmp_path):
    write_model(tmp_path)
    (tmp_path / "bad.tar.gz").write_bytes(b"\x1f\x8b" + bytes(range(200)))
    result = transfer(tmp_path, {"fsdd": str(tmp_path / "bad.tar.gz")}, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "error:" in result.stderr
    assert not (tmp_path / "metrics").exists()


def test_an_unknown_set_name_is_refused_by_the_params_check(tmp_path):
    write_model(tmp_path)
    result = transfer(tmp_path, {"timit": "somewhere"}, check=False)
    assert result.returncode == 1 and "transfer.sets must be a mapping" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not FSDD_ARCHIVE.is_file(), reason=f"the FSDD mirror {FSDD_ARCHIVE} is not on this machine")
def test_the_fsdd_mirror_is_scored_whole(tmp_path):
    write_model(tmp_path)
    transfer(tmp_path, {"fsdd": str(FSDD_ARCHIVE)})
    scores = json.loads((tmp_path / "metrics/transfer.json").read_text())["fsdd"]
    assert scores["clips"] + scores["skipped_files"] == 3000 and scores["clips"] > 2990
