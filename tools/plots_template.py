"""Write DVC's plots page template with Vega, Vega-Lite and vega-embed inlined, so `dvc plots` draws offline.

DVC's default page loads those libraries from a CDN, so without network every chart is blank. DVC lets a project
supply its own page (``plots.html_template`` in ``.dvc/config``, relative to ``.dvc/``); this module makes one from
the JavaScript bundle that the pip package vl-convert-python ships, so no third-party JavaScript is committed.
Run ``python -m tools.plots_template`` (``make install`` does) from the repository root.

It also holds the source of ``.dvc/plots/confusion_digits.json``, DVC's own confusion template with its axes in
digit order (zero to nine) instead of alphabetical. That small JSON spec is committed, so `dvc plots diff` finds it
in every revision; ``python -m tools.plots_template --confusion`` rewrites it, and a test keeps the two equal.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import vl_convert
from dvc_render.html import PAGE_HTML
from dvc_render.vega_templates import ConfusionTemplate

from stages.fileio import write_text
from stages.sources import DIGITS

TEMPLATE = Path(".dvc/plots_template.html")
CONFUSION_TEMPLATE = Path(".dvc/plots/confusion_digits.json")
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
    """DVC's confusion template, its axes sorted zero to nine (any other labels follow)."""
    content = copy.deepcopy(ConfusionTemplate.DEFAULT_CONTENT)
    for axis in ("x", "y"):
        content["spec"]["encoding"][axis]["sort"] = list(DIGITS)
    return json.dumps(content, indent=2) + "\n"


def main() -> None:
    if sys.argv[1:] == ["--confusion"]:
        write_text(CONFUSION_TEMPLATE, confusion_template())
        print(f"wrote {CONFUSION_TEMPLATE}", file=sys.stderr)
        return
    path = write()
    print(f"wrote {path} ({path.stat().st_size} bytes): `dvc plots show` now draws without network", file=sys.stderr)


if __name__ == "__main__":
    main()
