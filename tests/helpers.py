"""Shared test helpers: run stages as a user would, make audio and projects on disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile
import yaml

from tools import plots_template
from tools.notebook import NOTEBOOK

REPO = Path(__file__).resolve().parent.parent
FSDD_ARCHIVE = REPO.parent / "shared" / "datasets" / "free-spoken-digit-dataset-1.0.10.tar.gz"
PROJECT_FILES = (
    "stages",
    "dvc.yaml",
    "params.yaml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    ".gitignore",
)


def environment() -> dict[str, str]:
    """The environment a stage sees: this venv's python first on PATH, and the project importable."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    env.setdefault("GIT_AUTHOR_NAME", "test")
    env.setdefault("GIT_AUTHOR_EMAIL", "test@example.invalid")
    env.setdefault("GIT_COMMITTER_NAME", "test")
    env.setdefault("GIT_COMMITTER_EMAIL", "test@example.invalid")
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(args: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command and return its result; with ``check``, fail the test showing its output."""
    result = subprocess.run(args, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def stage(name: str, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m stages.<name>`` in ``cwd``, the way ``dvc repro`` does."""
    return run([sys.executable, "-m", f"stages.{name}", *args], cwd, check=check)


def dvc(root: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run this venv's ``dvc`` in ``root``."""
    return run([sys.executable, "-m", "dvc", *args], root, check=check, timeout=timeout)


def write_params(root: Path, notebook: bool = False, **sections: dict) -> None:
    """Write ``params.yaml`` in ``root``: the project's defaults (with ``notebook``, the notebook's run) updated with
    ``sections``.
    """
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in [*(NOTEBOOK.items() if notebook else []), *sections.items()]:
        params.setdefault(section, {}).update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def write_wav(path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, subtype=subtype)
    return path


def tone(frequency: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    time = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def copy_project(target: Path) -> Path:
    """Copy the project's pipeline files into ``target`` and make it a git repository with one commit."""
    target.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    plots_template.write(target / plots_template.TEMPLATE)  # git-ignored, so made rather than copied
    run(["git", "init", "-q", "-b", "main"], target)
    return target


def commit(root: Path, message: str) -> None:
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", message], root)


def write_processed(
    root: Path, clips_per_label: int = 6, samples: int = 8000, seed: int = 0, sample_rate: int = 8000
) -> None:
    """Write small processed splits in which each label is a noisy tone of its own pitch."""
    import torch

    from stages.datasets import save_split
    from stages.preprocess import LABEL_NAMES

    generator = np.random.default_rng(seed)
    time = np.arange(samples) / sample_rate
    for split in ("train", "validation", "test"):
        labels = np.repeat(np.arange(len(LABEL_NAMES)), clips_per_label)
        waves = np.stack([np.sin(2 * np.pi * (200 + 150 * label) * time) for label in labels])
        waves += 0.3 * generator.standard_normal(waves.shape)
        save_split(
            root / "data" / "processed" / f"{split}.pt",
            {
                "waveforms": torch.from_numpy(waves.astype(np.float32)).unsqueeze(1),
                "labels": torch.from_numpy(labels),
                "speakers": [f"{split}{index % 3}" for index in range(len(labels))],
                "paths": [f"{LABEL_NAMES[label]}/{split}{index}_nohash_0.wav" for index, label in enumerate(labels)],
                "label_names": LABEL_NAMES,
                "sample_rate": sample_rate,
            },
        )
