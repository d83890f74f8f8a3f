"""The dataset of ``data/raw`` in the normalised layout: a recorded source fetched, or synthetic speech made here."""

from __future__ import annotations

from pathlib import Path

from spokenwords.cli import UserError
from spokenwords.data.sources import SYNTHETIC_TRAIN, Vocabulary, obtain, write_labels, write_speaker_disjoint_lists
from spokenwords.fileio import ensure_space
from spokenwords.params import DataParams

WAV_HEADER_BYTES = 44  # libsndfile's canonical header for 16-bit PCM


def synthesise(out: Path, labels: list[str], n_clips: int, seed: int, piper_clips: int, kokoro_clips: int) -> None:
    """Write espeak-ng, Piper and Kokoro clips of ``labels`` and their ``labels.txt`` into ``out``; imported here, as
    only synthetic clips need the engines.
    """
    from spokenwords.data.synthesis import CLIP_SAMPLES, generate

    # every clip a 1 s, 16-bit WAV: refused now if the disk cannot hold them, not after hours of synthesis
    ensure_space(out, (n_clips + piper_clips + kokoro_clips) * (WAV_HEADER_BYTES + 2 * CLIP_SAMPLES))
    generate(out, n_clips, seed, piper_clips, kokoro_clips, tuple(labels))
    write_labels(out, labels)


def download(config: DataParams, out: Path) -> None:
    """Fill the empty folder ``out`` with the configured dataset, and the extra synthetic training clips if any."""
    vocabulary = Vocabulary.of(config)
    if config.source == "synthetic":
        if config.url:
            raise UserError("params.yaml: data.url must be empty for data.source 'synthetic', which is generated")
        labels = vocabulary.labels(config.words)
        synthesise(out, labels, config.synthetic_clips, config.seed, config.piper_clips, config.kokoro_clips)
        write_speaker_disjoint_lists(out)
        return
    labels = obtain(config.source, config.url, config.sha256, out, vocabulary)
    extra_clips = [config.synthetic_train_clips, config.piper_train_clips, config.kokoro_train_clips]
    if any(extra_clips):
        synthesise(out / SYNTHETIC_TRAIN, labels, extra_clips[0], config.seed, *extra_clips[1:])
