"""A keyword vocabulary other than the digits, trained on synthetic speech only, and the numbers that say how it does.

    .venv/bin/python -m benchmarks.vocabulary                      # Speech Commands' 12 classes, seed 0
    .venv/bin/python -m benchmarks.vocabulary --seeds 0 1 2 --words yes no stop go

Each seed is one `dvc repro` of the default pipeline (the embedding head, its synthetic set of espeak-ng, Piper and
Kokoro clips) in a scratch copy of the project, with ``data.words`` set and both open-set classes on. It prints the
synthetic test accuracy over all classes and over the words alone, the share of ``_unknown_`` test clips taken for a
word (false accepts), and, where the shared FSDD mirror is present, the same share on its 3,000 real recordings of
the digits: words outside this vocabulary, said by people the model never heard. Results go to
``benchmarks/vocabulary.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from spokenwords.fileio import write_json
from tools.project import FSDD_ARCHIVE, commit, copy_project, dvc, write_params

RESULTS = Path(__file__).with_name("vocabulary.json")
# Speech Commands' standard 12-class task: these ten words, _unknown_ and _silence_
TWELVE_CLASS_WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def run_seed(root: Path, words: list[str], seed: int) -> dict:
    """One `dvc repro` of the vocabulary in a fresh copy; its test and transfer metrics and its duration."""
    copy_project(root)
    transfer = {"fsdd": str(FSDD_ARCHIVE) if FSDD_ARCHIVE.exists() else None}
    write_params(
        root,
        data={"words": words, "unknown": True, "silence": True, "seed": seed},
        train={"seed": seed, "device": "cpu"},
        embed={"seed": seed},
        evaluate={"device": "cpu"},
        transfer={"sets": transfer, "device": "cpu"},
    )
    commit(root, f"vocabulary of {len(words)} words, seed {seed}")
    start = time.perf_counter()
    dvc(root, "repro", "evaluate", "transfer", timeout=7200)
    evaluation = json.loads((root / "metrics/eval.json").read_text())
    fsdd = json.loads((root / "metrics/transfer.json").read_text()).get("fsdd", {})
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "accuracy": evaluation["accuracy"],
        "words_accuracy": evaluation["words_accuracy"],
        "unknown_false_accept": evaluation["unknown_false_accept"],
        "silence_recall": evaluation["per_class"]["_silence_"]["recall"],
        "clips": evaluation["clips"],
        "fsdd_unknown_false_accept": fsdd.get("unknown_false_accept"),
    }


def summary(runs: list[dict], key: str) -> str:
    values = [run[key] for run in runs if run[key] is not None]
    if not values:
        return "not measured"
    spread = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{100 * statistics.mean(values):.1f}{spread} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", nargs="+", default=TWELVE_CLASS_WORDS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="vocabulary-") as folder:
            runs.append({"seed": seed, **run_seed(Path(folder), args.words, seed)})
        print(json.dumps(runs[-1]))
    write_json(RESULTS, {"words": args.words, "unknown": True, "silence": True, "runs": runs})
    print(f"{len(args.words)} words + _unknown_ + _silence_, synthetic speech only, seeds {args.seeds}:")
    for key, what in (
        ("accuracy", "synthetic test, all classes"),
        ("words_accuracy", "synthetic test, the words alone"),
        ("unknown_false_accept", "synthetic test: _unknown_ clips taken for a word"),
        ("silence_recall", "synthetic test: _silence_ recall"),
        ("fsdd_unknown_false_accept", "FSDD's 3,000 real digit recordings taken for a word"),
    ):
        print(f"  {what}: {summary(runs, key)}")


if __name__ == "__main__":
    main()
