"""benchmarks/run.py with --jobs 2: tiny runs through DVC's queue, collected by experiment name, in a scratch project
(never the repository's benchmarks/results.json).
"""

from __future__ import annotations

import contextlib
import io

import pytest

from benchmarks import run as bench
from tests.helpers import TINY, commit, copy_project, write_params

# TINY on M5 without Piper or Kokoro clips: nothing to embed and the least to synthesise, so each run is short.
QUEUE_TINY = {
    **TINY,
    "data": {"synthetic_clips": 200, "piper_clips": 0, "kokoro_clips": 0},
    "preprocess": {"sample_rate": 8000},
    "model": {"name": "m5"},
}


def tiny_run(name: str, *overrides: str) -> bench.Run:
    return bench.Run(row="tiny", column="synthetic", key=name, name=name, overrides=overrides)


def run_grid(root, runs: list[bench.Run]) -> tuple[dict, str, str]:
    """The grid through the queue with 2 jobs: the results by name, the GridError's message ("" if none), stderr."""
    collected: dict[str, dict] = {}
    stderr = io.StringIO()
    message = ""
    with contextlib.redirect_stderr(stderr):
        try:
            bench.run_grid(root, runs, 2, lambda item, outcome: collected.__setitem__(item.name, outcome))
        except bench.GridError as error:
            message = str(error)
    return collected, message, stderr.getvalue()


@pytest.fixture(scope="module", autouse=True)
def quick_polls():
    """The queue asked for its tasks' states every half second rather than every 5 s: tiny runs end in seconds, and
    a worker of the test run would otherwise wait up to 5 s after each.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench, "POLL_SECONDS", 0.5)
        yield


@pytest.fixture(scope="module")
def queued(tmp_path_factory):
    """One good run and one whose params the train stage refuses, queued side by side in a tiny project."""
    root = copy_project(tmp_path_factory.mktemp("queue"))
    write_params(root, **QUEUE_TINY)
    commit(root, "tiny config")
    return root, *run_grid(root, [tiny_run("tiny-s0", "train.seed=0"), tiny_run("tiny-bad", "train.schedule=bogus")])


@pytest.mark.slow
def test_queued_runs_are_collected_by_name_with_their_accuracy(queued):
    _, collected, _, _ = queued
    assert sorted(collected) == ["tiny-s0"]
    outcome = collected["tiny-s0"]
    assert 0 <= outcome["accuracy"] <= 1
    assert outcome["jobs"] == 2 and outcome["epoch_seconds"] is None
    assert outcome["command"] == ["train.seed=0"]


@pytest.mark.slow
def test_a_failed_queued_run_is_reported_with_its_name_and_log(queued):
    _, _, message, stderr = queued
    assert message == "1 of 2 queued runs failed: tiny-bad (logs above)"
    assert "tiny-bad: failed" in stderr
    assert "train.schedule must be one of" in stderr  # the stage's own error, from `dvc queue logs`


@pytest.mark.slow
def test_running_the_same_names_again_replaces_the_earlier_experiments(queued):
    """One name is an experiment's and one a failed task's. Training is deterministic, so the same params give the
    same accuracy; the failed name now holds a good run with its own params.
    """
    root, first, _, _ = queued
    collected, message, _ = run_grid(root, [tiny_run("tiny-s0", "train.seed=0"), tiny_run("tiny-bad", "train.seed=1")])
    assert message == "" and sorted(collected) == ["tiny-bad", "tiny-s0"]
    assert collected["tiny-s0"]["accuracy"] == first["tiny-s0"]["accuracy"]
    assert collected["tiny-bad"]["command"] == ["train.seed=1"] and 0 <= collected["tiny-bad"]["accuracy"] <= 1
