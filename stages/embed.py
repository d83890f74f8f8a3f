"""Stage `embed`: the frozen speech embedding of every clip, computed once, for models that train on it.

The embedding is frozen, so it is the same in every epoch and every `dvc exp run` of the head: caching it here is
what makes a change of ``train.lr`` cost seconds. Training clips also get ``embed.copies`` augmented copies each,
made on the waveform before embedding (the embedding cannot be augmented after it): a speed warp (pitch and formants,
as another vocal tract), room reverberation, background noise, a band limit (telephone, 8 kHz recordings) and a level
change, the channels real recordings come through. Each copy draws from ``(embed.seed, clip, copy)``, so the output
is the same on every run.

For a model that takes only waveforms (``m5``, ``dscnn``, ``bcresnet``) there is nothing to embed: the stage writes only
``info.json`` saying so, and costs nothing.
"""

from __future__ import annotations

import sys

from spokenwords import params
from spokenwords.cli import run
from spokenwords.data.embedded_splits import EMBEDDED_MODELS, embed_split, embedded_bytes
from spokenwords.fileio import atomic_dir, ensure_space, write_json, write_torch
from spokenwords.params import EmbedParams, ModelParams
from spokenwords.paths import EMBEDDED, SPLIT_NAMES, split_file


def main() -> None:
    config = params.load(EmbedParams)
    model = params.load(ModelParams).name
    with atomic_dir(EMBEDDED) as out:
        if model not in EMBEDDED_MODELS:
            write_json(out / "info.json", {"model": model, "embedded": False})
            print(f"{EMBEDDED}: nothing to embed for model '{model}', which takes waveforms", file=sys.stderr)
            return
        # refused now, not after embedding for hours until the disk is full
        ensure_space(out, sum(embedded_bytes(split, config) for split in SPLIT_NAMES))
        counts = {}
        for split in SPLIT_NAMES:
            result = embed_split(split, config)
            write_torch(split_file(split, out), result)
            counts[split] = {"clips": result["clips"], "embedded": len(result["labels"])}
        windows = result["embeddings"].shape[1]
        write_json(out / "info.json", {"model": model, "embedded": True, "windows_per_clip": windows, "splits": counts})
    summary = ", ".join(f"{split} {count['embedded']}" for split, count in counts.items())
    print(f"{EMBEDDED}: {summary} embedded clips ({config.copies} copies of each training clip)", file=sys.stderr)


if __name__ == "__main__":
    run(main)
