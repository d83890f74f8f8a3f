"""Stage `preprocess`: decode every raw clip once into cached, fixed-length (padded) waveforms per split.

Each split is ``<split>.npy``, its waveforms float32 ``[N, 1, samples]``, and ``<split>.pt``: ``labels`` int64
``[N]``, ``speakers`` and ``paths``, plus the ``label_names`` (``data/raw/labels.txt``) and the ``sample_rate``
(``processed_splits.load_split`` reads both). Clips are written to their split's file as the decoding workers deliver
them, so memory does not grow with the dataset: a split never sits whole in memory, and a skipped file simply writes no
row. Bad files are skipped and counted in ``report.json``. Clips under ``data/raw/synthetic_train`` all go to the
training split, after the split rule has shared out the source's own clips, so they never change which speaker a
LOSO fold tests.
"""

from __future__ import annotations

import sys

from spokenwords import params
from spokenwords.cli import run
from spokenwords.data.preparation import preprocess
from spokenwords.fileio import atomic_dir, write_json
from spokenwords.params import DataParams, PreprocessParams
from spokenwords.paths import PROCESSED


def main() -> None:
    config = params.load(PreprocessParams)
    data = params.load(DataParams)
    with atomic_dir(PROCESSED) as out:
        report = preprocess(config, out, data.split, data.fold)
        write_json(out / "report.json", report)
    summary = ", ".join(f"{split} {count['clips']}" for split, count in report["splits"].items())
    print(f"{PROCESSED}: {summary} clips; {report['skipped_files']} files skipped", file=sys.stderr)


if __name__ == "__main__":
    run(main)
