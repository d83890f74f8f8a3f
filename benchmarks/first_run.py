"""A newcomer's first `dvc repro` of the default params, timed stage by stage, side by side with a baseline commit.

    .venv/bin/python -m benchmarks.first_run                     # this checkout against c9068aa
    .venv/bin/python -m benchmarks.first_run --baseline HEAD~5 --keep

Both projects are fresh copies in a temporary folder beside this checkout (the baseline taken from git with
`git archive`), each its own git repository with an empty DVC cache and its params as committed, run one after the
other on this machine, so their ratio holds on any machine. Beside the checkout, the default `transfer.sets` path
(`../shared/datasets/...`) reaches the FSDD mirror from both, so `transfer` scores all 3,000 recordings in both (and
is skipped in both where the mirror is absent), and the new project's `dvc.lock` is the lock this checkout's code
and params give. Each stage runs as `dvc repro --single-item <stage>`, in the pipeline's order, so every stage's
seconds are its own. Then it prints both runs' test and FSDD accuracy; the mean of 3 seeds comes from
`python -m benchmarks.run --rows embedding --columns synthetic --seeds 0 1 2`. Time it on a quiet machine: another
process on these cores slows one side more than the other.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from tools.project import REPO, commit, copy_project, dvc, run

BASELINE = "c9068aa"
STAGES = ("download", "preprocess", "embed", "train", "evaluate", "transfer", "export", "plot")


def baseline_project(revision: str, target: Path) -> Path:
    """The project files of ``revision``, unpacked from `git archive` into ``target``, as a fresh git repository."""
    archive = subprocess.run(["git", "archive", revision], cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    run(["git", "init", "-q", "-b", "main"], target)
    return target


def timed_repro(root: Path) -> dict[str, float]:
    """Seconds of each stage of a first `dvc repro`, run one stage at a time in the pipeline's order."""
    commit(root, "first run")
    seconds = {}
    for stage in STAGES:
        start = time.perf_counter()
        dvc(root, "repro", "--single-item", stage, timeout=7200)
        seconds[stage] = time.perf_counter() - start
        print(f"  {root.name} {stage}: {seconds[stage]:.1f} s", flush=True)
    return seconds


def scores(root: Path) -> dict[str, float | None]:
    evaluation = json.loads((root / "metrics/eval.json").read_text())
    fsdd = json.loads((root / "metrics/transfer.json").read_text()).get("fsdd", {})
    return {"test_accuracy": evaluation["accuracy"], "fsdd_accuracy": fsdd.get("accuracy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE, help="the commit to compare with (default %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the two projects (their folders are printed)")
    args = parser.parse_args()
    folders = {
        name: Path(tempfile.mkdtemp(prefix=f"first-run-{name}-", dir=REPO.parent)) for name in ("baseline", "now")
    }
    try:
        projects = {
            "baseline": baseline_project(args.baseline, folders["baseline"]),
            "now": copy_project(folders["now"]),
        }
        times = {name: timed_repro(root) for name, root in projects.items()}
        print(f"\n| stage | {args.baseline} (s) | this checkout (s) | ratio |\n|---|---|---|---|")
        for stage in (*STAGES, "total"):
            old, new = (sum(t.values()) if stage == "total" else t[stage] for t in (times["baseline"], times["now"]))
            print(f"| {stage} | {old:.1f} | {new:.1f} | {new / old:.2f} |")
        print(json.dumps({name: scores(root) for name, root in projects.items()}))
    finally:
        for folder in folders.values():
            if args.keep:
                print(f"kept {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
