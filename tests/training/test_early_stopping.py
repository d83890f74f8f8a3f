"""Early stopping (`train.patience`): a run stops once validation accuracy stops improving, resumes to the same stop,
and stops on every data-parallel rank at once.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    RESUMABLE_TRAIN,
    assert_same_run,
    repeat_first_validation_clip,
    run,
    run_outcome,
    stage,
    training_until,
    write_params,
    write_processed,
)

STATE = Path("checkpoints/train_state.pt")
# the resume tests' run, longer and with patience: a resume that missed a generator's or the schedule's state would
# stop elsewhere
TRAIN = {**RESUMABLE_TRAIN, "epochs": 30, "patience": 5}
# the run above on the split below: best accuracy at epoch 1, then 5 epochs without a better one
STOPPED = 6


def plateau(root: Path, clips_per_label: int = 20, **train) -> Path:
    """Tone clips whose validation split is one clip repeated, as often for each label: any model gives all of them
    the same label, so validation accuracy is 1/10 at every epoch, and its best stays at epoch 1.
    """
    write_processed(root, clips_per_label=clips_per_label)
    repeat_first_validation_clip(root)
    write_params(root, notebook=True, train={**TRAIN, **train})
    return root


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    root = plateau(tmp_path_factory.mktemp("stopped"))
    result = stage("train", root)
    expected = f"stopping early after epoch {STOPPED}: validation accuracy has not beaten its best (0.1000, epoch 1)"
    assert expected in result.stderr
    return root


def test_a_run_stops_when_validation_accuracy_plateaus_and_records_the_epoch(stopped):
    metrics, _, history = run_outcome(stopped)
    assert [row.split(",")[0] for row in history.splitlines()[1:]] == [str(epoch) for epoch in range(1, STOPPED + 1)]
    assert metrics["stopped_epoch"] == metrics["epoch"] == STOPPED  # checkpoint 'last': the epoch it stopped at
    assert metrics["best_epoch"] == 1 and metrics["best_val_acc"] == metrics["val_acc"] == pytest.approx(0.1)
    assert not (stopped / STATE).exists()


def test_with_checkpoint_best_the_stopped_run_keeps_its_best_epoch(tmp_path):
    root = plateau(tmp_path, 6, checkpoint="best", patience=2, augment=False)
    stage("train", root)
    metrics = json.loads((root / "metrics/train.json").read_text())
    assert (metrics["stopped_epoch"], metrics["epoch"], metrics["best_epoch"]) == (3, 1, 1)


def test_patience_off_or_never_reached_trains_every_epoch(tmp_path):
    for name, patience in (("off", 0), ("long", 10)):
        root = plateau(tmp_path / name, 6, epochs=4, patience=patience, augment=False)
        assert "stopping early" not in stage("train", root).stderr
        metrics = json.loads((root / "metrics/train.json").read_text())
        assert metrics["epoch"] == 4
        # without patience the metrics keep their keys; with it, they name the last epoch trained
        assert metrics.get("stopped_epoch", "absent") == (4 if patience else "absent")


def test_a_run_killed_before_its_stop_resumes_to_the_same_stop_and_model(stopped, tmp_path):
    root = plateau(tmp_path)
    with training_until(root, "epoch   2:") as process:
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    assert (root / STATE).is_file() and not (root / "models").exists()
    result = stage("train", root)
    assert "resuming from checkpoints/train_state.pt: epoch" in result.stderr
    assert f"stopping early after epoch {STOPPED}" in result.stderr
    assert_same_run(stopped, root)


def test_a_run_killed_after_its_stop_but_before_its_outputs_trains_no_further(stopped, tmp_path):
    root = plateau(tmp_path)
    # the stage as it is, killed (os._exit: no clean-up) where it would write its outputs
    dies = "import os, stages.train as t; t.write_outputs = lambda *args: os._exit(137); t.run(t.main)"
    assert run([sys.executable, "-c", dies], root, check=False).returncode == 137
    assert torch.load(root / STATE, weights_only=True)["epoch"] == STOPPED + 1
    result = stage("train", root)
    assert f"resuming from checkpoints/train_state.pt: epoch {STOPPED + 1}, after batch 0" in result.stderr
    assert f"stopping early after epoch {STOPPED}" in result.stderr and "epoch   7:" not in result.stderr
    assert_same_run(stopped, root)


@pytest.mark.slow
def test_every_data_parallel_rank_stops_at_the_same_epoch(tmp_path):
    root = plateau(tmp_path, 6, processes=2, batch_size=16, augment=False, patience=2)
    # a rank that went on alone would wait for the others in its next step: the run would hang, not end
    result = run([sys.executable, "-m", "stages.train"], root, timeout=300)
    assert result.stderr.count("stopping early after epoch 3") == 1  # said once, by rank 0
    metrics = json.loads((root / "metrics/train.json").read_text())
    assert metrics["stopped_epoch"] == 3 and not (root / STATE).exists()
