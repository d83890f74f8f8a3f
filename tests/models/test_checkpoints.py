"""Stale checkpoints: a models/model.pt of another layout (an older version of the project, a newer one, weights
that no longer fit the model) is refused by the stages that load it, in one line that says what differs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from spokenwords.models.architectures import M5
from spokenwords.models.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from tests.helpers import predictor, stage, tone, write_params, write_processed, write_wav

AUDIO = {"sample_rate": 8000, "samples": 8000}
LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def current(root: Path) -> dict:
    """The checkpoint the train stage writes now, of an untrained M5, as its dictionary."""
    torch.manual_seed(0)
    save_checkpoint(root / "models/model.pt", M5(), {"name": "m5", "n_channel": 32, "stride": 16}, LABELS, AUDIO)
    return torch.load(root / "models/model.pt", weights_only=True)


def rename_first_weight(checkpoint: dict) -> None:
    weights = checkpoint["state_dict"]
    first = next(iter(weights))
    weights[f"old_{first}"] = weights.pop(first)


# each case: how it changes a current checkpoint, and the key fact its one line must state
STALE: dict[str, tuple[Callable[[dict], None], str]] = {
    "first layout": (lambda checkpoint: checkpoint.pop("format"), "format 1, written by an older version"),
    "newer layout": (lambda checkpoint: checkpoint.update(format=CHECKPOINT_FORMAT + 1), "written by another version"),
    "a key lost": (lambda checkpoint: checkpoint.pop("audio"), "written by the train stage: it lacks audio"),
    "renamed weights": (rename_first_weight, "does not fit this version's m5 model: it lacks "),
    "other shapes": (
        lambda checkpoint: checkpoint["model"].update(n_channel=16),
        "does not fit this version's m5 model: features.0.weight is [32, 1, 80] where this version's is [16, 1, 80]",
    ),
    "unknown settings": (
        lambda checkpoint: checkpoint["model"].update(width=2),
        "holds model 'm5' with settings this version does not take",
    ),
    "unknown model": (lambda checkpoint: checkpoint["model"].update(name="m6"), "holds model 'm6', which this version"),
}


def write_stale(root: Path, case: str) -> None:
    checkpoint = current(root)
    change, _ = STALE[case]
    change(checkpoint)
    torch.save(checkpoint, root / "models/model.pt")


def test_a_current_checkpoint_says_its_format_and_loads(tmp_path):
    assert current(tmp_path)["format"] == CHECKPOINT_FORMAT
    model, checkpoint = load_checkpoint(tmp_path / "models/model.pt")
    assert isinstance(model, M5) and checkpoint["label_names"] == LABELS


@pytest.mark.parametrize("case", list(STALE))
def test_evaluate_refuses_a_stale_checkpoint_in_one_line_and_writes_nothing(tmp_path, case):
    write_processed(tmp_path)
    write_params(tmp_path, notebook=True, evaluate={"device": "cpu"})
    write_stale(tmp_path, case)
    result = stage("evaluate", tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: models/model.pt ") and STALE[case][1] in line, line
    assert line.endswith(("run `dvc repro train`", "to retrain it", "to write one"))
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "plots").exists()


def test_predict_refuses_a_checkpoint_of_the_first_layout(tmp_path):
    write_stale(tmp_path, "first layout")
    write_wav(tmp_path / "word.wav", tone(500, 8000, 0.7), 8000)
    result = predictor("predict", tmp_path, "word.wav", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr and not result.stdout
    assert result.stderr.splitlines() == [
        "error: models/model.pt has checkpoint format 1, written by an older version of this project (this one reads "
        f"format {CHECKPOINT_FORMAT}): run `dvc repro train` to retrain it"
    ]
