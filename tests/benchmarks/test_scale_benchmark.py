"""benchmarks/scale.py runs every stage of a small synthetic M5 project and reports each one's time and memory."""

from __future__ import annotations

import pytest

from benchmarks import scale


@pytest.mark.slow
def test_the_scale_benchmark_measures_every_stage_and_cleans_up(tmp_path, capsys):
    scale.main(["--clips", "100", "--workdir", str(tmp_path)])
    table = capsys.readouterr().out
    for stage in (*scale.STAGES, "dvc commit"):
        assert f"| 100 | {stage} |" in table, stage
    assert "100 clips: 3 MB" in table  # 100 float32 clips of 8,000 samples
    assert not (tmp_path / "clips-100").exists()
