"""The train and evaluate stages on small processed splits written here."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from spokenwords.data.processed_splits import load_split
from spokenwords.inference.scoring import batched_logits, shifted_probabilities
from spokenwords.models.checkpoint import load_checkpoint
from tests.helpers import stage, write_params, write_processed

SMALL = {"epochs": 3, "batch_size": 16, "device": "cpu"}


def train_in(root, **train):
    write_processed(root)
    write_params(root, notebook=True, train={**SMALL, **train})
    return stage("train", root, check=False)


def test_two_cpu_runs_with_one_seed_give_identical_metrics_and_weights(tmp_path):
    for run in ("a", "b"):
        assert train_in(tmp_path / run).returncode == 0
    metrics = [json.loads((tmp_path / run / "metrics/train.json").read_text()) for run in ("a", "b")]
    assert metrics[0] == metrics[1]
    weights = [torch.load(tmp_path / run / "models/model.pt", weights_only=True)["state_dict"] for run in ("a", "b")]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    with (tmp_path / "a/plots/train_history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    assert [row["epoch"] for row in history] == ["1", "2", "3"]
    assert set(history[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc"}
    timing = json.loads((tmp_path / "a/logs/train_timing.json").read_text())
    assert len(timing["epoch_seconds"]) == 3 and timing["median"] > 0
    assert metrics[0]["val_acc"] == float(history[-1]["val_acc"])


def test_a_different_seed_changes_the_run(tmp_path):
    train_in(tmp_path / "a")
    train_in(tmp_path / "b", seed=1)
    assert (tmp_path / "a/metrics/train.json").read_text() != (tmp_path / "b/metrics/train.json").read_text()


def test_best_checkpoint_keeps_the_best_validation_epoch(tmp_path):
    assert train_in(tmp_path, checkpoint="best", epochs=4).returncode == 0
    metrics = json.loads((tmp_path / "metrics/train.json").read_text())
    assert metrics["epoch"] == metrics["best_epoch"] and metrics["val_acc"] == metrics["best_val_acc"]


def test_batch_larger_than_the_split_works(tmp_path):
    assert train_in(tmp_path, batch_size=100_000, epochs=1).returncode == 0


def test_diverging_loss_stops_without_writing_a_model(tmp_path):
    result = train_in(tmp_path, lr=1e30, epochs=3)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "lower train.lr" in result.stderr and "epoch" in result.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "metrics").exists()


def test_evaluate_reports_test_metrics_and_per_sample_confusion(tmp_path):
    assert train_in(tmp_path, epochs=6, lr=0.01).returncode == 0
    write_params(tmp_path, notebook=True, train=SMALL, evaluate={"device": "cpu"})
    stage("evaluate", tmp_path)
    metrics = json.loads((tmp_path / "metrics/eval.json").read_text())
    with (tmp_path / "plots/confusion.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["clips"] == 60
    assert metrics["correct"] == sum(row["actual"] == row["predicted"] for row in rows)
    assert metrics["accuracy"] == metrics["correct"] / 60
    assert metrics["accuracy"] > 0.5, "ten tones of different pitch should be easy"
    assert set(metrics["per_class"]) == set(load_checkpoint(tmp_path / "models/model.pt")[1]["label_names"])
    assert all(item["support"] == 6 for item in metrics["per_class"].values())


def test_evaluate_with_test_time_shifts_scores_the_averaged_probabilities(tmp_path):
    assert train_in(tmp_path, epochs=6, lr=0.01).returncode == 0
    write_params(
        tmp_path, notebook=True, train=SMALL, evaluate={"device": "cpu", "test_time_shifts": 2, "shift_step_ms": 50}
    )
    stage("evaluate", tmp_path)
    metrics = json.loads((tmp_path / "metrics/eval.json").read_text())
    model, _ = load_checkpoint(tmp_path / "models/model.pt")
    test = load_split(tmp_path / "data/processed/test.pt")
    probabilities = shifted_probabilities(model, test["waveforms"], 7, shifts=2, step=400).mean(dim=0)
    one_pass = batched_logits(model, test["waveforms"], 7).argmax(dim=1)
    assert metrics["correct"] == int((probabilities.argmax(dim=1) == test["labels"]).sum())
    assert metrics["one_pass_accuracy"] == (one_pass == test["labels"]).float().mean().item()
    assert metrics["loss"] == pytest.approx(-probabilities[range(60), test["labels"]].log().mean().item(), rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: a short M5 training with bfloat16 autocast")
@pytest.mark.parametrize("compile", ["off", "on"])
def test_a_short_cuda_training_with_bfloat16_autocast(tmp_path, compile):
    result = train_in(tmp_path, device="cuda", amp="on", compile=compile, epochs=2)
    assert result.returncode == 0, result.stderr
    summary = next(line for line in result.stderr.splitlines() if line.startswith("training m5"))
    assert "on cuda with bfloat16 autocast" in summary and ("compiled" in summary) == (compile == "on")
    metrics = json.loads((tmp_path / "metrics/train.json").read_text())
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])
    model, _ = load_checkpoint(tmp_path / "models/model.pt")  # on the CPU, with the keys of an eager model
    assert all(value.isfinite().all() for value in model.state_dict().values() if value.is_floating_point())
