"""The project as a user's copy would hold it: its paths, commands run in it, and scratch copies made as git
repositories. The tests and the benchmarks both work through these, so neither imports the other.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tools import plots_template
from tools.notebook import NOTEBOOK

REPO = Path(__file__).resolve().parent.parent
FSDD_ARCHIVE = REPO.parent / "shared" / "datasets" / "free-spoken-digit-dataset-1.0.10.tar.gz"
PROJECT_FILES = (
    "stages",
    "spokenwords",
    "dvc.yaml",
    "params.yaml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",
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


def checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """``result`` of a command that succeeded; for one that failed, the test fails showing its output."""
    if result.returncode != 0:
        raise AssertionError(f"{result.args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def run(args: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command and return its result; with ``check``, fail the test showing its output."""
    result = subprocess.run(args, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout)
    return checked(result) if check else result


@dataclass(frozen=True)
class Measured:
    """A finished stage: exit code, wall seconds, peak RSS in MB and output (stdout and stderr).

    ``main_rss_mb`` is the stage's own process until its module returned, ``workers_rss_mb`` the largest of the worker
    processes it started (0 if none): see ``tools.peak_rss``.
    """

    returncode: int
    seconds: float
    main_rss_mb: float
    workers_rss_mb: float
    output: str


def measure(module: str, cwd: Path, *arguments: str) -> Measured:
    """Run ``python -m module`` in ``cwd`` through ``tools.peak_rss`` and measure its wall time and peak memory.

    The output goes to a file, not a pipe, so a chatty stage cannot block on a full pipe while nothing reads it.
    """
    with tempfile.TemporaryDirectory() as folder:
        report, log = Path(folder, "peaks.json"), Path(folder, "output.log")
        command = [sys.executable, "-m", "tools.peak_rss", str(report), module, *arguments]
        with open(log, "wb") as output:
            start = time.perf_counter()
            result = subprocess.run(command, cwd=cwd, env=environment(), stdout=output, stderr=subprocess.STDOUT)
            seconds = time.perf_counter() - start
        peaks = json.loads(report.read_text())
        text = log.read_text(errors="replace")
    return Measured(result.returncode, seconds, peaks["main_mb"], peaks["workers_mb"], text)


def dvc(root: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run this venv's ``dvc`` in ``root``."""
    return run([sys.executable, "-m", "dvc", *args], root, check=check, timeout=timeout)


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


def write_params(root: Path, notebook: bool = False, **sections: dict) -> None:
    """Write ``params.yaml`` in ``root``: the project's defaults (with ``notebook``, the notebook's run) updated with
    ``sections``.
    """
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in [*(NOTEBOOK.items() if notebook else []), *sections.items()]:
        params.setdefault(section, {}).update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
