"""Write DVC's plots page template with Vega, Vega-Lite and vega-embed inlined, so `dvc plots` draws offline.

DVC's default page loads those libraries from a CDN, so without network every chart is blank. DVC lets a project
supply its own page (``plots.html_template`` in ``.dvc/config``, relative to ``.dvc/``); this module makes one from
the JavaScript bundle that the pip package vl-convert-python ships, so no third-party JavaScript is committed.
Run ``python -m tools.plots_template`` (``make install`` does) from the repository root.

It also holds the source of ``.dvc/plots/confusion_labels.json``, DVC's own confusion template with its axes in the
model's label order instead of alphabetical, for any vocabulary: the evaluate stage writes each label's index beside
it (``actual_index``, ``predicted_index``), and the template sorts each axis by that index. ``python -m
tools.plots_template --confusion`` rewrites it, and a test keeps the committed file and this source equal.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import vl_convert
from dvc_render.html import PAGE_HTML
from dvc_render.vega_templates import ConfusionTemplate, Template

from spokenwords.fileio import write_text

TEMPLATE = Path(".dvc/plots_template.html")
CONFUSION_TEMPLATE = Path(".dvc/plots/confusion_labels.json")
# The name dvc.yaml gave the confusion template when the labels were always the ten digits. `dvc plots diff` reads
# templates from the working tree only, under the name in the dvc.yaml of the first revision it lists (the workspace,
# when it is one), so `dvc plots diff OLD NEW` fails outright without this file; it holds the same template.
OLD_CONFUSION_TEMPLATE = Path(".dvc/plots/confusion_digits.json")
# DVC's built-in templates declare Vega-Lite v5 specs: use the newest v5 rather than vl-convert's default (v6).
VEGA_LITE_VERSION = "5.21"
# DVC's page calls `vegaEmbed(element, spec)` with no options. Draw SVG instead of the default canvas: it stays sharp
# when zoomed or printed, and the drawn marks are in the DOM where a headless browser test can count them.
SNIPPET = """
window.vegaEmbed = (element, spec, options) => vegaEmbed(element, spec, { renderer: "svg", ...options });
window.vega = vega;
window.vegaLite = vegaLite;
"""
# DVC fills these by plain text replacement, and `</script` would end the inline script early.
MUST_NOT_APPEAR = ("{plot_divs}", "{scripts}", "{refresh_tag}", "</script")


def page(bundle: str) -> str:
    """DVC's own default page, its CDN `{scripts}` placeholder swapped for ``bundle`` in an inline script."""
    found = [text for text in MUST_NOT_APPEAR if text in bundle.lower()]
    if found:
        raise ValueError(f"the JavaScript bundle contains {found}: it cannot be inlined in DVC's page as it is")
    return PAGE_HTML.replace("{scripts}", f'<script type="text/javascript">\n{bundle}\n</script>')


def write(path: Path = TEMPLATE) -> Path:
    """Write the page atomically, so an interrupted set-up never leaves DVC a truncated template."""
    write_text(path, page(vl_convert.javascript_bundle(SNIPPET, vl_version=VEGA_LITE_VERSION)))
    return path


def confusion_template() -> str:
    """DVC's confusion template, each axis sorted by the index column of its field (``predicted_index`` beside
    ``predicted``).

    The index is made a zero-padded string before DVC's aggregation, so 10 sorts after 9, and a label without one
    (in a confusion.csv written before the index columns) sorts after every indexed label, alphabetically, as DVC's
    own template sorts them all. The order is kept through the aggregation as the smallest of each cell's keys; the
    cells the template imputes (pairs that never occur) have none, and the axis sort ignores them.
    """
    content = copy.deepcopy(ConfusionTemplate.DEFAULT_CONTENT)
    spec = content["spec"]
    aggregate = spec["transform"][0]
    if "aggregate" not in aggregate:
        raise ValueError("DVC's confusion template no longer starts with its aggregate transform")
    keys = []
    for axis in ("x", "y"):
        field, key = Template.anchor(axis), f"{axis}_order"
        index = f"datum['{field}_index']"
        padded = f"pad(toString({index}), 9, '0', 'left')"
        keys.append({"calculate": f"isValid({index}) && {index} !== '' ? {padded} : '~' + datum['{field}']", "as": key})
        aggregate["aggregate"].append({"op": "min", "field": key, "as": key})
        spec["encoding"][axis]["sort"] = {"field": key, "op": "min"}
    spec["transform"][:0] = keys
    return json.dumps(content, indent=2) + "\n"


def main() -> None:
    if sys.argv[1:] == ["--confusion"]:
        for path in (CONFUSION_TEMPLATE, OLD_CONFUSION_TEMPLATE):
            write_text(path, confusion_template())
            print(f"wrote {path}", file=sys.stderr)
        return
    path = write()
    print(f"wrote {path} ({path.stat().st_size} bytes): `dvc plots show` now draws without network", file=sys.stderr)


if __name__ == "__main__":
    main()
