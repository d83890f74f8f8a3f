"""Write ``report.html``: one self-contained page with a run's learning curves, confusion matrix, metrics and params.

Each figure is drawn once, by the plot stage: its PNGs (learning curves, confusion matrix, first-layer weights,
waveforms) are embedded as data URIs, so the file shows the same everywhere, offline, and can be attached to a pull
request or mailed as it is.
Run ``python -m tools.report`` (``make report``) from the repository root after ``dvc repro``.
"""

from __future__ import annotations

import base64
import html
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from spokenwords.cli import UserError, run
from spokenwords.fileio import write_text
from spokenwords.params import PARAMS_FILE
from spokenwords.paths import EVAL_METRICS, TRAIN_METRICS, image

REPORT = Path("report.html")
PER_CLASS = ("precision", "recall", "f1", "support")

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 2em 0.5em 0; display: inline-table; vertical-align: top; }
th, td { padding: 0.2em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0 1em 1em 0; } img { max-width: 100%; }
"""


def read_bytes(path: Path) -> bytes:
    """A pipeline output, or a message that names the command that makes it."""
    if not path.is_file():
        raise UserError(f"{path} is missing: run `make repro` (or `dvc repro`) first, then `make report`")
    return path.read_bytes()


def read(path: Path) -> str:
    return read_bytes(path).decode("utf-8")


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="number">{value:.4g}</td>'
    if isinstance(value, int):
        return f'<td class="number">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def table(header: list[str], rows: list[list[Any]], caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = "".join("<tr>" + "".join(cell(value) for value in row) + "</tr>" for row in rows)
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{title}<tr>{head}</tr>{body}</table>"


def scalars(metrics: dict[str, Any]) -> list[list[Any]]:
    """The metrics that are single numbers; nested ones (per class) get their own table."""
    return [[name, value] for name, value in metrics.items() if not isinstance(value, dict)]


def flatten(values: dict[str, Any], prefix: str = "") -> list[list[Any]]:
    """Nested params as dotted names, the way `dvc params diff` shows them."""
    rows = []
    for name, value in values.items():
        if isinstance(value, dict):
            rows += flatten(value, f"{prefix}{name}.")
        else:
            rows.append([f"{prefix}{name}", value])
    return rows


def figure(path: Path) -> str:
    """A PNG of the plot stage, inlined as a data URI."""
    data = base64.b64encode(read_bytes(path)).decode("ascii")
    caption = html.escape(str(path))
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'
    )


def build() -> str:
    """The whole page, from the files ``dvc repro`` wrote."""
    train = json.loads(read(TRAIN_METRICS))
    evaluation = json.loads(read(EVAL_METRICS))
    params = yaml.safe_load(read(PARAMS_FILE)) or {}
    per_class = [[name, *(values[key] for key in PER_CLASS)] for name, values in evaluation["per_class"].items()]
    # per_class follows the model's label order (the evaluate stage scores the labels in the checkpoint's order)
    vocabulary = ", ".join(evaluation["per_class"])
    sections = [
        "<h1>Spoken-word classifier: run report</h1>",
        f"<p>{len(evaluation['per_class'])} labels: {html.escape(vocabulary)}</p>",
        "<h2>Metrics</h2>",
        table(["metric", "value"], scalars(evaluation), "test (metrics/eval.json)"),
        table(["metric", "value"], scalars(train), "training (metrics/train.json)"),
        "<h2>Learning curves</h2>",
        figure(image("learning_curves")),
        "<h2>Confusion matrix</h2>",
        figure(image("confusion_matrix")),
        table(["class", *PER_CLASS], per_class, "per class on the test split"),
        "<h2>Figures</h2>",
        figure(image("kernels")),
        figure(image("waveforms")),
        "<h2>Params</h2>",
        table(["param", "value"], flatten(params), "params.yaml"),
    ]
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Run report</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def main() -> None:
    write_text(REPORT, build())
    print(f"wrote {REPORT.resolve().as_uri()}", file=sys.stderr)


if __name__ == "__main__":
    run(main)
