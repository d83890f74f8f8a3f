"""Stage `download`: bring the chosen dataset into ``data/raw`` in the normalised layout.

``data.source`` picks the dataset; ``data.url`` may point at a mirror (URL, local archive or folder).
The folder is built beside ``data/raw`` and renamed into place only when complete.
"""

from __future__ import annotations

import sys

from spokenwords import params
from spokenwords.cli import run
from spokenwords.data.raw import download
from spokenwords.data.sources import clip_paths, read_list, synthetic_train_paths
from spokenwords.fileio import atomic_dir
from spokenwords.params import DataParams
from spokenwords.paths import RAW


def main() -> None:
    config = params.load(DataParams)
    with atomic_dir(RAW) as out:
        download(config, out)
    paths = clip_paths(RAW)
    held_out = {split: len(read_list(RAW, split)) for split in ("validation", "test")}
    extra = len(synthetic_train_paths(RAW))
    print(
        f"{RAW}: {len(paths)} clips from '{config.source}' "
        f"({held_out['validation']} validation, {held_out['test']} test)"
        f"{f', plus {extra} synthetic training clips' if extra else ''}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run(main)
