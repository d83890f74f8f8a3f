"""benchmarks/export_size.py measures the two files the export stage writes (real export, real quantiser)."""

from __future__ import annotations

from benchmarks import export_size
from spokenwords import params
from spokenwords.models.architectures import build_model, model_config


def test_the_size_benchmark_measures_both_files_of_a_model():
    section = params.validate({"model": {"name": "m5"}}, params.ModelParams)
    float32, int8 = export_size.sizes(build_model(model_config(section, 16000), 10).eval())
    assert 0 < int8 <= 0.31 * float32  # the notebook's M5: 0.30x, its int8 weights a quarter of the float32 bytes
