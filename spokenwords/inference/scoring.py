"""Inference on trained models: batched logits, and test-time shifts (the average over moved copies of a clip).

Evaluate, transfer, predict and train's validation share these, so a clip is scored the same way everywhere.
"""

from __future__ import annotations

import torch
from torch import nn

from spokenwords.audio.shaping import shift_step as shift_step  # shared with the torch-free ONNX predictor
from spokenwords.runtime import autocast, batches


def move(waveform: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Move each clip ``offset[i]`` samples later (earlier when negative).

    Samples moved out of the window are lost; the window's uncovered part becomes silence.
    """
    samples = waveform.shape[-1]
    source = torch.arange(samples, device=waveform.device) - offset[:, None]
    inside = (source >= 0) & (source < samples)
    moved = waveform.flatten(1).gather(1, source.clamp(0, samples - 1))
    return (moved * inside).view_as(waveform)


@torch.no_grad()
def batched_logits(
    model: nn.Module, waveforms: torch.Tensor, batch_size: int, amp: bool = False, shift: int = 0
) -> torch.Tensor:
    """Logits for every waveform, in eval mode, as float32 on the waveforms' device; with ``shift``, of each
    waveform moved that many samples (``move``). A batch at a time is indexed and moved, so memory holds one batch,
    never a copy of every clip (the waveforms may be a memory-mapped split).
    """
    model.eval()
    device = waveforms.device
    logits = []
    with autocast(device, amp):
        for index in batches(len(waveforms), batch_size, None, device):
            batch = waveforms[index]
            if shift:
                batch = move(batch, torch.full((len(batch),), shift, device=device))
            logits.append(model(batch).float())
    return torch.cat(logits)


@torch.no_grad()
def shifted_probabilities(
    model: nn.Module, waveforms: torch.Tensor, batch_size: int, shifts: int, step: int
) -> torch.Tensor:
    """Class probabilities ``[2 * shifts + 1, clips, classes]`` of copies of each clip moved by -shifts … shifts
    times ``step`` samples. Their mean is test-time augmentation, so a prediction depends less on where the word sits
    in the window; the centre copy (index ``shifts``) is the plain pass.
    """
    return torch.stack(
        [
            batched_logits(model, waveforms, batch_size, shift=k * step).softmax(dim=-1)
            for k in range(-shifts, shifts + 1)
        ]
    )
