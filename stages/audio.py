"""Audio decoding and shaping shared by preprocess and predict: soundfile in, fixed-length mono tensors out."""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio


class BadAudio(Exception):
    """A file that cannot become a clip; ``str(error)`` is the reason, counted in the preprocess report."""


MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
# torchaudio's polyphase kernel has (target / gcd) x (source / gcd) taps: an odd rate such as 44101 Hz
# would need gigabytes. Source rates are therefore rounded to a multiple of 25 Hz (every common rate is one),
# which shifts pitch by under 0.13 % above 10 kHz and bounds the kernel (at most 20 MB for an 8 kHz target).
RATE_STEP = 25
MAX_CHANNELS = 64
BLOCK_FRAMES = 65_536
# The word is looked for in at most this much of a recording: memory stays bounded by it, not by the file.
MAX_SECONDS = 60.0
FRAME_SECONDS = 0.01
# A recording whose loudest 10 ms frame has an RMS below this (-60 dBFS) holds no speech: it is silence or hum.
SPEECH_RMS = 1e-3


def read_mono(path: Path, max_seconds: float) -> tuple[torch.Tensor, int]:
    """Decode at most ``max_seconds`` of ``path``, mixed down to float32 mono ``[1, frames]``.

    Reading only what is kept, block by block, bounds memory by the clip: an hour-long file or a header
    that claims millions of channels costs no more than a one-second clip.
    """
    if not path.is_file():
        raise BadAudio("no such file")
    try:
        with soundfile.SoundFile(path) as audio:
            rate, channels = audio.samplerate, audio.channels
            if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
                raise BadAudio(f"unsupported sample rate {rate} Hz (not {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE})")
            if not 0 < channels <= MAX_CHANNELS:
                raise BadAudio(f"unsupported channel count {channels}")
            frames = min(audio.frames, math.ceil(max_seconds * rate))
            blocks = audio.blocks(BLOCK_FRAMES, frames=frames, dtype="float32", always_2d=True)
            mono = [block.mean(axis=1) for block in blocks]
    except (soundfile.LibsndfileError, RuntimeError, ValueError, EOFError) as error:
        raise BadAudio(f"not readable audio ({error})") from None
    except OSError as error:
        raise BadAudio(f"cannot read file ({error.strerror or error})") from None
    samples = np.concatenate(mono) if mono else np.zeros(0, dtype=np.float32)
    if samples.size == 0:
        raise BadAudio("zero-length audio")
    if not np.isfinite(samples).all():
        raise BadAudio("NaN or infinite samples")
    return torch.from_numpy(samples).unsqueeze(0), rate


@functools.lru_cache(maxsize=4)
def resampler(orig_rate: int, new_rate: int) -> torchaudio.transforms.Resample:
    """One resampling kernel per rate pair, built once and reused for every clip."""
    return torchaudio.transforms.Resample(orig_rate, new_rate)


class NoSpeech(BadAudio):
    """A readable recording with nothing loud enough to be a word in it."""


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
    source_rate = round(rate / RATE_STEP) * RATE_STEP
    if source_rate != sample_rate:
        waveform = resampler(source_rate, sample_rate)(waveform)
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
