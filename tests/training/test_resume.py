"""Resuming a stopped train stage: a run killed or preempted mid-training continues to the uninterrupted result."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from tests.helpers import RESUMABLE_TRAIN, assert_same_run, stage, training_until, write_params, write_processed

STATE = Path("checkpoints/train_state.pt")
TRAIN = RESUMABLE_TRAIN


def project(root: Path, **train) -> Path:
    write_processed(root, clips_per_label=20)
    write_params(root, notebook=True, train={**TRAIN, **train})
    return root


def stop_while_training(root: Path, when: str, how: signal.Signals) -> int:
    """Start the train stage, send ``how`` once ``when`` appears in its log, and return its exit code."""
    with training_until(root, when) as process:
        process.send_signal(how)
        return process.wait(timeout=60)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    root = project(tmp_path_factory.mktemp("uninterrupted"))
    stage("train", root)
    assert not (root / STATE).exists()
    return root


def test_a_run_killed_after_an_epoch_resumes_to_the_uninterrupted_model_and_metrics(uninterrupted, tmp_path):
    root = project(tmp_path)
    assert stop_while_training(root, "epoch   2:", signal.SIGKILL) == -signal.SIGKILL
    assert (root / STATE).is_file() and not (root / "models/model.pt").exists()
    result = stage("train", root)
    assert "resuming from checkpoints/train_state.pt: epoch" in result.stderr
    assert_same_run(uninterrupted, root)
    assert not (root / STATE).exists()


def test_sigterm_mid_epoch_saves_the_state_and_the_rerun_ends_where_an_uninterrupted_run_does(uninterrupted, tmp_path):
    root = project(tmp_path)
    assert stop_while_training(root, "training m5", signal.SIGTERM) == 143
    log = (root / "train.log").read_text()
    assert "stopped by SIGTERM: saved checkpoints/train_state.pt" in log and "Traceback" not in log
    saved = torch.load(root / STATE, weights_only=True)
    assert (saved["epoch"], saved["step"]) < (TRAIN["epochs"] + 1, 0)
    assert not (root / "models/model.pt").exists()
    stage("train", root)
    assert_same_run(uninterrupted, root)


def test_a_state_from_other_params_is_refused_and_the_run_starts_afresh(tmp_path):
    stopped = project(tmp_path / "stopped")
    assert stop_while_training(stopped, "epoch   2:", signal.SIGKILL) == -signal.SIGKILL
    assert (stopped / STATE).is_file()
    write_params(stopped, notebook=True, train={**TRAIN, "lr": 0.002})
    result = stage("train", stopped)
    assert "warning: not resuming from checkpoints/train_state.pt" in result.stderr
    assert (
        "lr 0.005 -> 0.002" in result.stderr and "resuming from checkpoints/train_state.pt: epoch" not in result.stderr
    )
    fresh = project(tmp_path / "fresh", lr=0.002)
    stage("train", fresh)
    assert_same_run(fresh, stopped)


def test_a_state_of_other_data_is_refused(tmp_path):
    root = project(tmp_path)
    assert stop_while_training(root, "epoch   2:", signal.SIGKILL) == -signal.SIGKILL
    write_processed(root, clips_per_label=20, seed=1)
    result = stage("train", root)
    assert (
        "the training data changed" in result.stderr
        and "resuming from checkpoints/train_state.pt: epoch" not in result.stderr
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # the same clips under other names: the data's digest alone would not tell them apart
        ({"label_names": tuple(f"word{index}" for index in range(10))}, "labels ['zero', 'one', 'two', 'three', "),
        ({"sample_rate": 16000}, "sample_rate 8000 -> 16000"),
    ],
    ids=["labels", "sample rate"],
)
def test_a_state_of_other_labels_or_another_sample_rate_is_refused_saying_so(tmp_path, data, expected):
    root = project(tmp_path)
    assert stop_while_training(root, "epoch   2:", signal.SIGKILL) == -signal.SIGKILL
    write_processed(root, clips_per_label=20, **data)
    result = stage("train", root)
    assert "warning: not resuming from checkpoints/train_state.pt" in result.stderr and expected in result.stderr
    assert "resuming from checkpoints/train_state.pt: epoch" not in result.stderr and "Traceback" not in result.stderr
    assert not (root / STATE).exists()


def test_a_state_of_an_older_layout_is_refused_saying_so(tmp_path):
    root = project(tmp_path)
    assert stop_while_training(root, "epoch   2:", signal.SIGKILL) == -signal.SIGKILL
    state = torch.load(root / STATE, weights_only=True)
    del state["stamp"]["format"]  # as the first layout saved it
    torch.save(state, root / STATE)
    result = stage("train", root)
    assert "not resuming from checkpoints/train_state.pt" in result.stderr
    assert "(state format 1, of another version of this project -> 2)" in result.stderr
    assert "resuming from checkpoints/train_state.pt: epoch" not in result.stderr


def test_resume_false_ignores_a_saved_state(tmp_path):
    root = project(tmp_path)
    assert stop_while_training(root, "epoch   2:", signal.SIGKILL) == -signal.SIGKILL
    write_params(root, notebook=True, train={**TRAIN, "resume": False})
    result = stage("train", root)
    assert "resuming" not in result.stderr and "not resuming" not in result.stderr
    assert json.loads((root / "metrics/train.json").read_text())["epoch"] == TRAIN["epochs"]


def test_an_unreadable_state_is_a_clear_error(tmp_path):
    root = project(tmp_path)
    (root / STATE).parent.mkdir()
    (root / STATE).write_bytes(b"not a torch file")
    result = stage("train", root, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "checkpoints/train_state.pt is not a readable training state" in result.stderr
