"""Throughput and memory of both predictors over many files, run as a user runs them.

    .venv/bin/python -m benchmarks.predict_throughput [PROJECT] [--files 3000] [--memory 100 10000]

``python -m spokenwords.predict --json`` and ``python -m spokenwords.predict_onnx --json`` run as real subprocesses
(through ``tools.peak_rss``, default options) on FSDD's 3,000 recordings, from the shared mirror (``tools.project.
FSDD_ARCHIVE``; without it the benchmark says so and stops). Printed per predictor: files per second (the whole
command's wall time, start-up included, and the start-up alone, one file), and the peak RSS of the main process and of
the largest worker over 100 and over 10,000 files, the recordings repeated through symbolic links. The targets:
>= 300 files/s on 2 cores, and at most 100 MB more over 10,000 files than over 100.

PROJECT is a folder with a trained ``models/model.pt`` and its export ``models/model.onnx`` (default: the repository
root, after ``dvc repro``); its ``params.yaml``, when there is one, sets the test-time shifts, as for a user who runs
the predictors there. The code run is this repository's.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

from tools.project import FSDD_ARCHIVE, REPO, measure

MODELS = {"spokenwords.predict": "models/model.pt", "spokenwords.predict_onnx": "models/model.onnx"}


def recordings(archive: Path, folder: Path) -> list[Path]:
    """FSDD's recordings extracted under ``folder``, sorted."""
    with tarfile.open(archive) as opened:
        members = [member for member in opened.getmembers() if member.isfile() and member.name.endswith(".wav")]
        opened.extractall(folder, members=members, filter="data")
    return sorted(folder.rglob("recordings/*.wav"))


def linked(sources: list[Path], count: int, work: Path) -> list[str]:
    """``count`` names under ``work``, ``files/00000.wav`` on, linking to ``sources`` in turn."""
    (work / "files").mkdir(exist_ok=True)
    names = [f"files/{index:05d}.wav" for index in range(count)]
    for index, name in enumerate(names):
        if not (work / name).is_symlink():
            (work / name).symlink_to(sources[index % len(sources)])
    return names


def predicted(module: str, project: Path, work: Path, names: list[str]) -> dict[str, float]:
    """One run of a predictor over ``names`` (relative to ``work``): seconds, files/s and peak RSS in MB; a run that
    fails or answers fewer lines than files stops the benchmark.
    """
    run = measure(module, work, "--json", "--model", str(project / MODELS[module]), *names)
    answered = sum(line.startswith("{") for line in run.output.splitlines())
    if run.returncode != 0 or answered != len(names):
        tail = "\n".join(run.output.splitlines()[-5:])
        raise RuntimeError(f"{module} answered {answered} of {len(names)} files (exit {run.returncode}):\n{tail}")
    return {
        "files": len(names),
        "seconds": run.seconds,
        "files_per_s": len(names) / run.seconds,
        "main_mb": run.main_rss_mb,
        "workers_mb": run.workers_rss_mb,
    }


def benchmark(
    project: Path, archive: Path = FSDD_ARCHIVE, files: int = 3000, memory: tuple[int, int] = (100, 10_000)
) -> dict[str, dict]:
    """Both predictors' runs: one file (start-up), ``files`` recordings (speed) and ``memory``'s two counts, by
    module.
    """
    missing = [str(project / path) for path in MODELS.values() if not (project / path).is_file()]
    if missing:
        raise FileNotFoundError(f"no trained model: {', '.join(missing)} missing (run `dvc repro` in {project})")
    with tempfile.TemporaryDirectory(prefix="predict-throughput-") as folder:
        work = Path(folder)
        sources = recordings(archive, work / "fsdd")
        if (project / "params.yaml").is_file():
            (work / "params.yaml").symlink_to((project / "params.yaml").resolve())
        results = {}
        for module in MODELS:
            results[module] = {
                "startup": predicted(module, project, work, linked(sources, 1, work)),
                "speed": predicted(module, project, work, linked(sources, files, work)),
                **{
                    f"memory_{count}": predicted(module, project, work, linked(sources, count, work))
                    for count in memory
                },
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, nargs="?", default=REPO, help="folder with models/ (default: the repo)")
    parser.add_argument("--archive", type=Path, default=FSDD_ARCHIVE, help="the FSDD archive (default: the mirror)")
    parser.add_argument("--files", type=int, default=3000, help="recordings for the speed run (default: all 3,000)")
    parser.add_argument("--memory", type=int, nargs=2, default=(100, 10_000), metavar=("FEW", "MANY"))
    args = parser.parse_args()
    if not args.archive.is_file():
        print(f"skipped: the FSDD mirror {args.archive} is absent")
        return
    try:
        results = benchmark(args.project.resolve(), args.archive, args.files, tuple(args.memory))
    except (FileNotFoundError, RuntimeError) as error:
        sys.exit(f"error: {error}")
    few, many = (f"memory_{count}" for count in args.memory)
    for module, runs in results.items():
        speed, start = runs["speed"], runs["startup"]
        print(f"{module}:")
        print(f"  {speed['files']:,} files in {speed['seconds']:.1f} s: {speed['files_per_s']:.0f} files/s")
        print(f"  start-up (1 file): {start['seconds']:.2f} s")
        for run in (runs[few], runs[many]):
            peaks = f"main {run['main_mb']:.0f} MB, worker {run['workers_mb']:.0f} MB"
            print(f"  peak RSS over {run['files']:,} files: {peaks}")
        growth = {part: runs[many][part] - runs[few][part] for part in ("main_mb", "workers_mb")}
        print(f"  growth: main {growth['main_mb']:+.0f} MB, worker {growth['workers_mb']:+.0f} MB")


if __name__ == "__main__":
    main()
