"""Shared test helpers: run stages as a user would, make audio and projects on disk."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile

from spokenwords.params import DIGITS
from tools.project import FSDD_ARCHIVE, REPO, checked, commit, copy_project, dvc, environment, run, write_params

# Parameter counts of each model at its default settings, pinned here once; M5's is the notebook's.
PARAMETERS = {"m5": 25_290, "dscnn": 23_050, "bcresnet": 17_056, "embedding": 93_386}

# The default pipeline (the embedding model on espeak-ng and Piper clips), scaled down.
TINY = {
    "data": {"synthetic_clips": 200, "piper_clips": 24, "kokoro_clips": 4},
    "embed": {"copies": 1},
    "train": {"epochs": 1, "warmup_epochs": 0.5, "batch_size": 32, "device": "cpu"},
    "evaluate": {"device": "cpu"},
    "transfer": {"sets": {}, "device": "cpu"},
    # a 1-epoch model scored on a few dozen clips: one changed prediction is points of accuracy
    "export": {"latency_clips": 10, "max_int8_drop": 100.0},
}

# M5 with on-device augmentation and a one-cycle schedule, for the tests that stop and resume training: the run draws
# from the shuffle, augmentation and global generators and steps the schedule, so a resume that missed any of their
# states would end elsewhere.
RESUMABLE_TRAIN = {
    "epochs": 6,
    "batch_size": 8,
    "device": "cpu",
    "augment": True,
    "schedule": "onecycle",
    "warmup_epochs": 1.0,
    "lr": 0.005,
}

# Re-exported: the tests reach the project through tests.helpers, the benchmarks through tools.project.
__all__ = ["FSDD_ARCHIVE", "PARAMETERS", "REPO", "commit", "copy_project", "dvc", "environment", "run", "write_params"]


# The modules a stage process starts with, imported once by the server that forks each stage run (see ``stage``);
# tests.helpers holds the function the forked process runs.
STAGES = ("download", "preprocess", "embed", "train", "evaluate", "transfer", "export", "plot")
STAGE_PRELOAD = [*(f"stages.{name}" for name in STAGES), "tests.helpers"]
STAGE_TIMEOUT = 900  # seconds, as ``tools.project.run`` allows a command


def _stage_context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(STAGE_PRELOAD)
    return context


def _run_as_main(module: str, cwd: str, args: list[str], env: dict[str, str], stdout: str, stderr: str) -> None:
    """In a forked stage process: what ``python -m module *args`` does in ``cwd``, its output going to two files."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for descriptor, path in ((1, stdout), (2, stderr)):
        handle = os.open(path, os.O_WRONLY)
        os.dup2(handle, descriptor)
        os.close(handle)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 (fd 1 outlives this function)
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a fresh interpreter's handlers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.argv = [module, *args]
    sys.path.insert(0, cwd)  # `python -m` puts the working folder first
    sys.modules.pop(module, None)  # preloaded for its imports; runpy warns when the module it runs is already there
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def stage(name: str, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m stages.<name>`` in ``cwd``, the way ``dvc repro`` does: its own process, exit code and output.

    The process is forked from a server that imported torch and the stages once (``multiprocessing``'s forkserver),
    so it starts in milliseconds: a fresh interpreter spends about 2 s importing torch, about a fifth of the suite's
    CPU time over its 160 stage runs. It gets the environment of a real stage run (``environment()``); tests that
    signal a stage or measure its memory start a real ``python -m`` instead (``training_until``,
    ``tools.project.measure``).
    """
    with tempfile.TemporaryDirectory() as folder:
        stdout, stderr = Path(folder, "stdout"), Path(folder, "stderr")
        stdout.touch()
        stderr.touch()
        module = f"stages.{name}"
        process = _stage_context().Process(
            target=_run_as_main, args=(module, str(cwd), list(args), environment(), str(stdout), str(stderr))
        )
        process.start()
        process.join(STAGE_TIMEOUT)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([module, *args], STAGE_TIMEOUT)
        result = subprocess.CompletedProcess(
            [sys.executable, "-m", module, *args],
            process.exitcode,
            stdout.read_text(errors="replace"),
            stderr.read_text(errors="replace"),
        )
    return checked(result) if check else result


def predictor(name: str, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m spokenwords.<name>`` (``predict`` or ``predict_onnx``) in ``cwd``, as a user would."""
    return run([sys.executable, "-m", f"spokenwords.{name}", *args], cwd, check=check)


@contextlib.contextmanager
def training_until(root: Path, text: str, timeout: float = 300) -> Iterator[subprocess.Popen]:
    """Start the train stage in ``root`` (its output in ``train.log``) and yield it once ``text`` is in its log (or it
    has ended); it is killed on the way out, so no test leaves a long run behind.
    """
    log = root / "train.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "stages.train"], cwd=root, env=environment(), stdout=handle, stderr=handle
        )
        try:
            deadline = time.monotonic() + timeout
            while text not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            yield process
        finally:
            process.kill()


def write_wav(path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, subtype=subtype)
    return path


def tone(frequency: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    time = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def write_processed(
    root: Path,
    clips_per_label: int = 6,
    samples: int = 8000,
    seed: int = 0,
    sample_rate: int = 8000,
    label_names: tuple[str, ...] = DIGITS,
) -> None:
    """Write small processed splits in which each label is a noisy tone of its own pitch."""
    import torch

    from spokenwords.data.processed_splits import save_split

    label_names = list(label_names)

    generator = np.random.default_rng(seed)
    time = np.arange(samples) / sample_rate
    for split in ("train", "validation", "test"):
        labels = np.repeat(np.arange(len(label_names)), clips_per_label)
        waves = np.stack([np.sin(2 * np.pi * (200 + 150 * label) * time) for label in labels])
        waves += 0.3 * generator.standard_normal(waves.shape)
        save_split(
            root / "data" / "processed" / f"{split}.pt",
            {
                "waveforms": torch.from_numpy(waves.astype(np.float32)).unsqueeze(1),
                "labels": torch.from_numpy(labels),
                "speakers": [f"{split}{index % 3}" for index in range(len(labels))],
                "paths": [f"{label_names[label]}/{split}{index}_nohash_0.wav" for index, label in enumerate(labels)],
                "label_names": label_names,
                "sample_rate": sample_rate,
            },
        )


def repeat_first_validation_clip(root: Path) -> None:
    """Make every clip of the processed validation split its first one, labels kept: any model gives all of them one
    label, so with as many clips of each label its validation accuracy is one over the labels at every epoch.
    """
    from spokenwords.data.processed_splits import load_split, save_split

    path = root / "data" / "processed" / "validation.pt"
    validation = load_split(path)
    waveforms = validation["waveforms"]
    save_split(path, {**validation, "waveforms": waveforms[:1].expand_as(waveforms).clone()})


def run_outcome(root: Path) -> tuple[dict, dict, str]:
    """A finished training run's metrics, weights and history."""
    import json

    import torch

    weights = torch.load(root / "models/model.pt", weights_only=True)["state_dict"]
    return (
        json.loads((root / "metrics/train.json").read_text()),
        weights,
        (root / "plots/train_history.csv").read_text(),
    )


def assert_same_run(first: Path, second: Path) -> None:
    """Two training runs ended in the same metrics, history and weights, bit for bit."""
    import torch

    metrics, weights, history = run_outcome(first)
    other_metrics, other_weights, other_history = run_outcome(second)
    assert metrics == other_metrics and history == other_history
    assert weights.keys() == other_weights.keys()
    assert all(torch.equal(weights[name], other_weights[name]) for name in weights)
