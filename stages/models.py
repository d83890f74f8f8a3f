"""Model architectures, their registry, and the self-contained checkpoint format.

A checkpoint holds the ``state_dict`` plus everything needed to predict without ``params.yaml``:
the model config, the label names and the preprocessing settings. It loads with ``weights_only=True``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stages.cli import UserError
from stages.fileio import atomic_path


class M5(nn.Module):
    """The notebook's raw-waveform CNN (Dai et al. 2017): four Conv1d-BatchNorm-ReLU-MaxPool(4) blocks.

    The first convolution (kernel 80, stride 16) acts as a learned filter bank over the raw samples.
    """

    def __init__(self, n_output: int = 10, n_channel: int = 32, stride: int = 16, n_input: int = 1) -> None:
        super().__init__()
        widths = [n_input, n_channel, n_channel, 2 * n_channel, 2 * n_channel]
        blocks = []
        for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
            conv = (
                nn.Conv1d(width_in, width_out, kernel_size=80, stride=stride)
                if index == 0
                else (nn.Conv1d(width_in, width_out, kernel_size=3))
            )
            blocks += [conv, nn.BatchNorm1d(width_out), nn.ReLU(), nn.MaxPool1d(4)]
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(widths[-1], n_output)

    @property
    def first_layer(self) -> nn.Conv1d:
        """The learned filter bank, for plotting its kernels."""
        return self.features[0]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, 1, samples]`` waveforms to ``[batch, n_output]`` logits."""
        return self.classifier(self.features(waveform).mean(dim=-1))


MODELS: dict[str, type[nn.Module]] = {"m5": M5}


def build_model(config: dict[str, Any], n_output: int) -> nn.Module:
    """Build the architecture ``config['name']`` with the rest of ``config`` as its arguments."""
    options = {key: value for key, value in config.items() if key != "name"}
    return MODELS[config["name"]](n_output=n_output, **options)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def save_checkpoint(path: Path, model: nn.Module, model_config: dict, label_names: list[str], audio: dict) -> None:
    """Save weights and the metadata ``predict`` needs, atomically."""
    checkpoint = {
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "model": dict(model_config),
        "label_names": list(label_names),
        "audio": dict(audio),
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint safely (``weights_only=True``) and return the model in eval mode and its metadata."""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} is missing: run `dvc repro train` first") from None
    except Exception as error:
        raise UserError(
            f"{path} is not a safe model checkpoint ({type(error).__name__}); refusing to load it"
        ) from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "model", "label_names", "audio"} <= checkpoint.keys():
        raise UserError(f"{path} is not a checkpoint written by the train stage")
    model = build_model(checkpoint["model"], len(checkpoint["label_names"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint
