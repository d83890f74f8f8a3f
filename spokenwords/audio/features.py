"""Spectrogram front ends computed inside the model, on the model's device, from ``[batch, 1, samples]`` waveforms.

Keeping them in the model keeps checkpoints self-contained: ``predict`` and ``evaluate`` feed waveforms as before.
Both return ``[batch, 1, coefficients, frames]``, in two steps so training can augment in between:
``log_energies`` (log mel energies, ``[batch, 1, mels, frames]``), then ``features`` (the model's input).
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import nn

EPSILON = 1e-5


class ClipNorm(nn.Module):
    """Standardise each clip's features, so loudness and microphone gain do not shift the inputs.

    ``clip``: one mean and deviation per clip; ``band``: one per coefficient over time (cepstral mean and
    variance normalisation), which also removes a speaker's or channel's fixed spectral tilt; ``none``: off.
    """

    def __init__(self, mode: str = "clip") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return features
        dims = (-2, -1) if self.mode == "clip" else (-1,)
        mean = features.mean(dim=dims, keepdim=True)
        std = features.std(dim=dims, keepdim=True)
        return (features - mean) / (std + EPSILON)


class LogMel(nn.Module):
    """Log mel energies. ``log_offset`` bounds the log of digital silence (the zero padding of short clips);
    ``floor_db`` > 0 also lifts everything quieter than the clip's loudest energy minus ``floor_db`` to that
    floor (``top_db`` in torchaudio's AmplitudeToDB), so padding and each recording's own background noise look
    alike for every speaker and microphone.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        win_length: int,
        hop_length: int,
        n_mels: int,
        log_offset: float = 1e-6,
        floor_db: float = 0.0,
        normalise: str = "clip",
    ) -> None:
        super().__init__()
        self.floor = floor_db * math.log(10) / 10
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels
        )
        self.log_offset = log_offset
        self.norm = ClipNorm(normalise)

    def log_energies(self, waveform: torch.Tensor) -> torch.Tensor:
        with torch.autocast(waveform.device.type, enabled=False):  # the STFT and the log need float32
            log_mel = (self.mel(waveform.float()) + self.log_offset).log()
            if self.floor:
                log_mel = torch.maximum(log_mel, log_mel.amax(dim=(-2, -1), keepdim=True) - self.floor)
            return log_mel

    def features(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.norm(log_mel)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.features(self.log_energies(waveform))


class MFCC(nn.Module):
    """The first ``n_mfcc`` cepstral coefficients (DCT-II) of the log mel energies."""

    def __init__(self, n_mfcc: int, n_mels: int, normalise: str = "clip", **log_mel: object) -> None:
        super().__init__()
        self.log_mel = LogMel(n_mels=n_mels, normalise="none", **log_mel)
        self.register_buffer("dct", torchaudio.functional.create_dct(n_mfcc, n_mels, norm="ortho"), persistent=False)
        self.norm = ClipNorm(normalise)

    def log_energies(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.log_mel.log_energies(waveform)

    def features(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.matmul(log_mel.transpose(-2, -1), self.dct).transpose(-2, -1))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.features(self.log_energies(waveform))
