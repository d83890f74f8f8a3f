"""Run the README's results grid with `dvc exp run` in a scratch copy of the project, and print its tables.

    .venv/bin/python -m benchmarks.run --rows dscnn bcresnet --columns official loso --seeds 0 1 2
    .venv/bin/python -m benchmarks.run --table-only          # print the tables, and rewrite docs/results.md's

    .venv/bin/python -m benchmarks.run --rows m5 --columns synthetic --seeds 0 1 2 3 --jobs 2   # two at a time
    .venv/bin/python -m benchmarks.run --rows embedding --columns synthetic --long   # and the long-recording test

Each run is one `dvc exp run -n NAME -S ...` in the copy (default: spoken-digits-bench in the temporary folder), so
`dvc exp show` there lists every run since the copy was made (a code change starts a new copy); results accumulate
in benchmarks/results.json. FSDD columns read the shared mirror and are skipped, with a message, when it is absent.
An experiment of the same name in the copy is removed before its run, so a grid can be run again.

With ``--jobs N`` (N > 1) the runs go through DVC's queue (`dvc exp run --queue`, then `dvc queue start --jobs N`),
each job with ``os.cpu_count() // N`` OpenMP threads; their epoch seconds are not recorded (they shared the cores,
and DVC's temporary workspaces keep no logs/), and each such result says ``"jobs": N``.

With ``--long`` (one run at a time only) each run's model is also scored by ``benchmarks.long_recordings`` on the FSDD
clips it never trained on (all 3,000 for the synthetic column, the official test split, or the held-out speaker), as
given and hidden in long noisy files; the result records both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from dvc.repo import Repo

from benchmarks.long_recordings import compare as compare_long
from benchmarks.macs import count_macs
from spokenwords import params
from spokenwords.fileio import write_text
from spokenwords.models.architectures import build_model, count_parameters, model_config
from tools.notebook import overrides as notebook_overrides
from tools.project import FSDD_ARCHIVE, REPO, commit, copy_project, dvc, environment, run, write_params

RESULTS = Path(__file__).with_name("results.json")
# A run reproduces the stages it scores (and those before them), not export or plot: the int8 guard of export is
# for a model meant to be deployed, and would fail a grid cell whose float model scored fine.
SCORED_STAGES = ("evaluate", "transfer")
# docs/results.md's tables, rewritten from results.json by every run of this module (--table-only too)
RESULTS_DOC = REPO / "docs" / "results.md"
TABLES_START = "<!-- tables: generated from benchmarks/results.json by `python -m benchmarks.run --table-only` -->"
TABLES_END = "<!-- end of generated tables -->"
WORKDIR = Path(tempfile.gettempdir()) / "spoken-digits-bench"
RUN_TIMEOUT = 3600  # seconds one run may take
# How often the queue is asked for its tasks' states: DVC's API answers in about 0.1 CPU-second, so polling steals
# almost nothing from the jobs; a queued run's seconds are as exact as this.
POLL_SECONDS = 5
LOG_LINES = 20  # lines of a failed queued run's log that are shown
BUSY = ("Queued", "Running")  # the queue's states of a task that has not ended
SHOW_ATTEMPTS, SHOW_PAUSE = 12, 5  # tries of `dvc exp show`, seconds apart, while the queue cleans up after a run
VANISHED = ("does not exist", "No such file or directory")  # what `dvc exp show` says of a run cleaned up under it

# Each row: the `-S` overrides on top of params.yaml (the embedding model). The waveform rows start from the
# notebook's run (M5 at 8 kHz, its loop; tools/notebook.py) and change what they name.
NOTEBOOK = [item for item in notebook_overrides() if item != "-S"]
RECIPE = [
    "train.schedule=onecycle",
    "train.warmup_epochs=2",
    "train.label_smoothing=0.1",
    "train.augment=true",
    "train.batch_size=64",
    "train.lr=0.005",
    "train.epochs=20",
]
# plus 5,000 espeak-ng and 3,000 Piper clips in a recorded source's training split (the synthetic column's source
# ignores them)
EMBEDDING_SYNTH = ["data.synthetic_train_clips=5000", "data.piper_train_clips=3000"]
ROWS: dict[str, list[str]] = {
    # the default: the head on the frozen speech embedding, params.yaml as it is
    "embedding": [],
    # the default without its 500 Kokoro clips (espeak-ng and Piper voices only): what Kokoro's voices add
    "embedding-no-kokoro": ["data.kokoro_clips=0"],
    # the default with twice its Kokoro clips: whether more of the natural voices still pay for their synthesis time
    "embedding-kokoro-1000": ["data.kokoro_clips=1000"],
    # the default with a band limit (cutoff 3.5 to 7 kHz) on 30 % of its augmented copies: narrowband channels
    "embedding-band-limit": ["embed.band_limit_prob=0.3"],
    # a quicker first run (issue 34): half of Piper's clips (its one voice, warped) and half the epochs, every voice of
    # the default kept; and the same with two augmented copies of each clip instead of three
    "embedding-lean": ["data.piper_clips=1500", "train.epochs=20", "train.warmup_epochs=2"],
    "embedding-lean-copies-2": ["data.piper_clips=1500", "train.epochs=20", "train.warmup_epochs=2", "embed.copies=2"],
    # the default data trained for half the epochs (the one-cycle schedule scaled with them)
    "embedding-epochs-20": ["train.epochs=20", "train.warmup_epochs=2"],
    "embedding-synth": EMBEDDING_SYNTH,
    # embedding-synth scored as the average over 5 copies of each test clip, moved by 0, ± 25 and ± 50 ms
    "embedding-synth-tta": [*EMBEDDING_SYNTH, "evaluate.test_time_shifts=2"],
    "m5": NOTEBOOK,
    "dscnn": [*NOTEBOOK, "model.name=dscnn", *RECIPE],
    "dscnn-no-eq": [*NOTEBOOK, "model.name=dscnn", *RECIPE, "augment.eq_db=0"],  # the ablation of the equaliser
    # plus 2,500 espeak-ng clips in a recorded source's training split (the synthetic column ignores them)
    "dscnn-synth": [*NOTEBOOK, "model.name=dscnn", *RECIPE, "data.synthetic_train_clips=2500"],
    # the same trained for 30 epochs instead of 20: a try at keeping the official split while gaining new voices
    "dscnn-synth-30": [
        *NOTEBOOK,
        "model.name=dscnn",
        *(item for item in RECIPE if not item.startswith("train.epochs=")),
        "train.epochs=30",
        "data.synthetic_train_clips=2500",
    ],
    # dscnn-synth scored as the average over 5 copies of each test clip, moved by 0, ± 25 and ± 50 ms
    "dscnn-synth-tta": [
        *NOTEBOOK,
        "model.name=dscnn",
        *RECIPE,
        "data.synthetic_train_clips=2500",
        "evaluate.test_time_shifts=2",
    ],
    # the embedding head and DS-CNN, their probabilities averaged (model.ensemble: each member with its own recipe),
    # on dscnn-synth's data: 2,500 espeak-ng clips added to a recorded source's training split
    "ensemble-synth": ["model.name=ensemble", "data.synthetic_train_clips=2500"],
    # measured before the equaliser existed
    "bcresnet": [*NOTEBOOK, "model.name=bcresnet", *RECIPE, "augment.eq_db=0"],
}
FSDD = ["data.source=fsdd", f"data.url={FSDD_ARCHIVE}"]
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")  # FSDD's, in the sorted order of data.fold
FOLDS = len(SPEAKERS)
# A model trained without FSDD is also scored on all of FSDD (the transfer stage); one trained on it is not.
COLUMNS: dict[str, list[list[str]]] = {
    "synthetic": [["data.source=synthetic", "data.url=", f"transfer.sets.fsdd={FSDD_ARCHIVE}", "data.split=official"]],
    "official": [[*FSDD, "transfer.sets.fsdd=null", "data.split=official"]],
    "loso": [[*FSDD, "data.split=loso", "transfer.sets.fsdd=null", f"data.fold={fold}"] for fold in range(FOLDS)],
}


def code_of(root: Path) -> dict[str, bytes]:
    """The files that decide what a run computes, apart from params: the stages, the library and the pipeline."""
    files = [*sorted((root / "stages").glob("*.py")), *sorted((root / "spokenwords").rglob("*.py")), root / "dvc.yaml"]
    return {str(path.relative_to(root)): path.read_bytes() for path in files if path.is_file()}


def workspace(root: Path) -> Path:
    """The scratch project: created and committed once, then reused so DVC's cache keeps the datasets.

    A copy whose code differs from this checkout's is replaced, so no result is measured with stale code.
    """
    if (root / ".git").is_dir() and code_of(root) != code_of(REPO):
        print(f"the code changed since {root} was made: starting a fresh copy", file=sys.stderr)
        shutil.rmtree(root)
    if not (root / ".git").is_dir():
        copy_project(root)
        cpu = {"device": "cpu"}
        write_params(root, train=cpu, evaluate=cpu, transfer=cpu)
        commit(root, "benchmark baseline")
    return root


def load_results(path: Path = RESULTS) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


@dataclass(frozen=True)
class Run:
    """One planned `dvc exp run`: where its result goes in results.json (row, column, key) and what it runs."""

    row: str
    column: str
    key: str
    name: str
    overrides: tuple[str, ...]


class GridError(Exception):
    """A grid that could not run, or runs that failed: the message says which, in one line."""


def planned_runs(rows: list[str], columns: list[str], seeds: list[int], folds: list[int]) -> list[Run]:
    """Every run of the grid, in the order the sequential path runs them."""
    runs = []
    for row in rows:
        for column in columns:
            splits = COLUMNS[column]
            if column == "loso":
                splits = [splits[fold] for fold in folds]
            for split in splits:
                fold = next((item.split("=")[1] for item in split if item.startswith("data.fold=")), "")
                for seed in seeds:
                    runs.append(
                        Run(
                            row=row,
                            column=column,
                            key=f"{'_'.join(split[-1:])}-s{seed}",
                            name=f"{row}-{column}{fold}-s{seed}",
                            overrides=(*ROWS[row], *split, f"train.seed={seed}"),
                        )
                    )
    return runs


def outcome_of(
    item: Run, scores: dict, transfer: dict, epoch_seconds: float | None, run_seconds: int | None, jobs: int
) -> dict:
    """A run's record in results.json. ``jobs`` > 1: the run shared the cores, so its seconds compare with nothing
    but runs of the same ``jobs`` on the same machine.
    """
    outcome = {
        "accuracy": scores["accuracy"],
        "one_pass_accuracy": scores["one_pass_accuracy"],
        "epoch_seconds": epoch_seconds,
        "run_seconds": run_seconds,
        "jobs": jobs,
        # no machine's path in the record: the mirror is named as the README names it
        "command": [
            value.replace(str(FSDD_ARCHIVE), "../shared/datasets/" + FSDD_ARCHIVE.name) for value in item.overrides
        ],
    }
    if "accuracy" in transfer.get("fsdd", {}):
        outcome["fsdd_all_accuracy"] = transfer["fsdd"]["accuracy"]
    return outcome


def long_clips(item: Run) -> str:
    """The FSDD clips a run's model never trained on, as ``benchmarks.long_recordings --clips`` names them."""
    if item.column == "synthetic":
        return "all"
    if item.column == "official":
        return "test"
    fold = next(int(value.split("=")[1]) for value in item.overrides if value.startswith("data.fold="))
    return SPEAKERS[fold]


def long_recordings(root: Path, item: Run) -> dict:
    """The run's model on its unseen FSDD clips, as given and hidden in long noisy files (placement seed 0)."""
    result = compare_long(root / "models/model.pt", FSDD_ARCHIVE, long_clips(item))
    return {key: result[key] for key in ("clips", "given", "long")}


def set_flags(overrides: tuple[str, ...]) -> list[str]:
    return [arg for item in overrides for arg in ("-S", item)]


def run_one(root: Path, item: Run) -> dict:
    """One `dvc exp run` in the workspace; returns its record, with the median seconds per training epoch."""
    start = time.perf_counter()
    restore_baseline(root)
    dvc(root, "exp", "run", "-n", item.name, *set_flags(item.overrides), *SCORED_STAGES, timeout=RUN_TIMEOUT)
    seconds = json.loads((root / "logs/train_timing.json").read_text())["epoch_seconds"]
    scores = json.loads((root / "metrics/eval.json").read_text())
    transfer = json.loads((root / "metrics/transfer.json").read_text())
    elapsed = round(time.perf_counter() - start)
    print(f"{item.name}: test accuracy {scores['accuracy']:.4f}, {elapsed}s", file=sys.stderr, flush=True)
    return outcome_of(item, scores, transfer, statistics.median(seconds), elapsed, jobs=1)


def restore_baseline(root: Path) -> None:
    """Start from the baseline's params: `exp run` leaves the last run's applied, and `--queue` would stash them."""
    run(["git", "checkout", "--", "."], root)


def queue_states(root: Path) -> dict[str, str]:
    """Each named queue task's state (Queued, Running, Success, Failed), read through DVC's API rather than by
    starting `dvc queue status` (about 2 CPU-seconds a call).
    """
    with Repo(str(root)) as repo:
        return {task["name"]: task["status"] for task in repo.experiments.celery_queue.status() if task.get("name")}


def forget(root: Path, runs: list[Run]) -> None:
    """Remove earlier experiments and finished queue tasks named like these runs: DVC refuses to make an experiment
    whose name exists, and a second task of one name would make the queue's answers ambiguous.
    """
    names = {item.name for item in runs}
    tasks = queue_states(root)
    busy = sorted(name for name, state in tasks.items() if name in names and state in BUSY)
    if busy:
        raise GridError(
            f"{', '.join(busy)} still queued or running in {root}: wait, or `dvc queue kill`/`dvc queue remove` them"
        )
    existing = set(dvc(root, "exp", "list", "--name-only").stdout.split()) | set(tasks)
    if names & existing:
        dvc(root, "exp", "remove", *sorted(names & existing))


def thread_share(jobs: int) -> dict[str, str]:
    """OpenMP threads per job, so the jobs together use every core once: with more threads than cores, training here
    ran 5 to 15 times slower. torch reads OMP_NUM_THREADS at start-up; a value set by the user is kept.
    """
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    return {name: os.environ.get(name, threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def start_queue(root: Path, jobs: int) -> None:
    """`dvc queue start`: its workers run in the background and inherit this environment, threads included. Their
    output goes to a file, not a pipe: they keep the pipe open, and reading it would wait for the whole queue.
    """
    command = [sys.executable, "-m", "dvc", "queue", "start", "--jobs", str(jobs)]
    with tempfile.TemporaryFile() as log:
        started = subprocess.run(
            command,
            cwd=root,
            env={**environment(), **thread_share(jobs)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
        if started.returncode != 0:
            log.seek(0)
            raise GridError(f"`dvc queue start` failed in {root}: {log.read().decode().strip()}")


def wait_for(root: Path, runs: list[Run]) -> Iterator[tuple[Run, str, int | None]]:
    """Each run as it ends, with its final state and its seconds from the first poll that saw it running (None when
    it ended between two polls).
    """
    waiting = {item.name: item for item in runs}
    started: dict[str, float] = {}
    deadline = time.monotonic() + RUN_TIMEOUT * len(runs)
    while waiting:
        if time.monotonic() > deadline:
            raise GridError(f"the queue did not finish in time: {', '.join(waiting)} still unfinished in {root}")
        now = time.monotonic()
        for name, state in queue_states(root).items():
            if name not in waiting:
                continue
            if state == "Running":
                started.setdefault(name, now)
            elif state not in BUSY:
                seconds = round(now - started[name]) if name in started else None
                yield waiting.pop(name), state, seconds
        if waiting:
            time.sleep(POLL_SECONDS)


def experiment_metrics(root: Path) -> dict[str, dict[str, dict]]:
    """Every experiment's metrics files by experiment name, from `dvc exp show --json`.

    While a queue worker removes a finished run's temporary workspace or its run file, `dvc exp show` can fail on it
    ("directory .dvc/tmp/exps/tmp.../.dvc does not exist", or "[Errno 2] No such file or directory:
    .../.dvc/tmp/exps/run/<id>/<id>.run", each seen in CI); it is asked again after a pause.
    """
    for attempt in range(SHOW_ATTEMPTS):
        result = dvc(root, "exp", "show", "--json", check=False)
        vanished = any(text in result.stderr for text in VANISHED)
        if result.returncode == 0 or not vanished or attempt == SHOW_ATTEMPTS - 1:
            break
        time.sleep(SHOW_PAUSE)
    if result.returncode != 0:
        raise GridError(f"`dvc exp show` failed in {root}: {result.stderr.strip()}")
    shown = json.loads(result.stdout)
    metrics = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment["revs"]:
                files = (revision.get("data") or {}).get("metrics") or {}
                metrics[revision["name"]] = {path: item.get("data", {}) for path, item in files.items()}
    return metrics


def log_tail(root: Path, name: str) -> str:
    lines = dvc(root, "queue", "logs", name, check=False).stdout.strip().splitlines()
    return "\n".join(lines[-LOG_LINES:])


def run_queued(root: Path, runs: list[Run], jobs: int, record: Callable[[Run, dict], None]) -> None:
    """Queue every run, start ``jobs`` workers, and record each result as its run ends. A failed run is reported
    with the end of its log once the others have ended.
    """
    for item in runs:
        restore_baseline(root)
        dvc(root, "exp", "run", "--queue", "-n", item.name, *set_flags(item.overrides), *SCORED_STAGES)
    start_queue(root, jobs)
    failed = []
    for item, state, seconds in wait_for(root, runs):
        if state != "Success":
            failed.append(item.name)
            print(f"{item.name}: {state.lower()}; the end of `dvc queue logs {item.name}`:", file=sys.stderr)
            print(log_tail(root, item.name), file=sys.stderr, flush=True)
            continue
        files = experiment_metrics(root)[item.name]
        scores = files["metrics/eval.json"]
        print(f"{item.name}: test accuracy {scores['accuracy']:.4f}, about {seconds}s", file=sys.stderr, flush=True)
        record(item, outcome_of(item, scores, files["metrics/transfer.json"], None, seconds, jobs))
    if failed:
        raise GridError(f"{len(failed)} of {len(runs)} queued runs failed: {', '.join(failed)} (logs above)")


def run_grid(root: Path, runs: list[Run], jobs: int, record: Callable[[Run, dict], None], long: bool = False) -> None:
    """Run ``runs`` in the workspace ``root``, one at a time (``jobs`` 1) or through DVC's queue, and pass each
    result to ``record`` as it comes; ``long``: with each model's long-recording test.
    """
    if long and jobs > 1:
        raise GridError("--long scores each model in the workspace, so it runs with --jobs 1 only")
    forget(root, runs)
    if jobs == 1:
        for item in runs:
            outcome = run_one(root, item)
            if long and FSDD_ARCHIVE.is_file():
                outcome["long_recordings"] = long_recordings(root, item)
            record(item, outcome)
    else:
        run_queued(root, runs, jobs, record)


def model_facts(row: str) -> dict:
    """Parameters and multiply-accumulates per 1 s clip at the row's sample rate (the embedding row: its head only;
    the frozen embedding's own cost is not counted).
    """
    section = params.ModelParams()
    rate = params.PreprocessParams().sample_rate
    for item in ROWS[row]:
        if item.startswith("model.name="):
            section = dataclasses.replace(section, name=item.split("=")[1])
        if item.startswith("preprocess.sample_rate="):
            rate = int(item.split("=")[1])
    model = build_model(model_config(section, rate), 10).eval()
    return {"parameters": count_parameters(model), "macs": count_macs(model, torch.zeros(1, 1, rate))}


def mean_sd(values: list[float]) -> str:
    if not values:
        return "not measured"
    sd = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{100 * statistics.mean(values):.1f}{sd} (n={len(values)})"


def fold_and_seed(key: str) -> tuple[str, str]:
    """Split a LOSO result key as ``main`` writes it ("data.fold=3-s1") into its fold and seed ("3", "1")."""
    setting, seed = key.rsplit("-s", 1)
    return setting.removeprefix("data.fold="), seed


def long_cell(runs: dict) -> str:
    """Mean accuracy of the runs' unseen FSDD clips as given and hidden in long files, per column that has them:
    all 3,000 clips for the synthetic column, the test split for the official one.
    """
    cells = []
    for column in ("synthetic", "official"):
        tests = [item["long_recordings"] for item in runs.get(column, {}).values() if "long_recordings" in item]
        if tests:
            given = statistics.mean(test["given"] for test in tests)
            hidden = statistics.mean(test["long"] for test in tests)
            cells.append(f"{column}: {100 * given:.1f} → {100 * hidden:.1f} (n={len(tests)})")
    return "; ".join(cells) or "not measured"


def loso_means(runs: dict) -> list[float]:
    """One LOSO score per seed: the mean over the six held-out speakers, for the seeds that ran every fold."""
    by_seed: dict[str, list[float]] = {}
    for key, item in runs.items():
        by_seed.setdefault(fold_and_seed(key)[1], []).append(item["accuracy"])
    return [statistics.mean(values) for values in by_seed.values() if len(values) == FOLDS]


def table(results: dict) -> str:
    lines = [
        "| model | parameters | MACs / clip | s / epoch (FSDD official) | synthetic | all of FSDD (trained without it) "
        "| FSDD official | FSDD LOSO | unseen FSDD clips: as given → in long files |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        facts = model_facts(row)
        runs = results.get(row, {})
        synthetic = runs.get("synthetic", {}).values()
        cells = [
            mean_sd([item["accuracy"] for item in synthetic]),
            mean_sd([item["fsdd_all_accuracy"] for item in synthetic if "fsdd_all_accuracy" in item]),
            mean_sd([item["accuracy"] for item in runs.get("official", {}).values()]),
            mean_sd(loso_means(runs.get("loso", {}))),
            long_cell(runs),
        ]
        # only runs that had the machine to themselves: a queued run's epochs shared the cores
        official = [
            item["epoch_seconds"]
            for item in runs.get("official", {}).values()
            if item.get("jobs", 1) == 1 and item.get("epoch_seconds") is not None
        ]
        seconds = f"{statistics.median(official):.1f}" if official else "not measured"
        lines.append(
            f"| {row} | {facts['parameters']:,} | {facts['macs'] / 1e6:.2f} M | {seconds} | {' | '.join(cells)} |"
        )
    return "\n".join(lines)


def fold_table(results: dict) -> str:
    """LOSO test accuracy per held-out speaker, averaged over the seeds run (their count in brackets)."""
    lines = [
        "| LOSO fold (test speaker) | " + " | ".join(f"{fold} ({name})" for fold, name in enumerate(SPEAKERS)) + " |",
        "|---|" + "---|" * FOLDS,
    ]
    for row in ROWS:
        runs = results.get(row, {}).get("loso", {})
        cells = []
        for fold in range(FOLDS):
            accuracies = [item["accuracy"] for key, item in runs.items() if fold_and_seed(key)[0] == str(fold)]
            cells.append(f"{100 * statistics.mean(accuracies):.1f} (n={len(accuracies)})" if accuracies else "—")
        if runs:
            lines.append(f"| {row} | {' | '.join(cells)} |")
    return "\n".join(lines)


def jobs_count(text: str) -> int:
    """argparse's check of ``--jobs``: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def tables(results: dict) -> str:
    return f"{table(results)}\n\n{fold_table(results)}"


def generated_block(text: str) -> tuple[int, int]:
    """Where the generated tables sit in ``docs/results.md``: between its two marker lines."""
    start, end = text.find(TABLES_START), text.find(TABLES_END)
    if start < 0 or end < start:
        raise GridError(f"{RESULTS_DOC} has lost its marker lines {TABLES_START!r} and {TABLES_END!r}")
    return start + len(TABLES_START), end


def write_results_doc(results: dict) -> None:
    """Rewrite the tables of ``docs/results.md`` from ``results``, so the page cannot drift from results.json."""
    text = RESULTS_DOC.read_text(encoding="utf-8")
    start, end = generated_block(text)
    write_text(RESULTS_DOC, f"{text[:start]}\n{tables(results)}\n{text[end:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--columns", nargs="+", choices=COLUMNS, default=list(COLUMNS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--folds", nargs="+", type=int, default=list(range(FOLDS)), help="LOSO folds to run")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--jobs", type=jobs_count, default=1, help="runs at a time, through DVC's queue when > 1")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file to add to")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--long", action="store_true", help="also run each model's long-recording test")
    args = parser.parse_args(argv)
    results = load_results(args.results)
    if not args.table_only:
        columns = args.columns
        if not FSDD_ARCHIVE.is_file() and {"official", "loso"} & set(columns):
            print(f"skipping the FSDD columns: {FSDD_ARCHIVE} is absent", file=sys.stderr)
            columns = [column for column in columns if column == "synthetic"]

        def record(item: Run, outcome: dict) -> None:
            results.setdefault(item.row, {}).setdefault(item.column, {})[item.key] = outcome
            args.results.write_text(json.dumps(results, indent=2) + "\n")

        runs = planned_runs(args.rows, columns, args.seeds, args.folds)
        try:
            run_grid(workspace(args.workdir), runs, args.jobs, record, args.long)
        except GridError as error:
            sys.exit(f"error: {error}")
    print(tables(results))
    if args.results == RESULTS:
        write_results_doc(results)


if __name__ == "__main__":
    main()
