"""Augmented copies of a clip, made on the waveform before the frozen embedding (which cannot be augmented after it):
a speed warp, room reverberation, noise, a band limit and a level change, the channels real recordings come through.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torchaudio

from spokenwords.audio.torch_shaping import locate
from spokenwords.params import EmbedParams

RATE_STEP = 100  # speed warps are quantised to 100 Hz steps of the source rate, so resampling kernels are reused
BAND_STEP = 500  # band limits are quantised to 500 Hz steps of the narrow rate, for the same reason
SPEECH_PEAK_DBFS = (-30.0, -1.0)


@functools.lru_cache(maxsize=128)
def warp_resampler(source_rate: int, sample_rate: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(source_rate, sample_rate)


def room_response(rng: np.random.Generator, sample_rate: int, rt60_max: float) -> torch.Tensor:
    """A noise-like room impulse response: a direct path, then exponentially decaying diffuse reflections."""
    rt60 = rng.uniform(0.1, rt60_max)
    length = int(rt60 * sample_rate)
    decay = np.exp(-6.9 * np.arange(length) / (rt60 * sample_rate))  # -60 dB at rt60
    response = rng.standard_normal(length) * decay
    response[0] = 1 / rng.uniform(0.2, 1.0)  # direct-to-reverberant ratio
    return torch.from_numpy(response / np.sqrt((response**2).sum())).float()


def convolve(waveform: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """Linear convolution by FFT, keeping the tail: ``[1, n]`` and ``[m]`` to ``[1, n + m - 1]``."""
    size = waveform.shape[-1] + response.numel() - 1
    return torch.fft.irfft(torch.fft.rfft(waveform, size) * torch.fft.rfft(response, size), size)


def band_limit(waveform: torch.Tensor, sample_rate: int, cutoff_hz: float) -> torch.Tensor:
    """``waveform`` without its content above about ``cutoff_hz``, as a telephone or an 8 kHz recording has it:
    resampled down to twice the cutoff and back, through torchaudio's band-limited sinc kernels.
    """
    narrow = round(2 * cutoff_hz / BAND_STEP) * BAND_STEP
    restored = warp_resampler(narrow, sample_rate)(warp_resampler(sample_rate, narrow)(waveform))
    samples = waveform.shape[-1]
    return torch.nn.functional.pad(restored[..., :samples], (0, max(0, samples - restored.shape[-1])))


def channel_copy(
    waveform: torch.Tensor, sample_rate: int, config: EmbedParams, rng: np.random.Generator
) -> torch.Tensor:
    """One augmented copy of a ``[1, samples]`` clip: warp, room, re-centred window, noise, band limit, level."""
    samples = waveform.shape[-1]
    if config.speed > 0:
        warp = rng.uniform(1 - config.speed, 1 + config.speed)
        source_rate = round(sample_rate * warp / RATE_STEP) * RATE_STEP
        waveform = warp_resampler(source_rate, sample_rate)(waveform)
    if rng.random() < config.reverb_prob:
        waveform = convolve(waveform, room_response(rng, sample_rate, config.rt60_max))
    waveform = locate(waveform, samples, sample_rate)
    if rng.random() < config.noise_prob:
        noise = torch.from_numpy(rng.standard_normal(samples)).float()
        if rng.random() < 0.5:  # brown noise (hum, traffic, wind) instead of white (hiss)
            noise = noise.cumsum(0)
            noise = noise - noise.mean()
        snr_db = rng.uniform(config.snr_db_min, config.snr_db_max)
        noise *= waveform.square().mean().sqrt() / (noise.square().mean().sqrt() * 10 ** (snr_db / 20) + 1e-12)
        waveform = waveform + noise
    # drawn only when on, so that band_limit_prob 0 leaves every other draw, and so every copy, as it was
    if config.band_limit_prob > 0 and rng.random() < config.band_limit_prob:
        waveform = band_limit(waveform, sample_rate, rng.uniform(config.band_limit_hz_min, config.band_limit_hz_max))
    peak = 10 ** (rng.uniform(*SPEECH_PEAK_DBFS) / 20)
    return waveform * peak / waveform.abs().max().clamp_min(1e-8)
