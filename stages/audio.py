"""Audio decoding and shaping shared by preprocess and predict: soundfile in, fixed-length mono tensors out."""

from __future__ import annotations

import functools
import math
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


def fit_length(waveform: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad at the end or trim ``[..., frames]`` to exactly ``length`` frames."""
    frames = waveform.shape[-1]
    if frames >= length:
        return waveform[..., :length]
    return torch.nn.functional.pad(waveform, (0, length - frames))


def prepare(path: Path, sample_rate: int, clip_seconds: float) -> torch.Tensor:
    """Decode, mix to mono, resample and pad or trim one file to ``[1, sample_rate * clip_seconds]``."""
    waveform, rate = read_mono(path, clip_seconds)
    source_rate = round(rate / RATE_STEP) * RATE_STEP
    if source_rate != sample_rate:
        waveform = resampler(source_rate, sample_rate)(waveform)
    return fit_length(waveform, round(sample_rate * clip_seconds))
