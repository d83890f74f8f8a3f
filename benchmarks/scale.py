"""Wall time and peak memory of every stage on a large synthetic M5 run (issue 14), printed as a Markdown table.

    .venv/bin/python -m benchmarks.scale --clips 5000 20000 100000     # the measurement for docs/scale.md
    .venv/bin/python -m benchmarks.scale --clips 500 --epochs 1        # a smoke run of a minute or two

For each clip count a scratch copy of the project (``--workdir``, default spoken-digits-scale in the temporary
folder, one folder per count, replaced on each run and removed after it unless ``--keep``: 100,000 clips take
about 12.5 GB with DVC's cache) gets the notebook's M5 settings (8 kHz, ``tools/notebook.py``)
with ``data.synthetic_clips`` espeak-ng clips and no Piper, Kokoro or transfer sets, and ``--epochs`` training epochs.
Every stage then runs once, in the order ``dvc repro`` runs them, as ``python -m stages.<name>`` (the command in
dvc.yaml), followed by ``dvc commit``, which hashes every output as ``dvc repro`` would after each stage. Memory is
Linux's peak RSS (``tools.project.measure``): the stage's own process, and the largest of its worker processes
(``download`` and ``preprocess`` run one per core). Measure on a quiet machine: other work on the cores shows up in
every time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from spokenwords.paths import PROCESSED
from tools.project import Measured, copy_project, measure, write_params

WORKDIR = Path(tempfile.gettempdir()) / "spoken-digits-scale"
STAGES = ("download", "preprocess", "embed", "train", "evaluate", "transfer", "export", "plot")


def scaled_params(root: Path, clips: int, epochs: int) -> None:
    """params.yaml of the scratch copy: the project's, with the notebook's run on ``clips`` espeak-ng clips."""
    write_params(
        root,
        notebook=True,
        data={"synthetic_clips": clips, "piper_clips": 0, "kokoro_clips": 0},
        train={"epochs": epochs},
        transfer={"sets": {}},
        # time and memory are measured here, not int8 accuracy: export's guard must not stop the run (at 100k clips
        # a 1-epoch M5 lost 1.7 points to int8)
        export={"max_int8_drop": 100.0},
    )


def size_mb(paths: list[Path]) -> float:
    return sum(path.stat().st_size for path in paths) / 2**20


def run_stages(root: Path) -> dict[str, Measured]:
    """Each stage, then ``dvc commit``, measured; stops at the first that fails, showing the end of its output."""
    steps = [(name, f"stages.{name}", ()) for name in STAGES] + [("dvc commit", "dvc", ("commit", "--force"))]
    measured = {}
    for name, module, arguments in steps:
        print(f"{root.name}: {name} ...", file=sys.stderr, flush=True)
        measured[name] = measure(module, root, *arguments)
        if measured[name].returncode != 0:
            sys.exit(f"{name} failed ({measured[name].returncode}) in {root}:\n{measured[name].output[-3000:]}")
    return measured


def table(runs: dict[int, dict[str, Measured]], outputs: dict[int, float]) -> str:
    """One row per clip count and stage: seconds, seconds per 1,000 clips and the two peaks."""
    lines = [
        "| clips | stage | wall s | s per 1k clips | peak RSS, main process (MB) | peak RSS, largest worker (MB) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for clips, measured in runs.items():
        for name, result in measured.items():
            workers = f"{result.workers_rss_mb:,.0f}" if result.workers_rss_mb else "–"
            lines.append(
                f"| {clips:,} | {name} | {result.seconds:,.1f} | {1000 * result.seconds / clips:.2f} "
                f"| {result.main_rss_mb:,.0f} | {workers} |"
            )
    sizes = "; ".join(f"{clips:,} clips: {mb:,.0f} MB" for clips, mb in outputs.items())
    return "\n".join(lines) + f"\n\nWaveform files (data/processed/*.npy): {sizes}.\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, nargs="+", default=[5000, 20000, 100000])
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (the notebook ran 10)")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--keep", action="store_true", help="keep each scratch project after measuring it")
    args = parser.parse_args(argv)
    if any(clips < 100 for clips in args.clips):
        parser.error("--clips: at least 100 clips each, so every split holds every digit")
    runs, outputs = {}, {}
    for clips in args.clips:
        root = args.workdir / f"clips-{clips}"
        shutil.rmtree(root, ignore_errors=True)
        copy_project(root)
        scaled_params(root, clips, args.epochs)
        runs[clips] = run_stages(root)
        outputs[clips] = size_mb(sorted((root / PROCESSED).glob("*.npy")))
        if not args.keep:
            shutil.rmtree(root)
    print(table(runs, outputs))


if __name__ == "__main__":
    main()
