"""Count multiply-accumulates of one forward pass with forward hooks on the layers that do the arithmetic.

Convolutions and linear layers are counted exactly (output elements x inputs per output), plus the mel filter
bank and the DCT of the spectrogram front ends. The FFT, BatchNorm, activations and pooling are left out:
together they are a few percent for these models.
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import nn

from spokenwords.audio.features import MFCC


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    per_example = output[0].numel()
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        return per_example * module.in_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return per_example * module.in_features
    if isinstance(module, torchaudio.transforms.MelScale):
        return per_example * module.fb.shape[0]
    if isinstance(module, MFCC):
        return per_example * module.dct.shape[0]
    return 0


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of ``model`` per example of the batch ``example``."""
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += layer_macs(module, output)

    handles = [module.register_forward_hook(hook) for module in model.modules()]
    try:
        model(example)
    finally:
        for handle in handles:
            handle.remove()
    return total // len(example)
