"""Run the README's results grid with `dvc exp run` in a scratch copy of the project, and print its tables.

    .venv/bin/python -m benchmarks.run --rows dscnn bcresnet --columns official loso --seeds 0 1 2
    .venv/bin/python -m benchmarks.run --table-only          # print the tables from what was measured

Each run is one `dvc exp run -n NAME -S ...` in the copy (default: spoken-digits-bench in the temporary folder), so
`dvc exp show` there lists every run since the copy was made (a code change starts a new copy); results accumulate
in benchmarks/results.json. FSDD columns read the shared mirror and are skipped, with a message, when it is absent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.macs import count_macs
from stages import params
from stages.models import build_model, count_parameters, model_config
from tools.notebook import overrides as notebook_overrides
from tools.project import FSDD_ARCHIVE, REPO, commit, copy_project, dvc, run

RESULTS = Path(__file__).with_name("results.json")
WORKDIR = Path(tempfile.gettempdir()) / "spoken-digits-bench"

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
ROWS: dict[str, list[str]] = {
    # the default: the head on the frozen speech embedding, params.yaml as it is
    "embedding": [],
    # the default without its 500 Kokoro clips (espeak-ng and Piper voices only): what Kokoro's voices add
    "embedding-no-kokoro": ["data.kokoro_clips=0"],
    # plus 5,000 espeak-ng and 3,000 Piper clips in a recorded source's training split (the synthetic column's
    # source ignores them)
    "embedding-synth": ["data.synthetic_train_clips=5000", "data.piper_train_clips=3000"],
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
    # measured before the equaliser existed
    "bcresnet": [*NOTEBOOK, "model.name=bcresnet", *RECIPE, "augment.eq_db=0"],
}
FSDD = ["data.source=fsdd", f"data.url={FSDD_ARCHIVE}"]
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")  # FSDD's, in the sorted order of data.fold
FOLDS = len(SPEAKERS)
# A model trained without FSDD is also scored on all of FSDD (the transfer stage); one trained on it is not.
COLUMNS: dict[str, list[list[str]]] = {
    "synthetic": [["data.source=synthetic", "data.url=", f"transfer.sets.fsdd={FSDD_ARCHIVE}", "data.split=official"]],
    "official": [[*FSDD, "transfer.sets={}", "data.split=official"]],
    "loso": [[*FSDD, "data.split=loso", "transfer.sets={}", f"data.fold={fold}"] for fold in range(FOLDS)],
}


def code_of(root: Path) -> dict[str, bytes]:
    """The files that decide what a run computes, apart from params: the stages and the pipeline."""
    files = [*sorted((root / "stages").glob("*.py")), root / "dvc.yaml"]
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
        params_file = root / "params.yaml"
        params_file.write_text(params_file.read_text().replace("device: auto", "device: cpu"))
        commit(root, "benchmark baseline")
    return root


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def run_one(root: Path, row: str, column: str, split: list[str], seed: int) -> dict:
    """One `dvc exp run`; returns its test accuracy and the median seconds per training epoch."""
    fold = next((item.split("=")[1] for item in split if item.startswith("data.fold=")), "")
    name = f"{row}-{column}{fold}-s{seed}"
    overrides = [*ROWS[row], *split, f"train.seed={seed}"]
    start = time.perf_counter()
    run(["git", "checkout", "--", "."], root)  # start from the baseline: `exp run` applied the last run's params
    dvc(root, "exp", "run", "-n", name, *(arg for item in overrides for arg in ("-S", item)), timeout=3600)
    seconds = json.loads((root / "logs/train_timing.json").read_text())["epoch_seconds"]
    scores = json.loads((root / "metrics/eval.json").read_text())
    transfer = json.loads((root / "metrics/transfer.json").read_text())
    accuracy = scores["accuracy"]
    print(f"{name}: test accuracy {accuracy:.4f}, {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
    outcome = {
        "accuracy": accuracy,
        "one_pass_accuracy": scores["one_pass_accuracy"],
        "epoch_seconds": statistics.median(seconds),
        "run_seconds": round(time.perf_counter() - start),
        # no machine's path in the record: the mirror is named as the README names it
        "command": [item.replace(str(FSDD_ARCHIVE), "../shared/datasets/" + FSDD_ARCHIVE.name) for item in overrides],
    }
    if "accuracy" in transfer.get("fsdd", {}):
        outcome["fsdd_all_accuracy"] = transfer["fsdd"]["accuracy"]
    return outcome


def model_facts(row: str) -> dict:
    """Parameters and multiply-accumulates per 1 s clip at the row's sample rate (the embedding row: its head only;
    the frozen embedding's own cost is not counted).
    """
    section = params.validate({}, "model")
    rate = params.validate({}, "preprocess")["sample_rate"]
    for item in ROWS[row]:
        if item.startswith("model.name="):
            section["name"] = item.split("=")[1]
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


def loso_means(runs: dict) -> list[float]:
    """One LOSO score per seed: the mean over the six held-out speakers, for the seeds that ran every fold."""
    by_seed: dict[str, list[float]] = {}
    for key, item in runs.items():
        by_seed.setdefault(fold_and_seed(key)[1], []).append(item["accuracy"])
    return [statistics.mean(values) for values in by_seed.values() if len(values) == FOLDS]


def table(results: dict) -> str:
    lines = [
        "| model | parameters | MACs / clip | s / epoch (FSDD official) | synthetic | all of FSDD (trained without it) "
        "| FSDD official | FSDD LOSO |",
        "|---|---|---|---|---|---|---|---|",
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
        ]
        official = [item["epoch_seconds"] for item in runs.get("official", {}).values()]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--columns", nargs="+", choices=COLUMNS, default=list(COLUMNS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--folds", nargs="+", type=int, default=list(range(FOLDS)), help="LOSO folds to run")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    results = load_results()
    if not args.table_only:
        columns = args.columns
        if not FSDD_ARCHIVE.is_file() and {"official", "loso"} & set(columns):
            print(f"skipping the FSDD columns: {FSDD_ARCHIVE} is absent", file=sys.stderr)
            columns = [column for column in columns if column == "synthetic"]
        root = workspace(args.workdir)
        for row in args.rows:
            for column in columns:
                splits = COLUMNS[column]
                if column == "loso":
                    splits = [splits[fold] for fold in args.folds]
                for split in splits:
                    for seed in args.seeds:
                        key = f"{'_'.join(split[-1:])}-s{seed}"
                        outcome = run_one(root, row, column, split, seed)
                        results.setdefault(row, {}).setdefault(column, {})[key] = outcome
                        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print()
    print(fold_table(results))


if __name__ == "__main__":
    main()
