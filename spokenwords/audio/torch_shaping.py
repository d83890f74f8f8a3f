"""Audio decoding and shaping shared by preprocess and predict: soundfile in, fixed-length mono tensors out."""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torchaudio

# Decoding and its limits live in the torch-free clips module; the names are kept here for the stages using them.
from spokenwords.audio.shaping import (
    FRAME_SECONDS,
    MAX_SECONDS,
    SPEECH_RMS,
    BadAudio,
    NoSpeech,
    read_samples,
    source_rate,
)
from spokenwords.audio.shaping import RATE_STEP as RATE_STEP


def read_mono(path: Path, max_seconds: float) -> tuple[torch.Tensor, int]:
    """Decode at most ``max_seconds`` of ``path`` (``shaping.read_samples``), as float32 mono ``[1, frames]``."""
    samples, rate = read_samples(path, max_seconds)
    return torch.from_numpy(samples).unsqueeze(0), rate


@functools.lru_cache(maxsize=4)
def resampler(orig_rate: int, new_rate: int) -> torchaudio.transforms.Resample:
    """One resampling kernel per rate pair, built once and reused for every clip."""
    return torchaudio.transforms.Resample(orig_rate, new_rate)


def locate(waveform: torch.Tensor, length: int, sample_rate: int) -> torch.Tensor:
    """The ``length``-sample window of ``[1, frames]`` centred on the spoken word, zero-padded where it overhangs.

    A recording no longer than the window is kept whole and centred in it (a clip of exactly the window is returned
    as it is). In a longer one, the word is the loudest stretch: the window-long run of 10 ms frames with the most
    energy, and the window is centred on that run's energy centroid. So a word sits in the middle wherever it was
    in the file, and a long recording gives about the clip the word alone would.
    """
    frame = max(1, round(FRAME_SECONDS * sample_rate))
    samples = waveform[0].double()
    count = math.ceil(samples.numel() / frame)
    energy = torch.nn.functional.pad(samples, (0, count * frame - samples.numel())).view(count, frame).square()
    energy = energy.mean(dim=1)
    if energy.max().sqrt() < SPEECH_RMS:
        raise NoSpeech("no speech found (every 10 ms frame is below -60 dBFS)")
    if waveform.shape[-1] <= length:
        before = (length - waveform.shape[-1]) // 2
        return torch.nn.functional.pad(waveform, (before, length - waveform.shape[-1] - before))
    span = max(1, min(count, length // frame))
    running = torch.nn.functional.pad(energy.cumsum(0), (1, 0))
    start = int((running[span:] - running[:-span]).argmax())
    weights = energy[start : start + span]
    centre = (start + (weights * torch.arange(span, dtype=weights.dtype)).sum() / weights.sum() + 0.5) * frame
    first = round(float(centre)) - length // 2
    padded = torch.nn.functional.pad(waveform, (max(0, -first), max(0, first + length - waveform.shape[-1])))
    offset = max(0, first)
    return padded[..., offset : offset + length]


def prepare(path: Path, sample_rate: int, clip_seconds: float) -> torch.Tensor:
    """Decode, mix to mono and resample one file, then cut ``[1, sample_rate * clip_seconds]`` centred on its word.

    Up to ``MAX_SECONDS`` of the recording is searched (``locate``), so a word at 1.3 s in a phone recording is kept.
    """
    waveform, rate = read_mono(path, max(MAX_SECONDS, clip_seconds))
    if source_rate(rate) != sample_rate:
        waveform = resampler(source_rate(rate), sample_rate)(waveform)
    return locate(waveform, round(sample_rate * clip_seconds), sample_rate)


def _worker_init() -> None:
    torch.set_num_threads(1)  # the pool already uses every core


def _prepare_job(job: tuple[Path, int, float]) -> tuple[np.ndarray | None, str]:
    # A NumPy array goes back to the parent pickled in one piece; a tensor would take torch's shared-memory route
    # (a segment and a file descriptor per clip), which is about 20 times slower per clip than the decoding.
    try:
        return prepare(*job).numpy(), ""
    except BadAudio as error:
        return None, str(error)


def prepare_many(
    paths: list[Path], sample_rate: int, clip_seconds: float, workers: int | None = None
) -> Iterator[tuple[torch.Tensor | None, str]]:
    """``prepare`` every file on ``workers`` processes (default: all cores), in order: each a clip and ``""``, or
    ``None`` and why it was skipped.
    """
    jobs = [(path, sample_rate, clip_seconds) for path in paths]
    with multiprocessing.get_context("fork").Pool(workers or os.cpu_count(), initializer=_worker_init) as pool:
        for clip, reason in pool.imap(_prepare_job, jobs, chunksize=16):
            yield (None if clip is None else torch.from_numpy(clip)), reason
