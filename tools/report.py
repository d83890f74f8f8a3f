"""Write ``report.html``: one self-contained page with a run's learning curves, confusion matrix, metrics and params.

Charts are drawn to inline SVG by vl-convert when the report is written and the plot stage's figures are embedded as
data URIs, so the file shows the same everywhere, offline, and can be attached to a pull request or mailed as it is.
Run ``python -m tools.report`` (``make report``) from the repository root after ``dvc repro``.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import vl_convert
import yaml

from stages.cli import UserError, run
from stages.datasets import DIGITS
from stages.fileio import write_text
from tools.plots_template import VEGA_LITE_VERSION

REPORT = Path("report.html")
HISTORY = Path("plots/train_history.csv")
CONFUSION = Path("plots/confusion.csv")
TRAIN_METRICS = Path("metrics/train.json")
EVAL_METRICS = Path("metrics/eval.json")
PARAMS = Path("params.yaml")
# The plot stage's figures that the charts below do not already show.
FIGURES = (Path("plots/images/kernels.png"), Path("plots/images/waveforms.png"))
SPLITS = {"train": "train", "val": "validation"}
PER_CLASS = ("precision", "recall", "f1", "support")

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 2em 0.5em 0; display: inline-table; vertical-align: top; }
th, td { padding: 0.2em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0 1em 1em 0; } img { max-width: 100%; }
"""


def read(path: Path) -> str:
    """A pipeline output's text, or a message that names the command that makes it."""
    if not path.is_file():
        raise UserError(f"{path} is missing: run `make repro` (or `dvc repro`) first, then `make report`")
    return path.read_text(encoding="utf-8")


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(read(path).splitlines()))


def svg(spec: dict[str, Any]) -> str:
    """Draw a Vega-Lite spec to SVG now, so the page needs no JavaScript to show it."""
    return vl_convert.vegalite_to_svg(spec, vl_version=VEGA_LITE_VERSION)


def curve(history: list[dict[str, str]], metric: str, title: str) -> dict[str, Any]:
    """One metric per epoch, a line per split, with a legend that names the split."""
    values = [
        {"epoch": int(row["epoch"]), "split": label, "value": float(row[f"{split}_{metric}"])}
        for row in history
        for split, label in SPLITS.items()
    ]
    return {
        "title": title,
        "data": {"values": values},
        "mark": {"type": "line", "point": True},
        "width": 360,
        "height": 240,
        "encoding": {
            "x": {"field": "epoch", "type": "quantitative", "title": "epoch", "axis": {"tickMinStep": 1}},
            "y": {"field": "value", "type": "quantitative", "title": title.lower(), "scale": {"zero": False}},
            "color": {
                "field": "split",
                "type": "nominal",
                "title": "split",
                "sort": list(SPLITS.values()),
                # Below the plot: vl-convert measures text with its own font, and a label at the right edge of the
                # SVG can be clipped when the browser's sans-serif is wider.
                "legend": {"orient": "bottom"},
            },
        },
    }


def confusion(rows: list[dict[str, str]]) -> dict[str, Any]:
    """Counts of (actual, predicted) over the test split, zero cells included, each cell labelled with its count."""
    present = {row["actual"] for row in rows} | {row["predicted"] for row in rows}
    labels = [digit for digit in DIGITS if digit in present] + sorted(present - set(DIGITS))  # zero to nine
    counts = Counter((row["actual"], row["predicted"]) for row in rows)
    values = [{"actual": a, "predicted": p, "count": counts[a, p]} for a in labels for p in labels]
    axis = {"type": "nominal", "sort": labels}
    return {
        "title": "Test confusion matrix",
        "data": {"values": values},
        "width": 360,
        "height": 360,
        "encoding": {
            "x": {"field": "predicted", "title": "predicted", **axis},
            "y": {"field": "actual", "title": "actual", **axis},
        },
        "layer": [
            {"mark": "rect", "encoding": {"color": {"field": "count", "type": "quantitative", "title": "clips"}}},
            {
                "mark": {"type": "text", "fontSize": 9},
                "encoding": {
                    "text": {"field": "count", "type": "quantitative"},
                    "color": {
                        "condition": {"test": f"datum.count > {max(counts.values()) / 2}", "value": "white"},
                        "value": "black",
                    },
                },
            },
        ],
    }


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
    """A PNG inlined as a data URI; a figure the plot stage did not write is left out rather than shown broken."""
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(str(path))
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'
    )


def build() -> str:
    """The whole page, from the files ``dvc repro`` wrote."""
    history = read_csv(HISTORY)
    train = json.loads(read(TRAIN_METRICS))
    evaluation = json.loads(read(EVAL_METRICS))
    params = yaml.safe_load(read(PARAMS)) or {}
    per_class = [[name, *(values[key] for key in PER_CLASS)] for name, values in evaluation["per_class"].items()]
    sections = [
        "<h1>Spoken-digit classifier: run report</h1>",
        "<h2>Metrics</h2>",
        table(["metric", "value"], scalars(evaluation), "test (metrics/eval.json)"),
        table(["metric", "value"], scalars(train), "training (metrics/train.json)"),
        "<h2>Learning curves</h2>",
        svg(curve(history, "acc", "Accuracy")),
        svg(curve(history, "loss", "Loss")),
        "<h2>Confusion matrix</h2>",
        svg(confusion(read_csv(CONFUSION))),
        table(["class", *PER_CLASS], per_class, "per class on the test split"),
        "<h2>Figures</h2>",
        *(figure(path) for path in FIGURES),
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
