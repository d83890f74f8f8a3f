"""Stage `transfer`: score the trained model on whole other corpora, to measure how it does on voices it never met.

Each entry of ``transfer.sets`` names a recorded source and where to find it (an archive, a URL or a folder). All of
its clips are prepared as ``predict`` prepares a file (the word located and centred) and scored as ``evaluate``
scores the test split, test-time shifts included. ``metrics/transfer.json`` gets one entry per set: accuracy,
macro-F1, clip count and confusion counts, so ``dvc metrics diff`` shows synthetic-to-real transfer from commit to
commit. A set whose local path does not exist (such as the FSDD mirror in ``../shared`` on a machine without it) is
skipped and recorded as skipped, with the path; anything else wrong with a set stops the stage with a message.
A set whose location is null is turned off and left out of the metrics: `dvc exp run -S transfer.sets={}` cannot
empty the mapping (DVC merges an override into the section), but `-S transfer.sets.fsdd=null` turns FSDD off.
"""

from __future__ import annotations

import sys

from spokenwords import params
from spokenwords.audio.shaping import shift_step
from spokenwords.cli import run
from spokenwords.evaluation.corpora import Scoring, missing_local_path, score_set
from spokenwords.fileio import write_json
from spokenwords.models.checkpoint import load_checkpoint
from spokenwords.params import EvaluateParams, TransferParams
from spokenwords.paths import MODEL, TRANSFER_METRICS
from spokenwords.runtime import select_device


def main() -> None:
    config = params.load(TransferParams)
    evaluate = params.load(EvaluateParams)
    device = select_device(config.device)
    model, checkpoint = load_checkpoint(MODEL, device)
    scoring = Scoring(
        device,
        config.batch_size,
        evaluate.test_time_shifts,
        shift_step(evaluate.shift_step_ms, checkpoint["audio"]["sample_rate"]),
    )
    metrics = {}
    for name, location in config.sets.items():
        if location is None:
            continue
        if missing_local_path(location):
            print(f"warning: transfer set '{name}' skipped: {location} does not exist", file=sys.stderr)
            metrics[name] = {"skipped": f"{location} does not exist"}
            continue
        metrics[name] = score_set(name, location, model, checkpoint, scoring)
        if "skipped" in metrics[name]:
            print(f"warning: transfer set '{name}' skipped: {metrics[name]['skipped']}", file=sys.stderr)
        else:
            print(f"transfer {name}: accuracy {metrics[name]['accuracy']:.4f} on {metrics[name]['clips']} clips")
    write_json(TRANSFER_METRICS, metrics)


if __name__ == "__main__":
    run(main)
