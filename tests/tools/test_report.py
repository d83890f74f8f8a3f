"""`tools.report` names the run's vocabulary, in the model's label order, whatever the words."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from spokenwords.paths import EVAL_METRICS, IMAGE_NAMES, TRAIN_METRICS, image
from tests.helpers import run

LABELS = ["yes", "no", "_unknown_", "_silence_"]


def test_report_names_the_vocabulary_in_label_order(tmp_path: Path) -> None:
    scores = {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3}
    for path, data in (
        (EVAL_METRICS, {"accuracy": 1.0, "per_class": {label: scores for label in LABELS}}),
        (TRAIN_METRICS, {"epoch": 1}),
    ):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(data))
    for name in IMAGE_NAMES:
        (tmp_path / image(name)).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / image(name)).write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "params.yaml").write_text("data:\n  words: [yes, no]\n")
    run([sys.executable, "-m", "tools.report"], tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "<h1>Spoken-word classifier: run report</h1>" in page
    assert "<p>4 labels: yes, no, _unknown_, _silence_</p>" in page
