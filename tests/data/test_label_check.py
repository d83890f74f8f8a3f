"""A model and the data it is scored on must name the same labels in the same order, at the same sample rate:
evaluate, plot and export refuse otherwise, in one line that says what differs, before they write anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spokenwords.cli import UserError
from spokenwords.data.processed_splits import check_fits, save_split
from spokenwords.models.architectures import M5
from spokenwords.models.checkpoint import save_checkpoint
from tests.helpers import stage, write_params

MODEL_LABELS = ["yes", "no"]
DATA_LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
OUTPUTS = ("metrics", "plots", "models/model.onnx", "models/model.int8.onnx")


def write_mismatch(root: Path, labels: list[str] = MODEL_LABELS, rate: int = 8000) -> None:
    """A model trained on ``labels`` at ``rate`` beside train and test splits of the ten digits at 8 kHz."""
    torch.manual_seed(0)
    audio = {"sample_rate": rate, "samples": rate}
    save_checkpoint(root / "models/model.pt", M5(n_output=len(labels)), {"name": "m5"}, labels, audio)
    for split in ("train", "test"):
        save_split(
            root / f"data/processed/{split}.pt",
            {
                "waveforms": torch.zeros(len(DATA_LABELS), 1, 8000),
                "labels": torch.arange(len(DATA_LABELS)),
                "speakers": ["s0"] * len(DATA_LABELS),
                "paths": [f"{word}/s0_nohash_0.wav" for word in DATA_LABELS],
                "label_names": DATA_LABELS,
                "sample_rate": 8000,
            },
        )
    write_params(root, evaluate={"device": "cpu"})


def fits(labels: list[str], rate: int = 8000) -> dict:
    return {"label_names": labels, "audio": {"sample_rate": rate, "samples": rate}}


def test_same_labels_and_rate_pass() -> None:
    check_fits(Path("m.pt"), fits(["yes", "no"]), Path("t.pt"), {"label_names": ("yes", "no"), "sample_rate": 8000})


def test_labels_in_another_order_are_refused() -> None:
    with pytest.raises(UserError, match=r"^m\.pt was trained on labels \[no, yes\] but t\.pt holds \[yes, no\]: run "):
        check_fits(Path("m.pt"), fits(["no", "yes"]), Path("t.pt"), {"label_names": ["yes", "no"], "sample_rate": 8000})


def test_another_sample_rate_is_refused_and_both_differences_are_named() -> None:
    data = {"label_names": ["yes", "no"], "sample_rate": 16000}
    with pytest.raises(UserError, match=r"^m\.pt was trained on clips at 8000 Hz but t\.pt holds clips at 16000 Hz"):
        check_fits(Path("m.pt"), fits(["yes", "no"]), Path("t.pt"), data)
    with pytest.raises(UserError, match=r"on labels \[no, yes\] at 8000 Hz but t\.pt holds \[yes, no\] at 16000 Hz"):
        check_fits(Path("m.pt"), fits(["no", "yes"]), Path("t.pt"), data)


@pytest.mark.parametrize("name", ["evaluate", "plot", "export"])
def test_stage_refuses_a_model_of_other_labels(tmp_path: Path, name: str) -> None:
    write_mismatch(tmp_path)
    result = stage(name, tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: models/model.pt was trained on labels [yes, no] but data/processed/test.pt holds "
        f"[{', '.join(DATA_LABELS)}]: run `dvc repro` to retrain"
    ]
    assert not any((tmp_path / output).exists() for output in OUTPUTS)


@pytest.mark.parametrize("name", ["evaluate", "plot", "export"])
def test_stage_refuses_a_model_of_another_sample_rate(tmp_path: Path, name: str) -> None:
    write_mismatch(tmp_path, DATA_LABELS, rate=16000)  # a 16 kHz model would hear these 8 kHz clips twice too fast
    result = stage(name, tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: models/model.pt was trained on clips at 16000 Hz but data/processed/test.pt holds clips at 8000 Hz: "
        "run `dvc repro` to retrain"
    ]
    assert not any((tmp_path / output).exists() for output in OUTPUTS)
