"""Real `dvc repro` of a vocabulary that is not the digits, with both open-set classes, in a temporary git repository;
then both predictors on files the pipeline never saw, and a model of one vocabulary refused on data of another.
"""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

from spokenwords.data.processed_splits import load_split
from tests.helpers import TINY, commit, copy_project, dvc, run, stage, write_params, write_wav

WORDS = ["lights on", "stop", "go"]
LABELS = [*WORDS, "_unknown_", "_silence_"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("vocabulary"))
    data = {**TINY["data"], "words": WORDS, "unknown": True, "silence": True}
    write_params(root, **{**TINY, "data": data, "transfer": {"sets": {}, "device": "cpu"}})
    commit(root, "a vocabulary of three words and both open-set classes")
    dvc(root, "repro")
    return root


@pytest.mark.slow
def test_repro_learns_the_named_words_and_both_extra_classes(project):
    assert (project / "data/raw/labels.txt").read_text().splitlines() == LABELS
    for split in ("train", "validation", "test"):
        data = load_split(project / f"data/processed/{split}.pt")
        assert data["label_names"] == LABELS
        assert set(data["labels"].tolist()) == set(range(len(LABELS))), f"every class in {split}"
    metrics = json.loads((project / "metrics/eval.json").read_text())
    assert list(metrics["per_class"]) == LABELS
    assert 0 <= metrics["unknown_false_accept"] <= 1 and 0 <= metrics["words_accuracy"] <= 1
    with (project / "plots/confusion.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["actual"] for row in rows} == set(LABELS)
    assert all(LABELS[int(row["actual_index"])] == row["actual"] for row in rows)
    export = json.loads((project / "metrics/export.json").read_text())
    assert export["float32"]["agreement"] > 0.9 and (project / "models/model.int8.onnx").is_file()
    assert dvc(project, "status").stdout.strip() == "Data and pipelines are up to date."


@pytest.mark.slow
def test_both_predictors_answer_with_the_vocabulary_and_the_open_set_labels(project, tmp_path):
    rate = 16000
    rng = np.random.default_rng(0)
    noise = write_wav(tmp_path / "noise.wav", 0.02 * rng.standard_normal(rate).astype(np.float32), rate)
    clip = project / "data/raw" / load_split(project / "data/processed/test.pt")["paths"][0]
    for module in ("spokenwords.predict", "spokenwords.predict_onnx"):
        result = run([sys.executable, "-m", module, "--json", str(clip), str(noise)], project)
        answers = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(answers) == 2
        for answer in answers:
            assert answer["label"] in LABELS and {item["label"] for item in answer["top3"]} <= set(LABELS), answer


@pytest.mark.slow
def test_a_model_of_one_vocabulary_refuses_data_labelled_with_another(project, tmp_path):
    other = copy_project(tmp_path / "other")
    (other / "models").mkdir()
    (other / "models/model.pt").write_bytes((project / "models/model.pt").read_bytes())
    write_params(other, data={"synthetic_clips": 40, "piper_clips": 0, "kokoro_clips": 0, "words": ["yes", "no"]})
    stage("download", other)
    stage("preprocess", other)
    before = (other / "plots").exists() and sorted((other / "plots").rglob("*"))
    result = stage("evaluate", other, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "was trained on labels [lights on, stop, go, _unknown_, _silence_]" in result.stderr
    assert "holds [yes, no]" in result.stderr
    assert ((other / "plots").exists() and sorted((other / "plots").rglob("*"))) == before
