"""Stage `download`: bring the chosen dataset into ``data/raw`` in the normalised layout.

``data.source`` picks the dataset; ``data.url`` may point at a mirror (URL, local archive or folder).
The folder is built beside ``data/raw`` and renamed into place only when complete.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from stages import params
from stages.archives import extract
from stages.cli import UserError, run
from stages.datasets import SOURCES, SYNTHETIC_TRAIN, clip_paths, read_list, write_speaker_disjoint_lists
from stages.fetch import fetch
from stages.fileio import atomic_dir

RAW = Path("data/raw")


def synthesise(out: Path, n_clips: int, seed: int) -> None:
    """Write espeak-ng clips into ``out``; imported here, as only synthetic clips need espeak and torchaudio."""
    from stages.synth import generate

    generate(out, n_clips, seed)


def download(config: dict, out: Path) -> None:
    """Fill the empty folder ``out`` with the configured dataset, and the extra synthetic training clips if any."""
    if config["source"] == "synthetic":
        if config["url"]:
            raise UserError("params.yaml: data.url must be empty for data.source 'synthetic', which is generated")
        synthesise(out, config["synthetic_clips"], config["seed"])
        write_speaker_disjoint_lists(out)
        return
    source = SOURCES[config["source"]]
    location = config["url"] or source.url
    with tempfile.TemporaryDirectory(prefix=".download-", dir=out.parent) as work:
        known_digest = "" if config["url"] else source.sha256  # a mirror need not be byte-identical
        local = fetch(location, Path(work), config["sha256"] or known_digest)
        if not local.is_dir():
            extracted = Path(work) / "extracted"
            extracted.mkdir()
            extract(local, extracted)
            local = extracted
        source.normalise(local, out)
    if config["synthetic_train_clips"]:
        synthesise(out / SYNTHETIC_TRAIN, config["synthetic_train_clips"], config["seed"])


def main() -> None:
    config = params.load("data")
    with atomic_dir(RAW) as out:
        download(config, out)
    paths = clip_paths(RAW)
    held_out = {split: len(read_list(RAW, split)) for split in ("validation", "test")}
    extra = len(clip_paths(RAW / SYNTHETIC_TRAIN))
    print(
        f"{RAW}: {len(paths)} clips from '{config['source']}' "
        f"({held_out['validation']} validation, {held_out['test']} test)"
        f"{f', plus {extra} synthetic training clips' if extra else ''}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run(main)
