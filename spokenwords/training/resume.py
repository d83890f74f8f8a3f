"""Resumable training state: saved at every epoch end and on SIGTERM, so a preempted run continues where it stopped.

A cluster's scheduler stops a job with SIGTERM, then SIGKILL. The train stage saves the model, optimizer, schedule,
random generator states, history and epoch (and, on SIGTERM, the batches done in the current epoch) atomically, and
a rerun with the same params and data continues from there to the same final model as an uninterrupted run. The
state is stamped with those params and a digest of the training data: a state from other params or data is
refused, never mixed in. It is not a DVC output (DVC deletes outputs before a stage runs); the stage removes it
once the run's outputs are written.
"""

from __future__ import annotations

import hashlib
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from spokenwords.cli import UserError
from spokenwords.fileio import write_torch


class Preempted(Exception):
    """Raised between two training steps once SIGTERM arrived; carries the epoch's progress so far."""

    def __init__(self, epoch: int, step: int, losses: list[float], correct: int) -> None:
        super().__init__(f"stopped in epoch {epoch} after batch {step}")
        self.epoch, self.step, self.losses, self.correct = epoch, step, losses, correct


class TermSignal:
    """Turns SIGTERM into a flag the training loop reads between steps, so a step is never cut in half."""

    def __init__(self) -> None:
        self.received = False
        signal.signal(signal.SIGTERM, self.receive)

    def receive(self, number: int, frame: Any) -> None:
        self.received = True


def digest(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' bytes: the identity of the data a state was trained on."""
    hasher = hashlib.sha256()
    for tensor in tensors:
        hasher.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        hasher.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return hasher.hexdigest()


# The layout of a saved state: raise it when the train stage saves or reads its state otherwise, so that a state
# of another version is refused (and replaced) rather than misread.
STATE_FORMAT = 2


def stamp(settings: dict[str, Any], data: str) -> dict[str, Any]:
    """What a state must match to be resumed: this layout, the settings that shape training (the data's labels and
    sample rate among them), and the data's digest.
    """
    return {"format": STATE_FORMAT, "settings": settings, "data": data}


def differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """The settings that differ between two stamps, as ``key saved -> now`` items."""
    found = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += differences(old, new, f"{prefix}{key}.")
        elif old != new:
            found.append(f"{prefix}{key} {old!r} -> {new!r}")
    return found


def load_state(path: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state at ``path`` if it matches ``expected``; None when there is none, or (saying why) when it
    belongs to another run, which this one then replaces.
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state["stamp"]
        settings, data = saved["settings"], saved["data"]
    except Exception as error:
        raise UserError(
            f"{path} is not a readable training state ({type(error).__name__}); delete it to start afresh"
        ) from None
    if saved == expected:
        return state
    found = saved.get("format", 1)  # the first layout had no format
    if found != STATE_FORMAT:
        reasons = [f"state format {found!r}, of another version of this project -> {STATE_FORMAT}"]
    else:
        reasons = differences(settings, expected["settings"])
        if data != expected["data"]:
            reasons.append("the training data changed")
    why = "; ".join(reasons[:4]) + ("; …" if len(reasons) > 4 else "")
    print(
        f"warning: not resuming from {path}: it was saved by a run with other settings or data ({why}); "
        "training starts afresh",
        file=sys.stderr,
    )
    return None


def save_state(path: Path, state: dict[str, Any]) -> None:
    write_torch(path, state)


def random_states(device: torch.device) -> dict[str, torch.Tensor]:
    """The global generators a training step draws from (dropout): the CPU's, and the CUDA device's when used."""
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_random_states(states: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)
