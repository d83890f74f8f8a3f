"""`dvc plots show`/`diff` pages and `tools.report` draw every chart in a real browser with no network (issue #4).

Headless Chromium opens the pages with every host name unresolvable, its net log records any request the page makes,
and the DOM it dumps after the scripts ran shows what each chart drew (the template makes vega-embed draw SVG).
Screenshots land in artifacts/ for a person to look at.
"""

from __future__ import annotations

import base64
import csv
import json
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from dvc_render.base import Renderer
from dvc_render.html import PAGE_HTML

from spokenwords.data.processed_splits import load_split
from tests import helpers
from tests.tools.test_plots_template import axis_labels
from tools import plots_template

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = helpers.REPO / "artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=15000",
    "--window-size=1400,4000",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Drawn(HTMLParser):
    """A dumped DOM reduced to what the checks need, per DVC plot `<div id>` ("" outside one).

    ``marks`` counts the items each vega mark drew (a path with no outline is not drawn), ``texts`` holds the
    SVG text shown (titles, axis titles, legends, facet headers), ``links`` every src/href and ``images`` the
    `<img>` sources. Script bodies are raw text to the parser, so the code in them is never mistaken for markup.
    """

    def __init__(self) -> None:
        super().__init__()
        self.marks: dict[str, Counter[str]] = defaultdict(Counter)
        self.texts: dict[str, set[str]] = defaultdict(set)
        self.links: list[str] = []
        self.images: list[str] = []
        self.open: list[tuple[str, str, str]] = []  # (tag, class, plot id) of each open element

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        _, parent_class, plot = self.open[-1] if self.open else ("", "", "")
        if not plot and tag == "div":
            plot = attributes.get("id", "")
        if "role-mark" in parent_class.split() and (tag != "path" or attributes.get("d")):
            self.marks[plot][parent_class.split()[0]] += 1
        self.links += [value for name, value in attributes.items() if name in ("src", "href")]
        if tag == "img":
            self.images.append(attributes.get("src", ""))
        if tag not in VOID_ELEMENTS:
            self.open.append((tag, attributes.get("class", ""), plot))

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1][0] == "text":
            self.texts[self.open[-1][2]].add(data.strip())


def render(page: Path, name: str) -> tuple[Drawn, list[str]]:
    """Open ``page`` in Chromium; return what it drew and the URLs it requested over the network for the page.

    The net log also holds Chromium's own background requests; those the page made are keyed by its file:// site.
    A screenshot is saved as ``artifacts/<name>.png``.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / f"{name}.png"
    with tempfile.TemporaryDirectory() as scratch:
        netlog = Path(scratch) / "netlog.json"
        result = subprocess.run(
            [
                str(CHROMIUM),
                *FLAGS,
                f"--user-data-dir={scratch}/profile",
                f"--log-net-log={netlog}",
                f"--screenshot={screenshot}",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0 and result.stdout, f"chromium failed ({result.returncode}):\n{result.stderr}"
        log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requests = [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start and event["params"].get("network_isolation_key", "").startswith("file://")
    ]
    assert screenshot.read_bytes().startswith(PNG_SIGNATURE)
    drawn = Drawn()
    drawn.feed(result.stdout)
    drawn.close()
    return drawn, requests


def declared_plots(root: Path) -> tuple[dict[str, dict], list[str]]:
    """dvc.yaml's charts (by name) and images (by path)."""
    charts, images = {}, []
    for entry in yaml.safe_load((root / "dvc.yaml").read_text())["plots"]:
        if isinstance(entry, str):
            images.append(entry)
        else:
            charts.update(entry)
    return charts, images


def y_fields(definition: dict) -> list[str]:
    return [field for value in definition["y"].values() for field in ([value] if isinstance(value, str) else value)]


def is_confusion(definition: dict) -> bool:
    return str(definition.get("template", "")).startswith("confusion")


def label_names(root: Path) -> list[str]:
    return load_split(root / "data/processed/test.pt")["label_names"]


def minimum_marks(definition: dict, revisions: int, labels: int) -> Counter[str]:
    """What a chart must draw at least: a line per y field and revision, or a cell per label pair and revision."""
    if is_confusion(definition):
        return Counter({"mark-rect": labels**2 * revisions})
    return Counter({"mark-line": len(y_fields(definition)) * revisions})


def check_page(root: Path, out: str, revisions: list[str]) -> None:
    """Every declared chart drew its marks with its title, axis titles and legend, and every image is there."""
    page = root / out / "index.html"
    drawn, requests = render(page, out)
    assert requests == [], "the page made network requests"
    assert [link for link in drawn.links if urlsplit(link).scheme not in ("", "data", "file")] == []
    charts, images = declared_plots(root)
    for name, definition in charts.items():
        plot = Renderer.remove_special_chars(name)
        marks = drawn.marks[plot]
        minimum = minimum_marks(definition, len(revisions), len(label_names(root)))
        assert marks >= minimum, f"{name!r} drew {dict(marks)}, expected at least {dict(minimum)}"
        # A linear chart's legend names the revisions (colour) and the y fields (dash); a confusion matrix has a
        # column per revision.
        texts = {definition.get("title", name), definition["x_label"], definition["y_label"], *revisions}
        if not is_confusion(definition):
            texts |= set(y_fields(definition))
        assert texts <= drawn.texts[plot], f"{name!r} shows {sorted(drawn.texts[plot])}, expected {sorted(texts)}"
    names = [Path(src).name for src in drawn.images]
    for image in images:
        assert sum(name.endswith(image.replace("/", "_")) for name in names) == len(revisions), (image, names)
    for src in drawn.images:
        assert (page.parent / src).read_bytes().startswith(PNG_SIGNATURE), src


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.skip(f"no {CHROMIUM}: `make browser` installs it (as root, with apt-get), or `apt-get install chromium`")
    return CHROMIUM


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with two committed runs (the second with another lr) and the generated plots template."""
    root = helpers.copy_project(tmp_path_factory.mktemp("plots") / "project")
    helpers.write_processed(root)
    for lr in (0.01, 0.003):
        helpers.write_params(
            root,
            notebook=True,
            train={"epochs": 2, "batch_size": 16, "device": "cpu", "lr": lr},
            evaluate={"device": "cpu"},
        )
        for name in ("train", "evaluate", "plot"):
            helpers.stage(name, root)
        helpers.commit(root, f"run with lr {lr}")
    return root


def test_show_draws_every_chart_offline(chromium: Path, project: Path) -> None:
    helpers.dvc(project, "plots", "show", "-o", "plots_show")
    check_page(project, "plots_show", ["workspace"])


def test_diff_tells_the_revisions_apart(chromium: Path, project: Path) -> None:
    helpers.dvc(project, "plots", "diff", "HEAD~1", "-o", "plots_diff")
    check_page(project, "plots_diff", ["HEAD~1", "workspace"])


def test_dvc_default_page_needs_the_network(chromium: Path, project: Path) -> None:
    """Issue #4 as it was: DVC's own page asks a CDN for its scripts and, offline, draws nothing."""
    default = project / "default_template.html"
    default.write_text(PAGE_HTML)
    helpers.dvc(project, "plots", "show", "-o", "plots_default", "--html-template", str(default))
    drawn, requests = render(project / "plots_default" / "index.html", "plots_default")
    assert requests and all(url.startswith("https://cdn.jsdelivr.net/") for url in requests), requests
    assert not any(drawn.marks.values())


def test_missing_template_fails_rather_than_drawing_a_blank_page(project: Path) -> None:
    """DVC reads a missing template's path as the template itself: a confusing error, but no blank page."""
    template = project / plots_template.TEMPLATE
    hidden = template.rename(template.with_suffix(".hidden"))
    try:
        result = helpers.dvc(project, "plots", "show", "-o", "plots_missing", check=False)
    finally:
        hidden.rename(template)
    assert result.returncode != 0
    assert "HTML template has to contain '{plot_divs}'" in result.stderr
    assert not (project / "plots_missing" / "index.html").exists()


def test_report_is_one_self_contained_page(chromium: Path, project: Path) -> None:
    helpers.run([sys.executable, "-m", "tools.report"], project)
    drawn, requests = render(project / "report.html", "report")
    assert requests == []
    assert [link for link in drawn.links if not link.startswith("data:image/png;base64,")] == []
    # each figure drawn once, by the plot stage, and embedded as it is
    assert len(drawn.images) == 4
    page = (project / "report.html").read_text()
    for name in ("learning_curves", "confusion_matrix", "kernels", "waveforms"):
        data = base64.b64encode((project / f"plots/images/{name}.png").read_bytes()).decode("ascii")
        assert f'src="data:image/png;base64,{data}"' in page, name


def test_confusion_axes_follow_the_label_order(project: Path) -> None:
    """DVC fills the project's confusion template, whose axes follow the model's labels, not the alphabet."""
    labels = label_names(project)
    assert labels != sorted(labels)
    with (project / "plots/confusion.csv").open(newline="") as handle:
        predicted = {row["predicted"] for row in csv.DictReader(handle)}
    shown = helpers.dvc(project, "plots", "show", "--json").stdout
    assert axis_labels(shown) == [("Y", labels), ("X", [label for label in labels if label in predicted])]
