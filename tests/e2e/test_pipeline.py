"""Real `dvc repro`, `dvc exp run`, `dvc metrics diff` and `dvc plots show` in a temporary git repository."""

from __future__ import annotations

import json

import pytest

from tests.helpers import PARAMETERS, TINY, commit, copy_project, dvc, run, write_params


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project on a tiny synthetic config, reproduced once and committed."""
    root = copy_project(tmp_path_factory.mktemp("pipeline"))
    write_params(root, **TINY)
    commit(root, "tiny config")
    dvc(root, "repro")
    commit(root, "reference run")
    return root


@pytest.mark.slow
def test_repro_writes_every_declared_output(project):
    for path in (
        "data/raw/validation_list.txt",
        "data/processed/train.pt",
        "data/processed/train.npy",
        "data/processed/validation.pt",
        "data/processed/validation.npy",
        "data/processed/test.pt",
        "data/processed/test.npy",
        "data/embedded/train.pt",
        "models/model.pt",
        "metrics/transfer.json",
        "metrics/train.json",
        "metrics/eval.json",
        "models/model.onnx",
        "models/model.int8.onnx",
        "metrics/export.json",
        "plots/train_history.csv",
        "plots/confusion.csv",
        "plots/images/kernels.png",
        "plots/images/learning_curves.png",
    ):
        assert (project / path).is_file(), path
    assert json.loads((project / "metrics/train.json").read_text())["parameters"] == PARAMETERS["embedding"]
    report = json.loads((project / "data/processed/report.json").read_text())
    assert sum(split["clips"] for split in report["splits"].values()) == 228


@pytest.mark.slow
def test_second_repro_changes_nothing(project):
    result = dvc(project, "repro")
    assert "Data and pipelines are up to date." in result.stdout
    assert run(["git", "status", "--porcelain"], project).stdout == ""


@pytest.mark.slow
def test_a_fresh_clone_pulls_the_run_from_a_remote_and_retrains_nothing(project, tmp_path):
    """The team workflow: push to a DVC remote (a local folder here), clone, pull, and find everything current."""
    dvc(project, "remote", "add", "-d", "storage", str(tmp_path / "remote"))
    commit(project, "a shared DVC remote")
    dvc(project, "push")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    dvc(clone, "pull")
    assert (clone / "models/model.pt").read_bytes() == (project / "models/model.pt").read_bytes()
    assert "Data and pipelines are up to date." in dvc(clone, "status").stdout
    result = dvc(clone, "repro")
    assert "Running stage" not in result.stdout and "Data and pipelines are up to date." in result.stdout


@pytest.mark.slow
def test_another_models_settings_retrain_nothing_but_the_models_own_do(project):
    """train depends on model.name and the chosen model's section (dvc.yaml interpolates it), not on the others'."""
    params_file = project / "params.yaml"
    original = params_file.read_text()
    try:
        write_params(project, **TINY, model={"bcresnet": {"width": 2.0}})
        assert "Data and pipelines are up to date." in dvc(project, "status").stdout
        write_params(project, **TINY, model={"embedding": {"hidden": 64}})
        status = dvc(project, "status").stdout
        assert "train:" in status and "model.embedding" in status
    finally:
        params_file.write_text(original)


@pytest.mark.slow
def test_forced_repro_reproduces_a_clean_tree(project):
    """Every stage after the synthesis run again from scratch gives the same bytes (dvc.lock's hashes do not move):
    the processed splits, the embeddings, the model, the metrics and the plots. The synthesis repeats to the byte in
    tests/data/test_synth.py. Timings are the only thing that differs between runs, and they are not tracked outputs:
    train's epoch seconds and export's latencies go to untracked logs.
    """
    result = dvc(project, "repro", "--force", "--downstream", "preprocess")
    assert "Running stage 'download'" not in result.stdout
    assert all(f"Running stage '{name}'" in result.stdout for name in ("preprocess", "embed", "train", "plot"))
    assert run(["git", "status", "--porcelain"], project).stdout == ""
    assert (project / "logs/train_timing.json").is_file()
    assert json.loads((project / "logs/export_latency.json").read_text())["float32"]["latency_ms"] > 0


@pytest.mark.slow
def test_exp_run_reruns_only_the_stages_after_the_change(project):
    result = dvc(project, "exp", "run", "-S", "train.epochs=2")
    for name in ("train", "evaluate", "export", "plot"):
        assert f"Running stage '{name}'" in result.stdout
    for name in ("download", "preprocess", "embed"):
        assert f"Running stage '{name}'" not in result.stdout
    assert json.loads((project / "metrics/train.json").read_text())["epoch"] == 2

    diff = dvc(project, "metrics", "diff", "--json").stdout
    changes = json.loads(diff)
    assert changes["metrics/train.json"]["epoch"] == {"old": 1, "new": 2, "diff": 1}
    assert "accuracy" in changes["metrics/eval.json"]

    dvc(project, "plots", "show")
    page = (project / "dvc_plots" / "index.html").read_text()
    for field in ("train_acc", "val_acc", "train_loss", "val_loss", "predicted", "kernels.png"):
        assert field in page


@pytest.mark.slow
def test_a_spectrogram_model_with_augmentation_runs_end_to_end(project):
    result = dvc(  # up to plot: export and transfer are tested on their own
        project,
        "exp",
        "run",
        "plot",
        *("-S", "model.name=bcresnet", "-S", "train.augment=true", "-S", "train.epochs=1"),
        *("-S", "train.schedule=onecycle", "-S", "train.warmup_epochs=0.5", "-S", "train.label_smoothing=0.1"),
    )
    for name in ("train", "evaluate", "plot"):
        assert f"Running stage '{name}'" in result.stdout
    for name in ("download", "preprocess"):
        assert f"Running stage '{name}'" not in result.stdout
    train = json.loads((project / "metrics/train.json").read_text())
    assert train["parameters"] == PARAMETERS["bcresnet"] and train["epoch"] == 1
    assert 0 <= json.loads((project / "metrics/eval.json").read_text())["accuracy"] <= 1
    assert "bcresnet" in dvc(project, "exp", "show", "--json").stdout


@pytest.mark.slow
def test_changing_the_split_reruns_preprocess_but_not_download(project):
    result = dvc(project, "exp", "run", "preprocess", "-S", "data.split=loso", "-S", "data.fold=1")
    assert "Running stage 'preprocess'" in result.stdout and "Running stage 'download'" not in result.stdout
    report = json.loads((project / "data/processed/report.json").read_text())
    assert report["split_rule"] == "loso fold 1" and report["splits"]["test"]["speakers"] == 1
