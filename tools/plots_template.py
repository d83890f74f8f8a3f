"""Write DVC's plots page template with Vega, Vega-Lite and vega-embed inlined, so `dvc plots` draws offline.

DVC's default page loads those libraries from a CDN, so without network every chart is blank. DVC lets a project
supply its own page (``plots.html_template`` in ``.dvc/config``, relative to ``.dvc/``); this module makes one from
the JavaScript bundle that the pip package vl-convert-python ships, so no third-party JavaScript is committed.
Run ``python -m tools.plots_template`` (``make install`` does) from the repository root.
"""

from __future__ import annotations

import sys
from pathlib import Path

import vl_convert
from dvc_render.html import PAGE_HTML

from stages.fileio import write_text

TEMPLATE = Path(".dvc/plots_template.html")
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


def main() -> None:
    path = write()
    print(f"wrote {path} ({path.stat().st_size} bytes): `dvc plots show` now draws without network", file=sys.stderr)


if __name__ == "__main__":
    main()
