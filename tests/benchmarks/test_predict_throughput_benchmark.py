"""The predictors' throughput benchmark, on a tiny scale: an FSDD-like archive of a few tone recordings and an
exported (untrained) project; real subprocesses, as the benchmark runs them on the real mirror.
"""

from __future__ import annotations

import tarfile

import pytest

from benchmarks.predict_throughput import MODELS, benchmark
from tests.helpers import tone, write_wav
from tests.inference.test_predict import exported_project


@pytest.mark.slow
def test_the_benchmark_runs_both_predictors_and_reports_speed_and_memory(tmp_path):
    folder = tmp_path / "fsdd" / "free-spoken-digit-dataset-1.0.10" / "recordings"
    for index in range(4):
        write_wav(folder / f"{index}_theo_0.wav", tone(200 + 100 * index, 8000, 0.4), 8000)
    archive = tmp_path / "fsdd.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(tmp_path / "fsdd" / "free-spoken-digit-dataset-1.0.10", "free-spoken-digit-dataset-1.0.10")
    project = exported_project(tmp_path / "project", "embedding", 16000)
    results = benchmark(project, archive, files=4, memory=(3, 10))
    assert set(results) == set(MODELS)
    for runs in results.values():
        assert [runs[key]["files"] for key in ("startup", "speed", "memory_3", "memory_10")] == [1, 4, 3, 10]
        assert all(run["files_per_s"] > 0 and run["main_mb"] > 0 for run in runs.values())
        assert runs["memory_10"]["workers_mb"] > 0  # ten files: prepared on workers
    with pytest.raises(FileNotFoundError, match="no trained model"):
        benchmark(tmp_path, archive)
