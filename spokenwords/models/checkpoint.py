"""The self-contained checkpoint: weights with the model's config, labels and audio settings, in a versioned format
that ``torch.load(weights_only=True)`` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from spokenwords.cli import UserError
from spokenwords.fileio import write_torch
from spokenwords.models.architectures import MODELS, build_model

# The layout of a checkpoint (``save_checkpoint``): 1, the first, had the keys below and no ``format``; 2 adds it. Raise
# it when a change would make an older checkpoint load wrongly or not at all, so that it is refused in one line.
CHECKPOINT_FORMAT = 2
CHECKPOINT_KEYS = ("state_dict", "model", "label_names", "audio")


def save_checkpoint(path: Path, model: nn.Module, model_config: dict, label_names: list[str], audio: dict) -> None:
    """Save weights and the metadata ``predict`` needs, atomically, stamped with the layout's ``CHECKPOINT_FORMAT``."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "model": dict(model_config),
        "label_names": list(label_names),
        "audio": dict(audio),
    }
    write_torch(path, checkpoint)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint safely (``weights_only=True``) and return the model in eval mode and its metadata.

    A checkpoint of another layout (an older version of the project, a newer one, another program's) is refused in
    one line that says what differs, before its weights could be read into the wrong places.
    """
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} is missing: run `dvc repro train` first") from None
    except Exception as error:
        raise UserError(
            f"{path} is not a safe model checkpoint ({type(error).__name__}); refusing to load it"
        ) from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path} is not a checkpoint written by the train stage")
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise UserError(
            f"{path} is not a checkpoint written by the train stage: it lacks {', '.join(missing)}; "
            "run `dvc repro train` to write one"
        )
    found = checkpoint.get("format", 1)  # the first layout had no format
    if found != CHECKPOINT_FORMAT:
        older = isinstance(found, int) and found < CHECKPOINT_FORMAT
        raise UserError(
            f"{path} has checkpoint format {found!r}, written by {'an older' if older else 'another'} version of this "
            f"project (this one reads format {CHECKPOINT_FORMAT}): run `dvc repro train` to retrain it"
        )
    config = checkpoint["model"]
    name = config.get("name") if isinstance(config, dict) else None
    if name not in MODELS:
        raise UserError(f"{path} holds model {name!r}, which this version does not know: run `dvc repro train`")
    try:
        model = build_model(config, len(checkpoint["label_names"]))
    except (KeyError, TypeError) as error:
        raise UserError(
            f"{path} holds model '{name}' with settings this version does not take ({error}): run `dvc repro train`"
        ) from None
    problem = weights_problem(model.state_dict(), checkpoint["state_dict"])
    if problem:
        raise UserError(f"{path} does not fit this version's {name} model: {problem}; run `dvc repro train`")
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint


def weights_problem(ours: dict[str, torch.Tensor], theirs: Any) -> str | None:
    """How a checkpoint's weights ``theirs`` differ from a built model's ``ours`` (names, then shapes), or None."""
    if not isinstance(theirs, dict) or not all(isinstance(tensor, torch.Tensor) for tensor in theirs.values()):
        return "its state_dict is not a mapping of names to tensors"
    missing, unknown = [name for name in ours if name not in theirs], [name for name in theirs if name not in ours]
    if missing or unknown:
        return "; ".join(
            f"{what} {', '.join(names[:3])}{', …' if len(names) > 3 else ''}"
            for what, names in (("it lacks", missing), ("it has unknown", unknown))
            if names
        )
    for name, tensor in ours.items():
        if tensor.shape != theirs[name].shape:
            return f"{name} is {list(theirs[name].shape)} where this version's is {list(tensor.shape)}"
    return None
