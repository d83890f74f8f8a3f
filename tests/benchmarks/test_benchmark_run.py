"""The results page cannot drift from the measurements: docs/results.md's tables are generated from results.json."""

from __future__ import annotations

import pytest

from benchmarks.run import RESULTS, RESULTS_DOC, GridError, generated_block, load_results, tables


def test_the_results_page_shows_the_tables_of_results_json():
    text = RESULTS_DOC.read_text(encoding="utf-8")
    start, end = generated_block(text)
    assert text[start:end].strip() == tables(load_results(RESULTS)).strip(), (
        "docs/results.md is stale: run `python -m benchmarks.run --table-only`"
    )


def test_a_page_without_its_marker_lines_is_a_clear_error():
    with pytest.raises(GridError, match="has lost its marker lines"):
        generated_block("# Results\n\nno tables here\n")
