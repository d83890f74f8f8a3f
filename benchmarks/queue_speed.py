"""Time a results grid run one at a time and through DVC's queue with ``--jobs N``, and print the ratio of the two.

    .venv/bin/python -m benchmarks.queue_speed --rows m5 --columns synthetic --seeds 0 1 2 3 --jobs 2

Issue 14's target: with 2 jobs on 2 cores the grid takes at most 0.65 times as long. Run it on an otherwise idle
machine: other work on the cores makes both times meaningless. Both arms run in benchmarks/run.py's scratch copy.
A warm-up run per row and column first fills DVC's cache with the stages before training, so neither arm pays for
the data; the queued arm's seeds are offset so that DVC's run cache cannot hand it the sequential arm's results.
Nothing is written to benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from benchmarks.run import COLUMNS, FOLDS, ROWS, WORKDIR, GridError, Run, jobs_count, planned_runs, run_grid, workspace
from tools.project import FSDD_ARCHIVE

WARMUP_SEED = 999
QUEUED_SEED_OFFSET = 1000  # seeds of the queued arm: the same cost per run, but new runs to DVC's run cache
TARGET = 0.65


def renamed(runs: list[Run], suffix: str) -> list[Run]:
    """The runs under names of their own, so the arms' experiments sit side by side in `dvc exp show`."""
    return [dataclasses.replace(item, name=f"{item.name}-{suffix}") for item in runs]


def discard(item: Run, outcome: dict) -> None:
    """Only the wall time is measured here: the results are not kept."""


def seconds_of(root: Path, runs: list[Run], jobs: int) -> float:
    start = time.perf_counter()
    run_grid(root, runs, jobs, discard)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=["m5"])
    parser.add_argument("--columns", nargs="+", choices=COLUMNS, default=["synthetic"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--folds", nargs="+", type=int, default=list(range(FOLDS)), help="LOSO folds to run")
    parser.add_argument("--jobs", type=jobs_count, default=2, help="runs at a time in the queued arm")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    args = parser.parse_args(argv)
    if args.jobs == 1:
        sys.exit("error: --jobs must be at least 2: the queued arm is compared with the one-at-a-time arm")
    if not FSDD_ARCHIVE.is_file() and {"official", "loso"} & set(args.columns):
        sys.exit(f"error: the FSDD columns need {FSDD_ARCHIVE}, which is absent")
    plan = planned_runs(args.rows, args.columns, args.seeds, args.folds)
    queued_seeds = [seed + QUEUED_SEED_OFFSET for seed in args.seeds]
    try:
        root = workspace(args.workdir)
        run_grid(root, renamed(planned_runs(args.rows, args.columns, [WARMUP_SEED], args.folds), "warmup"), 1, discard)
        sequential = seconds_of(root, renamed(plan, "j1"), 1)
        queued_plan = planned_runs(args.rows, args.columns, queued_seeds, args.folds)
        queued = seconds_of(root, renamed(queued_plan, f"j{args.jobs}"), args.jobs)
    except GridError as error:
        sys.exit(f"error: {error}")
    ratio = queued / sequential
    verdict = "meets" if ratio <= TARGET else "misses"
    print(
        f"{len(plan)} runs: --jobs 1 took {sequential:.0f} s, --jobs {args.jobs} took {queued:.0f} s; "
        f"ratio {ratio:.2f} ({verdict} the target of {TARGET})"
    )


if __name__ == "__main__":
    main()
