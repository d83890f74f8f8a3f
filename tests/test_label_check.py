"""A model and the data it is scored on must name the same labels in the same order: evaluate and plot refuse
otherwise, in one line, before they write anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stages.cli import UserError
from stages.models import M5, save_checkpoint
from stages.processed import check_labels, save_split
from tests.helpers import stage, write_params

MODEL_LABELS = ["yes", "no"]
DATA_LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_mismatch(root: Path) -> None:
    """A model trained on yes/no beside a test split of the ten digits."""
    torch.manual_seed(0)
    save_checkpoint(
        root / "models/model.pt", M5(n_output=2), {"name": "m5"}, MODEL_LABELS, {"sample_rate": 8000, "samples": 8000}
    )
    labels = torch.arange(len(DATA_LABELS))
    save_split(
        root / "data/processed/test.pt",
        {
            "waveforms": torch.zeros(len(DATA_LABELS), 1, 8000),
            "labels": labels,
            "speakers": ["s0"] * len(DATA_LABELS),
            "paths": [f"{word}/s0_nohash_0.wav" for word in DATA_LABELS],
            "label_names": DATA_LABELS,
            "sample_rate": 8000,
        },
    )
    write_params(root, evaluate={"device": "cpu"})


def test_same_labels_pass() -> None:
    check_labels(Path("m.pt"), ["yes", "no"], Path("t.pt"), ("yes", "no"))


def test_labels_in_another_order_are_refused() -> None:
    with pytest.raises(UserError, match=r"^m\.pt was trained on labels \[no, yes\] but t\.pt holds \[yes, no\]: run "):
        check_labels(Path("m.pt"), ["no", "yes"], Path("t.pt"), ["yes", "no"])


@pytest.mark.parametrize("name", ["evaluate", "plot"])
def test_stage_refuses_a_model_of_other_labels(tmp_path: Path, name: str) -> None:
    write_mismatch(tmp_path)
    result = stage(name, tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: models/model.pt was trained on labels [yes, no] but data/processed/test.pt holds "
        f"[{', '.join(DATA_LABELS)}]: run `dvc repro` to retrain"
    ]
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "plots").exists()
