"""benchmarks/speed.py runs end to end on a few synthetic clips and reports every row it promises."""

from __future__ import annotations

import json

import torch

from benchmarks import speed


def test_the_speed_benchmark_reports_training_and_preprocessing(tmp_path, capsys):
    out = tmp_path / "speed.json"
    absent = tmp_path / "absent.tar.gz"
    speed.main(["--archive", str(absent), "--clips", "40", "--repeats", "1", "--no-compile", "--json", str(out)])
    results = json.loads(out.read_text())
    assert results["source"].startswith("synthetic tones") and results["clips"] == 40
    rows = results["train"]
    expected = [
        "notebook loop (cpu)",
        "train epoch, plain layers (cpu)",
        "train epoch, eager (cpu)",
        "arithmetic limit (cpu)",
    ]
    assert [name for name in rows if "cuda" not in name] == expected
    assert all(row["clips_per_s"] > 0 for row in rows.values())
    assert any("cuda" in name for name in rows) == torch.cuda.is_available()
    assert results["preprocess"]["identical"] is True
    assert {"decode", "resample", "locate", "transfer"} <= results["preprocess"]["seconds_per_clip"].keys()
    table = capsys.readouterr().out
    assert "x notebook" in table and "8.73 MFLOP per clip" in table and "identical clips: True" in table
