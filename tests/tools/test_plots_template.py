"""DVC's confusion template orders both axes as the model orders its labels, for any vocabulary, in `dvc plots show`
and in `dvc plots diff` against a revision written before the label index columns.

Real DVC fills the project's template in a git copy of the project, and vl-convert (the Vega the plots page inlines)
draws the filled spec to SVG, whose axis labels are read back in drawing order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import vl_convert

from spokenwords.evaluation.scores import confusion_csv
from tests import helpers
from tools import plots_template

CHART = "Test confusion matrix"
# The vocabulary that the template's old name, and its old sort lists, were about.
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# Index 10 and 11 must sort after 9, and "_unknown_" after "go" though "_" sorts before letters.
WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"]


def confusion(label_names: list[str]) -> str:
    """The evaluate stage's CSV for clips shuffled out of label order, each label predicted as itself or the next."""
    pairs = [(actual, (actual + shift) % len(label_names)) for actual in range(len(label_names)) for shift in (0, 1)]
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0)).tolist()
    actual, predicted = zip(*(pairs[index] for index in order), strict=True)
    return confusion_csv(torch.tensor(predicted), torch.tensor(actual), label_names)


def axis_labels(dvc_json: str) -> list[tuple[str, list[str]]]:
    """Each drawn axis ("X" or "Y") with its labels in drawing order, of the confusion chart that `dvc plots ...
    --json` printed (a diff draws an x axis per revision)."""
    content = json.loads(dvc_json)["data"][CHART][0]["content"]
    svg = vl_convert.vegalite_to_svg(content, vl_version=plots_template.VEGA_LITE_VERSION)
    axes = re.findall(r'aria-label="([XY])-axis.*?<g class="mark-text role-axis-label"[^>]*>(.*?)</g>', svg, re.S)
    return [(axis, re.findall(r"<text[^>]*>([^<]*)</text>", texts)) for axis, texts in axes]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return helpers.copy_project(tmp_path / "project")


def test_evaluate_writes_each_labels_index_beside_it() -> None:
    csv = confusion_csv(torch.tensor([1, 1]), torch.tensor([0, 1]), ["yes", "no"])
    assert csv == "actual,predicted,actual_index,predicted_index\nyes,no,0,1\nno,no,1,1\n"


def test_committed_templates_match_their_source() -> None:
    for path in (plots_template.CONFUSION_TEMPLATE, plots_template.OLD_CONFUSION_TEMPLATE):
        assert (helpers.REPO / path).read_text() == plots_template.confusion_template(), path


def strings(value: object) -> set[str]:
    """Every string value in a JSON document (not its keys)."""
    if isinstance(value, dict):
        return set().union(*map(strings, value.values()))
    if isinstance(value, list):
        return set().union(*map(strings, value))
    return {value} if isinstance(value, str) else set()


def test_template_holds_no_word_list() -> None:
    assert not strings(json.loads(plots_template.confusion_template())) & {*DIGITS, *WORDS}


def test_show_orders_both_axes_by_label_index(project: Path) -> None:
    (project / "plots").mkdir()
    (project / "plots/confusion.csv").write_text(confusion(WORDS))
    shown = helpers.dvc(project, "plots", "show", "--json").stdout
    assert axis_labels(shown) == [("Y", WORDS), ("X", WORDS)]


def test_diff_against_a_revision_without_label_indices(project: Path) -> None:
    """An older revision names `confusion_digits` and wrote no index columns: a diff that lists it first still draws,
    in the newer revision's label order."""
    definitions = (project / "dvc.yaml").read_text()
    assert "template: confusion_labels\n" in definitions
    (project / "dvc.yaml").write_text(
        definitions.replace("template: confusion_labels\n", "template: confusion_digits\n")
    )
    (project / "plots").mkdir()
    rows = confusion(DIGITS).splitlines()[1:]
    old = "actual,predicted\n" + "".join(",".join(row.split(",")[:2]) + "\n" for row in rows)
    (project / "plots/confusion.csv").write_text(old)
    helpers.commit(project, "a run from before the label index columns")
    (project / "dvc.yaml").write_text(definitions)
    (project / "plots/confusion.csv").write_text(confusion(DIGITS))
    helpers.commit(project, "a run with them")

    drawn = axis_labels(helpers.dvc(project, "plots", "diff", "HEAD~1", "HEAD", "--json").stdout)
    assert {axis for axis, _ in drawn} == {"X", "Y"} and all(labels == DIGITS for _, labels in drawn), drawn

    (project / plots_template.OLD_CONFUSION_TEMPLATE).unlink()
    result = helpers.dvc(project, "plots", "diff", "HEAD~1", "HEAD", "--json", check=False)
    assert result.returncode != 0 and "Template 'confusion_digits' not found" in result.stderr


def test_old_revisions_alone_sort_alphabetically_as_dvc_does(project: Path) -> None:
    (project / "plots").mkdir()
    (project / "plots/confusion.csv").write_text("actual,predicted\ntwo,one\none,one\nzero,two\n")
    shown = helpers.dvc(project, "plots", "show", "--json").stdout
    assert axis_labels(shown) == [("Y", ["one", "two", "zero"]), ("X", ["one", "two"])]  # not in order of appearance
