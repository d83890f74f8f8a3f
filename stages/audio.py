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


def read_audio(path: Path, max_seconds: float) -> tuple[torch.Tensor, int]:
    """Decode at most ``max_seconds`` of ``path`` as float32 ``[channels, frames]``.

    Reading only what is kept bounds memory: an hour-long file costs no more than a clip.
    """
    if not path.is_file():
        raise BadAudio("no such file")
    try:
        with soundfile.SoundFile(path) as audio:
            rate = audio.samplerate
            data = audio.read(frames=min(audio.frames, math.ceil(max_seconds * rate)), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, EOFError) as error:
        raise BadAudio(f"not readable audio ({error})") from None
    except OSError as error:
        raise BadAudio(f"cannot read file ({error.strerror or error})") from None
    if rate <= 0:
        raise BadAudio(f"invalid sample rate {rate}")
    if data.shape[0] == 0:
        raise BadAudio("zero-length audio")
    if not np.isfinite(data).all():
        raise BadAudio("NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), rate


@functools.lru_cache(maxsize=16)
def resampler(orig_rate: int, new_rate: int) -> torchaudio.transforms.Resample:
    """One resampling kernel per rate pair, built once and reused for every clip."""
    return torchaudio.transforms.Resample(orig_rate, new_rate)


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """Average the channels of ``[channels, frames]`` into ``[1, frames]``."""
    return waveform.mean(dim=0, keepdim=True)


def fit_length(waveform: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad at the end or trim ``[..., frames]`` to exactly ``length`` frames."""
    frames = waveform.shape[-1]
    if frames >= length:
        return waveform[..., :length]
    return torch.nn.functional.pad(waveform, (0, length - frames))


def prepare(path: Path, sample_rate: int, clip_seconds: float) -> torch.Tensor:
    """Decode, mix to mono, resample and pad or trim one file to ``[1, sample_rate * clip_seconds]``."""
    waveform, rate = read_audio(path, clip_seconds)
    waveform = to_mono(waveform)
    if rate != sample_rate:
        waveform = resampler(rate, sample_rate)(waveform)
    return fit_length(waveform, round(sample_rate * clip_seconds))
