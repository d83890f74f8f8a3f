"""Training-time augmentation on the training device, drawn from one seeded generator so runs repeat exactly.

Waveform augmentations take ``[batch, 1, samples]``; the equaliser takes log mel energies ``[batch, 1, mels, frames]``;
SpecAugment masks take the model's features ``[batch, 1, coefficients, frames]``.
Each draws its randomness per clip from the generator it is given. Only the train stage calls them, on training
batches, so evaluation and prediction never see them; they use only ``move``, with fixed offsets, for test-time shifts.
"""

from __future__ import annotations

import math

import torch

from spokenwords.inference.scoring import move
from spokenwords.params import AugmentParams


def uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)


def content_length(waveform: torch.Tensor) -> torch.Tensor:
    """Samples up to the last non-zero one of each clip: short clips are zero-padded at the end by preprocess."""
    samples = waveform.shape[-1]
    nonzero = waveform.flatten(1) != 0
    last = samples - 1 - nonzero.flip(-1).int().argmax(dim=-1)
    return torch.where(nonzero.any(dim=-1), last + 1, torch.zeros_like(last))


def shift(waveform: torch.Tensor, max_shift: int, place: bool, generator: torch.Generator) -> torch.Tensor:
    """Move each clip by up to ``max_shift`` samples either way; with ``place``, anywhere its padding allows too."""
    batch, samples = waveform.shape[0], waveform.shape[-1]
    room = samples - content_length(waveform) if place else torch.zeros(batch, device=waveform.device)
    offset = (uniform((batch,), 0, 1, generator) * (room + 2 * max_shift + 1)).floor().long() - max_shift
    return move(waveform, offset)


def speed(waveform: torch.Tensor, max_change: float, generator: torch.Generator) -> torch.Tensor:
    """Play each clip up to ``max_change`` (relative) faster or slower, moving pitch and formants with it: the
    cheapest stand-in for a new voice (speed perturbation, Ko et al. 2015). Linear interpolation, on the device.
    """
    batch, samples = waveform.shape[0], waveform.shape[-1]
    rate = uniform((batch, 1), 1 - max_change, 1 + max_change, generator)
    position = torch.arange(samples, device=waveform.device) * rate
    left = position.floor().long().clamp(max=samples - 1)
    right = (left + 1).clamp(max=samples - 1)
    weight = position - position.floor()
    flat = waveform.flatten(1)
    played = (1 - weight) * flat.gather(1, left) + weight * flat.gather(1, right)
    return (played * (position <= samples - 1)).view_as(waveform)


def gain(waveform: torch.Tensor, max_db: float, generator: torch.Generator) -> torch.Tensor:
    """Scale each clip by a random gain of up to ``max_db`` decibels either way."""
    decibels = uniform((waveform.shape[0], 1, 1), -max_db, max_db, generator)
    return waveform * 10 ** (decibels / 20)


def add_noise(
    waveform: torch.Tensor, probability: float, snr_db: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """Add white noise to a random ``probability`` share of the clips, at a random SNR over the clip's content."""
    batch = waveform.shape[0]
    power = waveform.pow(2).flatten(1).sum(dim=1) / content_length(waveform).clamp(min=1)
    snr = uniform((batch,), *snr_db, generator)
    chosen = uniform((batch,), 0, 1, generator) < probability
    scale = torch.where(chosen, (power / 10 ** (snr / 10)).sqrt(), torch.zeros_like(power))
    noise = torch.randn(waveform.shape, generator=generator, device=generator.device, dtype=waveform.dtype)
    return waveform + scale.view(batch, 1, 1) * noise


def equalise(log_mel: torch.Tensor, max_db: float, generator: torch.Generator, terms: int = 3) -> torch.Tensor:
    """Tilt each clip's spectrum by a random smooth gain curve over the mel bands, as if heard through another
    microphone or room: a sum of the first ``terms`` cosines over the band index, each up to ± ``max_db``.

    A linear recording chain (microphone, room) adds roughly such a fixed curve to log energies; each FSDD speaker
    recorded with their own, so a model trained on five of them would otherwise learn five curves.
    """
    batch, bands = log_mel.shape[0], log_mel.shape[-2]
    position = torch.linspace(0, 1, bands, device=log_mel.device)
    cosines = torch.cos(math.pi * torch.arange(1, terms + 1, device=log_mel.device)[:, None] * position)
    nepers = uniform((batch, terms), -max_db, max_db, generator) * math.log(10) / 10  # dB of power -> natural log
    return log_mel + (nepers @ cosines).view(batch, 1, bands, 1)


def mask_along(features: torch.Tensor, dim: int, count: int, share: float, generator: torch.Generator):
    """Zero ``count`` random bands of up to ``share`` of the size along ``dim`` (-2 frequency, -1 time), per clip.

    Zero is the mean of normalised features, so a mask removes information without adding an edge.
    """
    batch, size = features.shape[0], features.shape[dim]
    max_width = round(share * size)
    positions = torch.arange(size, device=features.device)
    keep = torch.ones(batch, size, dtype=torch.bool, device=features.device)
    for _ in range(count):
        width = (uniform((batch, 1), 0, 1, generator) * (max_width + 1)).floor()
        start = (uniform((batch, 1), 0, 1, generator) * (size - width + 1)).floor()
        keep &= (positions < start) | (positions >= start + width)
    shape = [batch, 1, 1, 1]
    shape[dim] = size
    return features * keep.view(shape)


class Augment:
    """The ``augment`` params section as callables, in the order training applies them: ``waveforms`` before the
    model; for spectrogram models ``log_mel`` (the equaliser) inside the front end and ``spectrograms``
    (SpecAugment) between the front end and the body. All draw from one generator seeded by ``train.seed``.
    """

    def __init__(self, config: AugmentParams, sample_rate: int, seed: int, device: torch.device) -> None:
        self.config = config
        self.max_shift = round(config.shift_ms * sample_rate / 1000)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def waveforms(self, waveform: torch.Tensor) -> torch.Tensor:
        config = self.config
        if config.speed:
            waveform = speed(waveform, config.speed, self.generator)
        waveform = shift(waveform, self.max_shift, config.place, self.generator)
        waveform = gain(waveform, config.gain_db, self.generator)
        return add_noise(waveform, config.noise_prob, (config.snr_db_min, config.snr_db_max), self.generator)

    def log_mel(self, log_mel: torch.Tensor) -> torch.Tensor:
        return equalise(log_mel, self.config.eq_db, self.generator) if self.config.eq_db else log_mel

    def spectrograms(self, features: torch.Tensor) -> torch.Tensor:
        config = self.config
        features = mask_along(features, -2, config.freq_masks, config.freq_mask_share, self.generator)
        return mask_along(features, -1, config.time_masks, config.time_mask_share, self.generator)
