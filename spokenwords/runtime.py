"""Where and how tensors run: device choice, mixed precision, compilation, seeding and index batches."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from spokenwords.cli import UserError


def select_device(name: str) -> torch.device:
    """Resolve ``auto`` to cuda, then mps, then cpu; refuse an explicit device this machine lacks."""
    mps_available = torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' was requested but CUDA is not available here; use 'auto' or 'cpu'")
        if (device.index or 0) >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise UserError(f"device '{name}' does not exist: this machine has {count} CUDA device(s)")
    if device.type == "mps" and not mps_available:
        raise UserError(f"device '{name}' was requested but MPS is not available here; use 'auto' or 'cpu'")
    return device


def use_amp(setting: str, device: torch.device) -> bool:
    """``auto`` means mixed precision on CUDA only, where it pays off."""
    if setting == "auto":
        return device.type == "cuda"
    if setting == "on" and device.type != "cuda":
        raise UserError(f"train.amp 'on' needs a CUDA device, but training runs on {device}; use 'auto' or 'off'")
    return setting == "on"


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast: no loss scaling needed, and BatchNorm stays in float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


# `train.compile: auto` compiles only a run of at least this many optimizer steps on CUDA: torch.compile takes
# about a minute, which a run must win back at a few milliseconds saved per step. On a CPU inductor's code was
# slower than eager for M5 (0.62x, after a 50 s compile; `python -m benchmarks.speed` measures both).
COMPILE_MIN_STEPS = 20_000


def use_compile(setting: str, device: torch.device, steps: int) -> bool:
    """``auto``: compile on CUDA when the run is long enough to pay for the compilation; never on a CPU or MPS."""
    if setting == "auto":
        return device.type == "cuda" and steps >= COMPILE_MIN_STEPS
    return setting == "on"


def seed_everything(seed: int) -> None:
    """Seed every generator and ask for deterministic kernels, so equal params give equal metrics."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def worker_count() -> int:
    """Processes for a pool of one-thread workers: OMP_NUM_THREADS where set (queued experiments share the cores that
    way), else every core.
    """
    threads = os.environ.get("OMP_NUM_THREADS", "")
    return int(threads) if threads.isdigit() and int(threads) > 0 else os.cpu_count() or 1


def batches(
    count: int, batch_size: int, generator: torch.Generator | None = None, device: torch.device | None = None
) -> Iterator[torch.Tensor]:
    """Index batches over ``count`` items: shuffled when a generator is given, in order otherwise; on ``device``
    when given, moved there in one transfer rather than one per batch.
    """
    order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    yield from order.to(device).split(batch_size)
