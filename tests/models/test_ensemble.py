"""The ensemble: the embedding head and DS-CNN, each trained by `train` with its own recipe, their probabilities
averaged, and saved, scored and resumed as one model.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
import torchaudio

from spokenwords import params
from spokenwords.audio.torch_shaping import prepare
from spokenwords.cli import UserError
from spokenwords.models.architectures import DSCNN, EmbeddingClassifier, Ensemble
from spokenwords.models.checkpoint import load_checkpoint
from tests.helpers import (
    PARAMETERS,
    predictor,
    repeat_first_validation_clip,
    stage,
    tone,
    training_until,
    write_params,
    write_processed,
    write_wav,
)

# each member with a recipe of its own: other epochs, batch sizes and learning rates, augmentation for DS-CNN only
ENSEMBLE = {
    "name": "ensemble",
    "ensemble": {
        "embedding_train": {"epochs": 3, "batch_size": 8, "lr": 0.002, "warmup_epochs": 1.0, "augment": False},
        "dscnn_train": {"epochs": 2, "batch_size": 6, "lr": 0.005, "warmup_epochs": 1.0, "augment": True},
    },
}
STATES = Path("checkpoints")


def project(root: Path) -> Path:
    """16 kHz tone clips, embedded, ready for the ensemble's train stage."""
    write_processed(root, clips_per_label=3, samples=16000, sample_rate=16000)
    write_params(
        root,
        model=ENSEMBLE,
        embed={"copies": 1},
        train={"device": "cpu"},
        evaluate={"device": "cpu"},
        # 30 test clips: one prediction int8 changes is 3.3 points, so the drop limit is off here
        export={"latency_clips": 5, "max_int8_drop": 100.0},
    )
    stage("embed", root)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    root = project(tmp_path_factory.mktemp("ensemble"))
    return root, stage("train", root).stderr


def test_each_member_trains_with_its_own_recipe_and_both_are_saved_as_one_model(trained):
    root, log = trained
    assert "training embedding (93,386 parameters) on cpu: 60 train" in log  # 30 clips and their embedded copies
    assert "training dscnn (23,050 parameters) on cpu with augmentation: 30 train" in log
    model, checkpoint = load_checkpoint(root / "models/model.pt")
    assert isinstance(model, Ensemble) and [type(member) for member in model.members] == [EmbeddingClassifier, DSCNN]
    assert checkpoint["audio"] == {"sample_rate": 16000, "samples": 16000}
    assert [member["sample_rate"] for member in checkpoint["model"]["members"]] == [16000, 8000]
    metrics = json.loads((root / "metrics/train.json").read_text())
    assert metrics["parameters"] == PARAMETERS["embedding"] + PARAMETERS["dscnn"]
    assert metrics["members"]["embedding"]["epoch"] == 3 and metrics["members"]["dscnn"]["epoch"] == 2
    assert 0 <= metrics["val_acc"] <= 1 and metrics["val_loss"] > 0
    history = (root / "plots/train_history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2", "3", "4", "5"]  # the members one after the other


def test_the_ensemble_is_the_mean_of_its_members_probabilities_with_dscnn_at_8_khz(trained):
    model, _ = load_checkpoint(trained[0] / "models/model.pt")
    waveforms = torch.randn(4, 1, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    assert isinstance(model.resamplers[1], torchaudio.transforms.Resample)
    assert model.resample(1, waveforms).shape == (4, 1, 8000)
    with torch.no_grad():
        embedding_head, dscnn = (member.eval() for member in model.members)
        expected = (embedding_head(waveforms).softmax(dim=-1) + dscnn(model.resample(1, waveforms)).softmax(dim=-1)) / 2
        assert torch.allclose(model(waveforms).exp(), expected, atol=1e-6)


def test_evaluate_plot_and_export_take_the_ensemble(trained):
    root = trained[0]
    stage("evaluate", root)
    assert json.loads((root / "metrics/eval.json").read_text())["clips"] == 30
    stage("plot", root)
    assert (root / "plots/images/kernels.png").stat().st_size > 0
    stage("export", root)
    metrics = json.loads((root / "metrics/export.json").read_text())
    assert metrics["model"] == "ensemble" and metrics["input"] == "embeddings,waveform"
    assert metrics["float32"]["agreement"] == 1.0 and metrics["int8"]["size_bytes"] < metrics["float32"]["size_bytes"]
    write_wav(root / "word.wav", tone(650, 16000, 0.6), 16000)
    ours = json.loads(predictor("predict_onnx", root, "--json", "word.wav").stdout)  # the torch-free predictor
    theirs = json.loads(predictor("predict", root, "--json", "word.wav").stdout)
    assert ours["label"] == theirs["label"] and ours["probability"] == pytest.approx(theirs["probability"], abs=1e-4)


def test_predict_answers_with_the_ensembles_averaged_probability(trained):
    root = trained[0]
    model, checkpoint = load_checkpoint(root / "models/model.pt")
    path = write_wav(root / "clip.wav", tone(650, 22050, 0.6), 22050)  # another rate, shorter than the window
    result = predictor("predict", root, "--json", "--model", "models/model.pt", "clip.wav")
    answer = json.loads(result.stdout)
    with torch.no_grad():
        expected = model(prepare(path, 16000, 1.0).unsqueeze(0)).exp()[0]
    assert answer["label"] == checkpoint["label_names"][expected.argmax()]
    assert answer["probability"] == pytest.approx(expected.max().item(), abs=1e-5)


def test_a_stopped_ensemble_resumes_without_training_its_finished_member_again(trained, tmp_path):
    root = project(tmp_path)
    with training_until(root, "training dscnn") as process:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 143
    assert sorted(path.name for path in (root / STATES).iterdir()) == [
        "train_state.dscnn.pt",
        "train_state.embedding.pt",
    ]
    result = stage("train", root)
    assert "resuming from checkpoints/train_state.embedding.pt: epoch 4, after batch 0" in result.stderr
    assert "resuming from checkpoints/train_state.dscnn.pt: epoch 1" in result.stderr
    for name in ("metrics/train.json", "plots/train_history.csv"):
        assert (root / name).read_text() == (trained[0] / name).read_text()
    weights = torch.load(root / "models/model.pt", weights_only=True)["state_dict"]
    reference = torch.load(trained[0] / "models/model.pt", weights_only=True)["state_dict"]
    assert weights.keys() == reference.keys() and all(torch.equal(weights[key], reference[key]) for key in weights)
    assert not (root / STATES).exists()


def test_with_patience_each_member_stops_on_its_own_plateau(tmp_path):
    write_processed(tmp_path, clips_per_label=3, samples=16000, sample_rate=16000)
    repeat_first_validation_clip(tmp_path)  # validation accuracy 0.1 at every epoch, for both members
    recipes = {"embedding_train": {"epochs": 6}, "dscnn_train": {"epochs": 5, "batch_size": 6, "warmup_epochs": 1.0}}
    write_params(tmp_path, model={"name": "ensemble", "ensemble": recipes}, embed={"copies": 0}, train={"patience": 2})
    stage("embed", tmp_path)
    log = stage("train", tmp_path).stderr
    assert log.count("stopping early after epoch 3") == 2
    members = json.loads((tmp_path / "metrics/train.json").read_text())["members"]
    assert [(member["stopped_epoch"], member["best_epoch"]) for member in members.values()] == [(3, 1), (3, 1)]
    history = (tmp_path / "plots/train_history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2", "3", "4", "5", "6"]


def test_a_member_recipe_that_breaks_a_train_rule_is_refused_by_its_name():
    ensemble = params.validate(
        {"model": {"ensemble": {"dscnn_train": {"epochs": 2, "warmup_epochs": 2.0}}}}, params.ModelParams
    )
    with pytest.raises(UserError, match=r"model\.ensemble\.dscnn_train: warmup_epochs must be < epochs"):
        params.member_trainings(params.TrainParams(), ensemble.ensemble)
    with pytest.raises(UserError, match=r"embedding_train\.augment must be false"):
        params.validate({"model": {"ensemble": {"embedding_train": {"augment": True}}}}, params.ModelParams)
